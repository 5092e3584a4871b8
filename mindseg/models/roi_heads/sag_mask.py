"""CenterMask's spatial attention-guided mask head (SAG-Mask, centermask2's
``SpatialAttentionMaskHead``) and its loss.

Shape shorthand: N RoIs (all images), C channels, K classes, r = 28 the mask resolution.
"""
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common import initializer as init

from mindseg.models.roi_heads.mask_head import mask_head_loss, select_class_masks

__all__ = ["SpatialAttention", "SAGMaskHead", "sag_mask_loss", "select_class_masks"]


class SpatialAttention(nn.Cell):
    """x * sigmoid(conv3x3([mean_c(x), max_c(x)])): a 2 -> 1 conv without bias weighs every
    position of the RoI feature map by how strongly its channels respond."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, pad_mode="pad", padding=1, has_bias=False,
                              weight_init=init.HeNormal(mode="fan_out", nonlinearity="relu"))

    def construct(self, x):
        pooled = ops.cat([x.mean(axis=1, keep_dims=True), x.max(axis=1, keepdims=True)], axis=1)
        return x * ops.sigmoid(self.conv(pooled))


class SAGMaskHead(nn.Cell):
    """(N, C, 14, 14) RoI features -> (N, K, 28, 28) mask logits.

    ``num_convs`` x [3x3 conv + ReLU] (4 x 256; Lite 2 x 128), spatial attention once after the
    last conv, 2x2 stride-2 deconv + ReLU, 1x1 conv to K logits. MSRA init, predictor N(0, 0.001).
    """

    def __init__(self, *, in_channels, num_classes, conv_dims=256, num_convs=4):
        super().__init__()
        msra = init.HeNormal(mode="fan_out", nonlinearity="relu")
        convs = []
        for i in range(num_convs):
            convs += [nn.Conv2d(in_channels if i == 0 else conv_dims, conv_dims, 3, pad_mode="pad",
                                padding=1, has_bias=True, weight_init=msra, bias_init="zeros"),
                      nn.ReLU()]
        self.convs = nn.SequentialCell(convs)
        self.spatial_attention = SpatialAttention()
        self.deconv = nn.Conv2dTranspose(conv_dims if num_convs else in_channels, conv_dims, 2, stride=2,
                                         has_bias=True, weight_init=msra, bias_init="zeros")
        self.predictor = nn.Conv2d(conv_dims, num_classes, 1, has_bias=True,
                                   weight_init=init.Normal(sigma=0.001), bias_init="zeros")

    def construct(self, roi_features):
        x = self.spatial_attention(self.convs(roi_features))
        return self.predictor(ops.relu(self.deconv(x)))


def sag_mask_loss(mask_logits, gt_classes, is_positive, mask_targets):
    """Mean per-pixel BCE on the gt-class channel of positive RoIs; exactly 0 without positives
    (centermask2's ``mask_rcnn_loss``, the same loss as Mask R-CNN's mask head).

    mask_logits (N, K, r, r), gt_classes (N,) int32, is_positive (N,) bool, mask_targets (N, r, r).
    """
    return mask_head_loss(mask_logits, gt_classes, is_positive, mask_targets)
