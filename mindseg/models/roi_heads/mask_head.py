"""The mask branch of both models: the mask head (Mask R-CNN's, or CenterMask's SAG-Mask with
spatial attention on), its loss on the sampler's fg slots and its inference.

Mask head: ``num_convs`` x (3x3 conv + ReLU), [spatial attention], 2x2 s2 deconv + ReLU, 1x1 conv
to K class masks (28x28 from 14x14 RoI features). Loss: BCE on the gt class channel of fg RoIs.

Shape shorthand: B images, G padded gt, M gt crop size, R sampled RoIs per image, F fg slots per
image, N RoIs (all images), C channels, K classes, D detections, r = 28 the mask resolution.
"""
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common import initializer as init

from mindseg.models import mask_ops
from mindseg.models.layers.class_rows import mark_class_rows
from mindseg.models.layers.gather import select_class
from mindseg.models.losses import mask_bce_loss

__all__ = ["SpatialAttention", "MaskHead", "fg_slots", "mask_branch_loss", "mask_branch_inference"]


class SpatialAttention(nn.Cell):
    """x * sigmoid(conv3x3([mean_c(x), max_c(x)])) (centermask2's ``SpatialAttention``): a 2 -> 1
    conv without bias weighs every position of the RoI feature map by how strongly its channels
    respond."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, pad_mode="pad", padding=1, has_bias=False,
                              weight_init=init.HeNormal(mode="fan_out", nonlinearity="relu"))

    def construct(self, x):
        # ops.amax (ReduceMax) rather than Tensor.max, whose backward MindSpore lowers to
        # InplaceScatterSrc, documented on Ascend only. The two backwards differ only where
        # channels tie for the maximum; after the head's conv + ReLU a tie is a 0, whose gradient
        # that ReLU stops anyway.
        pooled = ops.cat([x.mean(axis=1, keep_dims=True), ops.amax(x, axis=1, keepdims=True)], axis=1)
        return x * ops.sigmoid(self.conv(pooled))


class MaskHead(nn.Cell):
    """(N, C, 14, 14) RoI features -> (N, K, 28, 28) mask logits.

    ``spatial_attention=True`` is CenterMask's SAG-Mask (centermask2's
    ``SpatialAttentionMaskHead``): attention once after the last conv. MSRA init, predictor
    N(0, 0.001).
    """

    def __init__(self, *, in_channels, num_classes, conv_dims=256, num_convs=4, spatial_attention=False):
        super().__init__()
        msra = init.HeNormal(mode="fan_out", nonlinearity="relu")
        convs = []
        for i in range(num_convs):
            convs += [nn.Conv2d(in_channels if i == 0 else conv_dims, conv_dims, 3, pad_mode="pad",
                                padding=1, has_bias=True, weight_init=msra, bias_init="zeros"),
                      nn.ReLU()]
        self.convs = nn.SequentialCell(convs)
        self.spatial_attention = SpatialAttention() if spatial_attention else None
        self.deconv = nn.Conv2dTranspose(conv_dims if num_convs else in_channels, conv_dims, 2, stride=2,
                                         has_bias=True, weight_init=msra, bias_init="zeros")
        self.predictor = mark_class_rows(nn.Conv2d(conv_dims, num_classes, 1, has_bias=True,
                                                   weight_init=init.Normal(sigma=0.001), bias_init="zeros"))

    def construct(self, roi_features):
        x = self.convs(roi_features)
        if self.spatial_attention is not None:
            x = self.spatial_attention(x)
        return self.predictor(ops.relu(self.deconv(x)))


def fg_slots(num_fg, rois, roi_gt_idx, roi_gt_classes, roi_is_fg):
    """The first ``num_fg`` sampled slots per image, which hold every fg RoI (the sampler puts fg
    RoIs first): only they feed the mask losses.

    rois (B, R, 4), roi_gt_idx / roi_gt_classes / roi_is_fg (B, R) -> fg_rois (B, F, 4),
    fg_gt_idx (B, F), fg_classes (B*F,), fg (B*F,) bool.
    """
    return (rois[:, :num_fg], roi_gt_idx[:, :num_fg], roi_gt_classes[:, :num_fg].reshape(-1),
            roi_is_fg[:, :num_fg].reshape(-1))


def mask_branch_loss(mask_logits, fg_rois, fg_gt_idx, fg_classes, fg, gt_masks, gt_boxes):
    """Mask targets of the fg slots from the gt crops, and the BCE on their gt-class channels.

    mask_logits (B*F, K, r, r), the fg slots as :func:`fg_slots` returns them, gt_masks
    (B, G, M, M), gt_boxes (B, G, 4). Returns loss_mask, the gt-class logits (B*F, r, r) and the
    targets (B*F, r, r) (CenterMask's MaskIoU reads both).
    """
    num_classes, size = mask_logits.shape[1], mask_logits.shape[-1]
    mask_targets = mask_ops.mask_targets_from_crops(gt_masks, gt_boxes, fg_gt_idx, fg_rois, size=size)
    mask_targets = mask_targets.reshape(-1, size, size)
    class_logits = select_class(mask_logits, ops.clip(fg_classes, 0, num_classes - 1))
    return mask_bce_loss(class_logits, fg, mask_targets), class_logits, mask_targets


def mask_branch_inference(mask_logits, classes):
    """mask_logits (B*D, K, r, r), classes (B, D) int32 -> mask_probs (B, D, r, r): the sigmoid of
    each detection's class channel."""
    mask_probs = ops.sigmoid(select_class(mask_logits, classes.reshape(-1)))
    return mask_probs.reshape(classes.shape + mask_probs.shape[1:])
