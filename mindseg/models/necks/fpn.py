"""Feature Pyramid Network: lateral 1x1 + output 3x3 convs, top-down nearest x2, extra top levels.

Inputs are backbone maps from fine to coarse (C2..C5 for Mask R-CNN, C3..C5 for FCOS) with the
strides the backbone declares; outputs P_first..P_last plus the ``top_block`` levels, each at twice
the stride of the one before, and ``strides`` lists the stride of every output:
- ``"maxpool"``: P6 = max-pool (kernel 1, stride 2) of P5 (Mask R-CNN, detectron2 ``LastLevelMaxPool``).
- ``"p6p7"``: P6 = 3x3 s2 conv of P5, P7 = 3x3 s2 conv of ReLU(P6) (FCOS / CenterMask).
- ``"none"``: no extra level.
"""
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common import initializer as init

TOP_BLOCKS = {"maxpool": 1, "p6p7": 2, "none": 0}  # name -> extra levels


def level_shapes(canvas, strides):
    """Feature sizes (h, w) of each level on a (H, W) canvas: each stride-2 step halves the
    previous size, rounding up, as stride-2 convs, ceil-mode pools and the P6 max-pool do."""
    shapes = []
    height, width = canvas
    current = 1
    for stride in strides:
        while current < stride:
            height, width, current = -(-height // 2), -(-width // 2), current * 2
        shapes.append((height, width))
    return shapes


def _conv(in_channels, out_channels, kernel_size, stride=1):
    """Conv with bias and detectron2's c2_xavier_fill (kaiming uniform, a=1)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                     padding=kernel_size // 2, has_bias=True,
                     weight_init=init.HeUniform(negative_slope=1, mode="fan_in"), bias_init="zeros")


class FPN(nn.Cell):
    """Returns a tuple of ``len(in_channels) + extra`` maps, each with ``out_channels`` channels, at
    ``self.strides``; ``in_channels`` and ``in_strides`` are the backbone's ``out_channels`` and
    ``strides``."""

    def __init__(self, *, in_channels, in_strides, out_channels=256, top_block="maxpool"):
        super().__init__()
        if top_block not in TOP_BLOCKS:
            raise ValueError(f"model.fpn.top_block: '{top_block}' is not one of {tuple(TOP_BLOCKS)}")
        if len(in_strides) != len(in_channels):
            raise ValueError(f"FPN: {len(in_channels)} input channels but {len(in_strides)} strides")
        self.lateral_convs = nn.CellList([_conv(c, out_channels, 1) for c in in_channels])
        self.output_convs = nn.CellList([_conv(out_channels, out_channels, 3) for _ in in_channels])
        self.top_block = top_block
        if top_block == "p6p7":
            self.p6 = _conv(out_channels, out_channels, 3, stride=2)
            self.p7 = _conv(out_channels, out_channels, 3, stride=2)
        self.num_levels = len(in_channels)
        self.in_strides = [int(s) for s in in_strides]
        self.strides = self.in_strides + [self.in_strides[-1] * 2 ** (k + 1) for k in range(TOP_BLOCKS[top_block])]

    def construct(self, features):
        # tuples, not list.insert/append: those fall back to the Python interpreter in GRAPH mode
        # and leave untyped (AnyType) outputs that later ops fail on at run time
        top_down = self.lateral_convs[-1](features[-1])
        outputs = (self.output_convs[-1](top_down),)
        for i in range(self.num_levels - 2, -1, -1):
            lateral = self.lateral_convs[i](features[i])
            upsampled = ops.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            top_down = lateral + upsampled
            outputs = (self.output_convs[i](top_down),) + outputs
        if self.top_block == "maxpool":
            # max_pool2d, not P5[:, :, ::2, ::2]: in PYNATIVE that slice's grad fails on the CPU
            # ("StridedSliceGrad ... input memory out of bounds", docs/platform_notes.md)
            outputs = outputs + (ops.max_pool2d(outputs[-1], kernel_size=1, stride=2),)
        elif self.top_block == "p6p7":
            p6 = self.p6(outputs[-1])
            outputs = outputs + (p6, self.p7(ops.relu(p6)))
        return outputs
