"""Mask R-CNN mask head: 4 x (3x3 conv + ReLU), 2x2 s2 deconv + ReLU, 1x1 conv to K class masks
(28x28 from 14x14 RoI features); BCE loss on the gt class channel of fg RoIs.

Shape shorthand: N RoIs (all images), K classes, r = 28 the mask resolution.
"""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common import initializer as init


class MaskHead(nn.Cell):
    """(N, C, 14, 14) RoI features -> (N, K, 28, 28) mask logits."""

    def __init__(self, *, in_channels, conv_dim=256, num_conv=4, num_classes):
        super().__init__()
        msra = init.HeNormal(mode="fan_out", nonlinearity="relu")
        convs = []
        for i in range(num_conv):
            convs.append(nn.Conv2d(in_channels if i == 0 else conv_dim, conv_dim, 3, pad_mode="pad", padding=1,
                                   has_bias=True, weight_init=msra, bias_init="zeros"))
            convs.append(nn.ReLU())
        self.convs = nn.SequentialCell(convs)
        self.deconv = nn.Conv2dTranspose(conv_dim if num_conv else in_channels, conv_dim, 2, stride=2,
                                         has_bias=True, weight_init=msra, bias_init="zeros")
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1, has_bias=True, weight_init=init.Normal(0.001),
                                   bias_init="zeros")

    def construct(self, roi_features):
        return self.predictor(ops.relu(self.deconv(self.convs(roi_features))))


def select_class_masks(mask_logits, classes):
    """mask_logits (N, K, r, r), classes (N,) int in 0..K-1 -> (N, r, r) the channel of each class."""
    num_classes = mask_logits.shape[1]
    one_hot = ops.one_hot(classes, num_classes, ms.Tensor(1.0, mask_logits.dtype),
                          ms.Tensor(0.0, mask_logits.dtype))
    return (mask_logits * one_hot.reshape(-1, num_classes, 1, 1)).sum(1)


def mask_head_loss(mask_logits, classes, is_fg, mask_targets):
    """Mean per-pixel BCE over the gt-class channel of fg RoIs; exactly 0 without fg RoIs.

    mask_logits (N, K, r, r), classes (N,) int32 (any value where not fg), is_fg (N,) bool,
    mask_targets (N, r, r) float in {0, 1}.
    """
    num_classes = mask_logits.shape[1]
    logits = select_class_masks(mask_logits, ops.clip(classes, 0, num_classes - 1))
    per_pixel = ops.binary_cross_entropy_with_logits(logits, ops.stop_gradient(mask_targets),
                                                     reduction="none")
    per_roi = per_pixel.mean((1, 2))
    fg = is_fg.astype(ms.float32)
    return ops.where(is_fg, per_roi, 0.0).sum() / ops.maximum(fg.sum(), 1.0)
