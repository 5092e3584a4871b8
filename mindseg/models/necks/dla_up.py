"""DLA-Up / IDA-Up (CenterNet's ``DLASeg`` neck): DLA levels 2-5 merged into one stride-4 map.

Iterative deep aggregation (IDA-Up) walks a list of maps from fine to coarse: each coarser map is
projected to the output width (3x3 conv-norm-ReLU), upsampled by a depthwise transposed conv
(kernel 2f, stride f, bilinear init, trainable) to the previous map's stride, added to it and
merged by a 3x3 node. DLA-Up applies IDA-Up from the coarsest pair down to stride 4, then one
last IDA-Up merges its stride 4, 8 and 16 outputs into the result.

CenterNet uses deformable 3x3 convs (DCNv2) for the projections and nodes; ``deform=False``
(the default) uses plain 3x3 convs; ``deform=True`` uses
``ops.deformable_conv2d``, which runs forward and backward on the CPU (tests/test_dla.py).
"""
import math

import numpy as np

import mindspore as ms
from mindspore import nn, ops
import mindspore.common.initializer as init


class DeformConv(nn.Cell):
    """Modulated deformable 3x3 conv (DCNv2): a zero-initialised 3x3 conv predicts the 18 offsets
    and 9 mask logits, so it starts as the plain conv scaled by sigmoid(0) = 0.5."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.offset = nn.Conv2d(in_channels, 27, 3, pad_mode="pad", padding=1, has_bias=True,
                                weight_init="zeros", bias_init="zeros")
        self.weight = ms.Parameter(init.initializer(init.HeNormal(), (out_channels, in_channels, 3, 3)),
                                   name="weight")
        self.bias = ms.Parameter(init.initializer("zeros", (out_channels,)), name="bias")

    def construct(self, x):
        raw = self.offset(x)
        offsets = ops.cat([raw[:, :18], ops.sigmoid(raw[:, 18:])], axis=1)
        return ops.deformable_conv2d(x, self.weight, offsets, (3, 3), (1, 1, 1, 1), (1, 1, 1, 1), bias=self.bias)


def conv3x3_block(in_channels, out_channels, norm, deform):
    """(deformable) 3x3 conv -> norm -> ReLU."""
    conv = DeformConv(in_channels, out_channels) if deform else nn.Conv2d(
        in_channels, out_channels, 3, pad_mode="pad", padding=1, has_bias=True)
    return nn.SequentialCell([conv, norm(out_channels), nn.ReLU()])


def bilinear_up_weights(channels, factor):
    """(channels, 1, 2f, 2f) bilinear upsampling kernels (CenterNet's ``fill_up_weights``)."""
    size = 2 * factor
    half = math.ceil(size / 2)
    centre = (2 * half - 1 - half % 2) / (2.0 * half)
    ramp = 1 - np.abs(np.arange(size) / half - centre)
    kernel = np.outer(ramp, ramp).astype(np.float32)
    return np.broadcast_to(kernel, (channels, 1, size, size)).copy()


class IDAUp(nn.Cell):
    """Merges maps i = 1..n-1 of ``in_channels`` (each ``factors[i]`` times coarser than map i - 1
    after the previous merge) into map 0's stride, at ``out_channels``. ``construct(layers)``
    returns the merged maps (n - 1 of them, the last the fully merged one)."""

    def __init__(self, out_channels, in_channels, factors, norm=nn.BatchNorm2d, deform=False):
        super().__init__()
        projects, ups, nodes = [], [], []
        for channels, factor in zip(in_channels[1:], factors[1:]):
            factor = int(factor)
            projects.append(conv3x3_block(channels, out_channels, norm, deform))
            up = nn.Conv2dTranspose(out_channels, out_channels, 2 * factor, stride=factor, pad_mode="pad",
                                    padding=factor // 2, group=out_channels, has_bias=False)
            up.weight.set_data(ms.Tensor(bilinear_up_weights(out_channels, factor)))
            ups.append(up)
            nodes.append(conv3x3_block(out_channels, out_channels, norm, deform))
        self.projects = nn.CellList(projects)
        self.ups = nn.CellList(ups)
        self.nodes = nn.CellList(nodes)

    def construct(self, layers):
        previous = layers[0]
        merged = ()
        for i in range(len(self.nodes)):
            previous = self.nodes[i](self.ups[i](self.projects[i](layers[i + 1])) + previous)
            merged = merged + (previous,)
        return merged


class DLAUp(nn.Cell):
    """DLA levels (strides 4, 8, 16, 32 with ``channels``) -> one stride-4 map of channels[0]."""

    def __init__(self, channels=(64, 128, 256, 512), norm=nn.BatchNorm2d, deform=False):
        super().__init__()
        channels = list(channels)
        scales = [2 ** i for i in range(len(channels))]
        in_channels = list(channels)
        idas = []
        for i in range(len(channels) - 1):
            j = len(channels) - 2 - i
            idas.append(IDAUp(channels[j], in_channels[j:], [s // scales[j] for s in scales[j:]], norm, deform))
            scales[j + 1:] = [scales[j]] * (len(channels) - j - 1)
            in_channels[j + 1:] = [channels[j]] * (len(channels) - j - 1)
        self.idas = nn.CellList(idas)
        self.last = IDAUp(channels[0], channels[:-1], [2 ** i for i in range(len(channels) - 1)], norm, deform)
        self.out_channels = channels[0]
        self.stride = 4

    def construct(self, features):
        layers = tuple(features)
        outs = (layers[-1],)
        count = len(layers)
        for i in range(len(self.idas)):
            start = count - 2 - i
            merged = self.idas[i](layers[start:])
            layers = layers[:start + 1] + merged
            outs = (layers[-1],) + outs
        return self.last(outs[:count - 1])[-1]
