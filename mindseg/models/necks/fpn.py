"""Feature Pyramid Network: lateral 1x1 + output 3x3 convs, top-down nearest x2, extra top levels.

Inputs are backbone maps from fine to coarse (C2..C5 for Mask R-CNN, C3..C5 for FCOS); outputs
P_first..P_last plus the ``top_block`` levels:
- ``"maxpool"``: P6 = max-pool (kernel 1, stride 2) of P5 (Mask R-CNN, detectron2 ``LastLevelMaxPool``).
- ``"p6p7"``: P6 = 3x3 s2 conv of P5 (or of C5 with ``top_block_in="c5"``), P7 = 3x3 s2 conv of
  ReLU(P6) (FCOS / CenterMask).
- ``"none"``: no extra level.
"""
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common import initializer as init

TOP_BLOCKS = ("maxpool", "p6p7", "none")


def _conv(in_channels, out_channels, kernel_size, stride=1):
    """Conv with bias and detectron2's c2_xavier_fill (kaiming uniform, a=1)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                     padding=kernel_size // 2, has_bias=True,
                     weight_init=init.HeUniform(negative_slope=1, mode="fan_in"), bias_init="zeros")


class FPN(nn.Cell):
    """Returns a tuple of ``len(in_channels) + extra`` maps, each with ``out_channels`` channels."""

    def __init__(self, *, in_channels, out_channels=256, top_block="maxpool", top_block_in="p5"):
        super().__init__()
        if top_block not in TOP_BLOCKS:
            raise ValueError(f"model.fpn.top_block: '{top_block}' is not one of {TOP_BLOCKS}")
        if top_block_in not in ("p5", "c5"):
            raise ValueError(f"FPN top_block_in: '{top_block_in}' is not 'p5' or 'c5'")
        self.lateral_convs = nn.CellList([_conv(c, out_channels, 1) for c in in_channels])
        self.output_convs = nn.CellList([_conv(out_channels, out_channels, 3) for _ in in_channels])
        self.top_block = top_block
        self.top_from_c5 = top_block_in == "c5"
        if top_block == "p6p7":
            self.p6 = _conv(in_channels[-1] if self.top_from_c5 else out_channels, out_channels, 3, stride=2)
            self.p7 = _conv(out_channels, out_channels, 3, stride=2)
        self.num_levels = len(in_channels)
        self.num_outputs = len(in_channels) + {"maxpool": 1, "p6p7": 2, "none": 0}[top_block]

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
            # ("StridedSliceGrad ... input memory out of bounds", PLATFORM.md)
            outputs = outputs + (ops.max_pool2d(outputs[-1], kernel_size=1, stride=2),)
        elif self.top_block == "p6p7":
            p6 = self.p6(features[-1] if self.top_from_c5 else outputs[-1])
            outputs = outputs + (p6, self.p7(ops.relu(p6)))
        return outputs
