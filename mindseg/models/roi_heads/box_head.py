"""Fast R-CNN box head: [convs +] 2 FC + ReLU, class scores (K+1) and class-specific deltas (4K); its loss
and its inference (per-class decode, score threshold, class-wise NMS, top D).

Shape shorthand: B images, R RoIs per image, K classes (K is background), D detections.
"""
from dataclasses import dataclass, field

import mindspore as ms
import mindspore.nn as nn
import mindspore.numpy as mnp
import mindspore.ops as ops
from mindspore.common import initializer as init

from mindseg.models import box_ops
from mindseg.models.layers import nms
from mindseg.models.layers.class_rows import mark_class_rows
from mindseg.models.layers.gather import gather_rows, select_class
from mindseg.models.losses import smooth_l1


@dataclass(frozen=True)
class BoxHeadSettings:
    """The box head's loss and detections: ``box_coder`` encodes the class-specific deltas
    (detectron2's weights (10, 10, 5, 5)); smooth L1 ``smooth_l1_beta``; at test, class score >
    ``score_thresh``, boxes not wider and taller than ``min_box_size`` pixels after clipping
    dropped when it is above 0 (torchvision drops those under 0.01; detectron2 keeps every box), the
    ``topk_candidates`` best (box, class) pairs enter class-wise NMS at ``nms_thresh``, the best
    ``detections_per_image`` are kept."""
    box_coder: box_ops.BoxCoder = field(default_factory=lambda: box_ops.BoxCoder((10.0, 10.0, 5.0, 5.0)))
    smooth_l1_beta: float = 0.0
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    topk_candidates: int = 4000
    min_box_size: float = 0.0


class BoxHead(nn.Cell):
    """[num_conv x (3x3 conv conv_dim + ReLU)] -> flatten -> FC fc_dim -> ReLU -> FC fc_dim -> ReLU
    -> (cls logits K+1, deltas 4K). num_conv 0 is the 2-FC head of Mask R-CNN (torchvision's
    ``TwoMLPHead``); convs before the FCs are detectron2's conv-FC head."""

    def __init__(self, *, in_channels, resolution, fc_dim, num_classes, num_conv=0, conv_dim=256):
        super().__init__()
        layers = []
        for k in range(num_conv):
            layers += [nn.Conv2d(in_channels if k == 0 else conv_dim, conv_dim, 3, pad_mode="pad", padding=1,
                                 has_bias=True, weight_init=init.HeNormal(mode="fan_out", nonlinearity="relu"),
                                 bias_init="zeros"), nn.ReLU()]
        self.convs = nn.SequentialCell(layers) if layers else None
        xavier = init.HeUniform(negative_slope=1, mode="fan_in")
        flat = (conv_dim if num_conv else in_channels) * resolution * resolution
        self.fc1 = nn.Dense(flat, fc_dim, weight_init=xavier, bias_init="zeros")
        self.fc2 = nn.Dense(fc_dim, fc_dim, weight_init=xavier, bias_init="zeros")
        self.cls_score = mark_class_rows(nn.Dense(fc_dim, num_classes + 1, weight_init=init.Normal(0.01),
                                                  bias_init="zeros"), extra=1)
        self.bbox_pred = mark_class_rows(nn.Dense(fc_dim, 4 * num_classes, weight_init=init.Normal(0.001),
                                                  bias_init="zeros"), per_class=4)

    def construct(self, roi_features):
        """roi_features (B*R, C, r, r) -> cls_logits (B*R, K+1), box_deltas (B*R, 4K)."""
        if self.convs is not None:
            roi_features = self.convs(roi_features)
        hidden = ops.relu(self.fc1(roi_features.reshape(roi_features.shape[0], -1)))
        hidden = ops.relu(self.fc2(hidden))
        return self.cls_score(hidden), self.bbox_pred(hidden)


def box_head_losses(cls_logits, box_deltas, rois, roi_valid, roi_gt_classes, roi_gt_boxes, settings):
    """Softmax CE over sampled RoIs and box regression on fg RoIs (deltas of the gt class), both
    divided by the number of sampled RoIs; with no fg the regression loss is exactly 0.

    cls_logits (B*R, K+1), box_deltas (B*R, 4K), rois / roi_gt_boxes (B, R, 4),
    roi_valid (B, R) bool, roi_gt_classes (B, R) int32 with K for background; settings a
    :class:`BoxHeadSettings`.
    """
    num_classes = cls_logits.shape[1] - 1
    valid = roi_valid.reshape(-1).astype(ms.float32)
    gt_classes = roi_gt_classes.reshape(-1)
    normalizer = ops.maximum(valid.sum(), 1.0)
    log_probs = ops.log_softmax(cls_logits, -1)
    loss_cls = -(select_class(log_probs, gt_classes) * valid).sum() / normalizer

    is_fg = (gt_classes < num_classes) & (valid > 0)
    # the deltas of each RoI's gt class: (B*R, 4K) -> (B*R, K, 4) -> (B*R, 4)
    fg_deltas = select_class(box_deltas.reshape(-1, num_classes, 4), ops.minimum(gt_classes, num_classes - 1))
    fg_rows = is_fg.reshape(roi_valid.shape + (1,))
    unit_box = ops.ones_like(rois) * ms.Tensor([0.0, 0.0, 1.0, 1.0], rois.dtype)
    gt_deltas = settings.box_coder.encode(ops.where(fg_rows, rois, unit_box),
                                          ops.where(fg_rows, roi_gt_boxes, unit_box)).reshape(-1, 4)
    per_roi = smooth_l1(fg_deltas - ops.stop_gradient(gt_deltas), settings.smooth_l1_beta).sum(-1)
    loss_box_reg = ops.where(is_fg, per_roi, 0.0).sum() / normalizer
    return loss_cls, loss_box_reg


def box_head_inference(cls_logits, box_deltas, proposals, proposal_valid, image_size, settings):
    """Per-class boxes, score > score_thresh, class-wise NMS, best D per image (``settings`` a
    :class:`BoxHeadSettings`).

    cls_logits (B*R, K+1), box_deltas (B*R, 4K), proposals (B, R, 4), proposal_valid (B, R),
    image_size (B, 2). The ``topk_candidates`` best (box, class) pairs enter NMS (a static bound;
    detectron2 passes every pair above the threshold).
    Returns boxes (B, D, 4), scores (B, D), classes (B, D) int32, valid (B, D) bool.
    """
    batch, num_rois = proposals.shape[0], proposals.shape[1]
    num_classes = cls_logits.shape[1] - 1
    scores = ops.softmax(cls_logits, -1)[:, :num_classes].reshape(batch, num_rois * num_classes)
    ref = ops.broadcast_to(proposals.reshape(batch, num_rois, 1, 4), (batch, num_rois, num_classes, 4))
    boxes = settings.box_coder.decode(ref, box_deltas.reshape(batch, num_rois, num_classes, 4))
    boxes = box_ops.clip_boxes(boxes.reshape(batch, num_rois * num_classes, 4), image_size)
    classes = ops.broadcast_to(mnp.arange(num_classes, dtype=ms.int32).reshape(1, 1, num_classes),
                               (batch, num_rois, num_classes)).reshape(batch, -1)
    pair_valid = ops.broadcast_to(proposal_valid.reshape(batch, num_rois, 1),
                                  (batch, num_rois, num_classes)).reshape(batch, -1)
    valid = pair_valid & (scores > settings.score_thresh) & ops.isfinite(boxes).all(-1)
    if settings.min_box_size > 0:
        valid = valid & box_ops.nonempty(boxes, settings.min_box_size)

    count = min(settings.topk_candidates, num_rois * num_classes)
    _, top_idx = ops.topk(ops.where(valid, scores, -1.0), count)
    top_idx = top_idx.astype(ms.int32)
    boxes, scores = gather_rows(boxes, top_idx), gather_rows(scores, top_idx)
    classes, valid = gather_rows(classes, top_idx), gather_rows(valid, top_idx)

    keep_idx, keep_valid = nms.batched_nms(boxes, scores, valid, settings.nms_thresh,
                                           settings.detections_per_image, classes=classes)
    keep_float = keep_valid.astype(ms.float32)
    det_boxes = gather_rows(boxes, keep_idx) * keep_float.reshape(batch, -1, 1)
    det_scores = gather_rows(scores, keep_idx) * keep_float
    det_classes = ops.where(keep_valid, gather_rows(classes, keep_idx), 0)
    return det_boxes, det_scores, det_classes, keep_valid


__all__ = ["BoxHeadSettings", "BoxHead", "box_head_losses", "box_head_inference"]
