"""CenterMask's MaskIoU head (centermask2's ``MaskIoUHead``): predicts, per class, the IoU of a
predicted mask with its gt, to rescore masks at test time (segm score = box score x mask IoU).

Shape shorthand: N RoIs (all images), C channels, K classes, r = 28 the mask resolution,
B images and G padded gt for the per-gt helper, M the gt mask crop size.
"""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common import initializer as init

from mindseg.models.layers.class_rows import mark_class_rows
from mindseg.models.layers.gather import select_class

__all__ = ["MaskIoUHead", "gt_mask_areas", "maskiou_targets", "maskiou_loss", "mask_scores"]


class MaskIoUHead(nn.Cell):
    """(N, C, 14, 14) pooled RoI features and (N, 28, 28) mask probabilities -> (N, K) mask IoU.

    The mask is 2x2 max-pooled to 14x14 and concatenated to the features; ``num_convs`` x [3x3
    conv + ReLU] (the last stride 2, to 7x7), FC ``fc_dim`` + ReLU twice, FC to K. The mask is
    the gt class's channel in training and the predicted class's at test.
    """

    def __init__(self, *, in_channels, num_classes, conv_dims=256, num_convs=4, resolution=14, fc_dim=1024):
        super().__init__()
        msra = init.HeNormal(mode="fan_out", nonlinearity="relu")
        layers = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels + 1 if i == 0 else conv_dims, conv_dims, 3,
                                 stride=2 if i == num_convs - 1 else 1, pad_mode="pad", padding=1,
                                 has_bias=True, weight_init=msra, bias_init="zeros"),
                       nn.ReLU()]
        self.convs = nn.SequentialCell(layers)
        self.mask_pool = nn.MaxPool2d(kernel_size=2, stride=2)
        flat = conv_dims * (resolution // 2) ** 2
        # centermask2's kaiming_uniform(a=1) on fan_in; MSRA fan_out here (5-10x the std on fc1)
        # made from-scratch training diverge within ~70 steps through the non-detached RoI features
        fc_init = init.HeUniform(negative_slope=1, mode="fan_in")
        self.fc1 = nn.Dense(flat, fc_dim, weight_init=fc_init, bias_init="zeros", activation="relu")
        self.fc2 = nn.Dense(fc_dim, fc_dim, weight_init=fc_init, bias_init="zeros", activation="relu")
        self.predictor = mark_class_rows(nn.Dense(fc_dim, num_classes, weight_init=init.Normal(sigma=0.01),
                                                  bias_init="zeros"))

    def construct(self, roi_features, mask_probs):
        pooled_mask = self.mask_pool(mask_probs.expand_dims(1))
        x = self.convs(ops.cat([roi_features, pooled_mask.astype(roi_features.dtype)], axis=1))
        x = self.fc2(self.fc1(x.reshape(x.shape[0], -1)))
        return self.predictor(x)


def gt_mask_areas(gt_masks, gt_boxes):
    """Full gt mask areas in image pixels from the box-relative crops: the crop's foreground
    fraction times the gt box area. gt_masks (B, G, M, M) {0, 1}, gt_boxes (B, G, 4) -> (B, G).
    Works the same for polygon and RLE annotations, which both arrive as crops."""
    fraction = gt_masks.astype(ms.float32).mean(axis=(2, 3))
    box_area = ops.relu(gt_boxes[..., 2] - gt_boxes[..., 0]) * ops.relu(gt_boxes[..., 3] - gt_boxes[..., 1])
    return fraction * box_area


def maskiou_targets(pred_mask_logits, mask_targets, rois, gt_areas):
    """IoU of the predicted mask (logit > 0) with the whole gt mask, in the RoI's r x r grid
    (centermask2's ``mask_rcnn_loss`` with MaskIoU on).

    The mask target only covers the part of the gt inside the RoI, so the gt area in the union is
    corrected: ratio = (gt area inside the RoI) / (full gt area), the inside area being the
    target's foreground fraction times the RoI area, clamped to [1e-10, 1]; full gt area in grid
    cells = target cells / ratio; IoU = overlap / max(pred + full gt - overlap, 1).

    pred_mask_logits (N, r, r) of the class in question, mask_targets (N, r, r) (binarised at
    0.5), rois (N, 4) xyxy, gt_areas (N,) full gt mask areas in pixels of the matched gts
    (:func:`gt_mask_areas` gathered per RoI). Returns (N,) targets, without gradient.
    """
    pred = (pred_mask_logits > 0).astype(ms.float32)
    target = (mask_targets >= 0.5).astype(ms.float32)
    target_cells = target.sum(axis=(1, 2))
    roi_area = ops.relu(rois[:, 2] - rois[:, 0]) * ops.relu(rois[:, 3] - rois[:, 1])
    inside_area = target.mean(axis=(1, 2)) * roi_area
    ratio = ops.clamp(inside_area / ops.maximum(gt_areas, 1e-10), 0.0, 1.0)
    full_gt_cells = target_cells / ops.maximum(ratio, 1e-10)
    overlap = (pred * target).sum(axis=(1, 2))
    union = ops.maximum(pred.sum(axis=(1, 2)) + full_gt_cells - overlap, 1.0)
    return ops.stop_gradient(overlap / union)


def maskiou_loss(pred_maskiou, gt_classes, maskiou_target, is_positive, loss_weight=1.0):
    """loss_weight x mean over positive RoIs with target > 0 of 0.5 (p - t)^2, p the gt class's
    predicted IoU; exactly 0 when there is none (centermask2's ``mask_iou_loss``).

    pred_maskiou (N, K), gt_classes (N,) int32, maskiou_target (N,), is_positive (N,) bool.
    """
    pred = select_class(pred_maskiou, ops.clip(gt_classes, 0, pred_maskiou.shape[1] - 1))
    selected = ops.logical_and(is_positive, maskiou_target > 0)
    weight = selected.astype(ms.float32)
    diff = pred - maskiou_target
    # a product, not ops.square: its backward is PowTensorScalar, documented on Ascend only
    squared = 0.5 * diff * diff * weight
    return loss_weight * squared.sum() / ops.maximum(weight.sum(), 1.0)


def mask_scores(pred_maskiou, pred_classes, box_scores):
    """Test-time segm scores: box score x predicted IoU of the predicted class.
    pred_maskiou (..., K), pred_classes (...) int32, box_scores (...) -> (...)."""
    flat = select_class(pred_maskiou.reshape(-1, pred_maskiou.shape[-1]), pred_classes.reshape(-1))
    return box_scores * flat.reshape(pred_classes.shape)
