"""Region Proposal Network (detectron2 StandardRPNHead + RPN with static shapes).

Shape shorthand: B images, L pyramid levels, A anchors per location, Hi Wi the size of level i,
N = sum_i Hi*Wi*A anchors of the canvas, G padded gt, P proposals per image.
Per-level predictions are flattened in (row, col, anchor) order, the order of ``generate_anchors``.
"""
import numpy as np
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common import initializer as init

from mindseg.models import anchors as anchor_lib
from mindseg.models import box_ops, matcher
from mindseg.models.layers import nms, step_random
from mindseg.models.layers.gather import gather_rows
from mindseg.models.necks.fpn import level_shapes


def smooth_l1(diff, beta):
    """Elementwise smooth L1; beta < 1e-5 is plain L1 (detectron2's convention)."""
    abs_diff = ops.abs(diff)
    if beta < 1e-5:
        return abs_diff
    return ops.where(abs_diff < beta, 0.5 * abs_diff * abs_diff / beta, abs_diff - 0.5 * beta)


class RPNHead(nn.Cell):
    """3x3 conv + ReLU shared over levels, then 1x1 objectness (A) and 1x1 deltas (4A)."""

    def __init__(self, *, in_channels, num_anchors, conv_dims=-1):
        super().__init__()
        conv_dims = in_channels if conv_dims == -1 else conv_dims
        normal = init.Normal(sigma=0.01)
        self.conv = nn.Conv2d(in_channels, conv_dims, 3, pad_mode="pad", padding=1, has_bias=True,
                              weight_init=normal, bias_init="zeros")
        self.objectness = nn.Conv2d(conv_dims, num_anchors, 1, has_bias=True, weight_init=normal,
                                    bias_init="zeros")
        self.anchor_deltas = nn.Conv2d(conv_dims, 4 * num_anchors, 1, has_bias=True, weight_init=normal,
                                       bias_init="zeros")
        self.num_anchors = num_anchors

    def construct(self, features):
        """features: L maps (B, C, Hi, Wi) -> L logits (B, Hi*Wi*A) and L deltas (B, Hi*Wi*A, 4)."""
        pred_logits = []
        pred_deltas = []
        for feature in features:
            hidden = ops.relu(self.conv(feature))
            logits = self.objectness(hidden)
            batch, _, height, width = logits.shape
            pred_logits.append(logits.transpose(0, 2, 3, 1).reshape(batch, -1))
            deltas = self.anchor_deltas(hidden).reshape(batch, self.num_anchors, 4, height, width)
            pred_deltas.append(deltas.transpose(0, 3, 4, 1, 2).reshape(batch, -1, 4))
        return pred_logits, pred_deltas


def rpn_losses(pred_logits, pred_deltas, anchors, gt_boxes, gt_valid, *, iou_thresholds,
               allow_low_quality_matches, batch_size_per_image, positive_fraction, bbox_reg_weights,
               smooth_l1_beta, key=None):
    """Sampled objectness BCE and anchor-delta loss on positives, both divided by the number of
    sampled anchors over the batch (B * batch_size_per_image), as detectron2 does.

    pred_logits (B, N), pred_deltas (B, N, 4), anchors (N, 4), gt_boxes (B, G, 4), gt_valid (B, G);
    key: the step's ``StepRandom`` key for the anchor sample (None: ``ops.rand_like``).
    """
    batch = pred_logits.shape[0]
    batch_anchors = ops.broadcast_to(anchors.reshape((1,) + anchors.shape), (batch,) + anchors.shape)
    iou = box_ops.pairwise_iou(gt_boxes, batch_anchors)
    matched_idx, match_labels = matcher.match(iou, gt_valid, thresholds=iou_thresholds,
                                              allow_low_quality_matches=allow_low_quality_matches)
    noise = None if key is None else step_random.uniform(match_labels.shape, key, stream=0)
    sampled_idx, sampled_valid, sampled_is_fg = matcher.sample_balanced(
        match_labels, batch_size_per_image, positive_fraction, noise=noise)
    sampled_valid = sampled_valid.astype(ms.float32)
    sampled_fg = sampled_is_fg.astype(ms.float32) * sampled_valid
    normalizer = float(batch * batch_size_per_image)

    sampled_logits = gather_rows(pred_logits, sampled_idx)
    objectness = ops.binary_cross_entropy_with_logits(sampled_logits, sampled_fg, reduction="none")
    loss_cls = (objectness * sampled_valid).sum() / normalizer

    sampled_anchors = gather_rows(batch_anchors, sampled_idx)
    sampled_gt = gather_rows(gt_boxes, gather_rows(matched_idx, sampled_idx))
    fg_rows = sampled_fg.reshape(sampled_fg.shape + (1,)) > 0
    sampled_gt = ops.where(fg_rows, sampled_gt, sampled_anchors)
    gt_deltas = ops.stop_gradient(box_ops.encode_boxes(sampled_anchors, sampled_gt, bbox_reg_weights))
    sampled_deltas = gather_rows(pred_deltas, sampled_idx)
    per_anchor = smooth_l1(sampled_deltas - gt_deltas, smooth_l1_beta).sum(-1)
    loss_loc = ops.where(sampled_fg > 0, per_anchor, 0.0).sum() / normalizer
    return loss_cls, loss_loc


class RPN(nn.Cell):
    """RPN head, anchors of the static canvas, proposals and (in training) losses."""

    def __init__(self, *, in_channels, canvas, strides, anchor_sizes, aspect_ratios, anchor_offset=0.0,
                 round_anchors=False, conv_dims=-1, iou_thresholds=(0.3, 0.7),
                 allow_low_quality_matches=True, batch_size_per_image=256, positive_fraction=0.5,
                 pre_nms_topk_train=2000, pre_nms_topk_test=1000, post_nms_topk_train=1000,
                 post_nms_topk_test=1000, nms_thresh=0.7, min_box_size=0.0,
                 bbox_reg_weights=(1.0, 1.0, 1.0, 1.0), scale_clamp=float(np.log(1000.0 / 16)),
                 smooth_l1_beta=0.0, loss_weight=1.0):
        super().__init__()
        if len(anchor_sizes) != len(strides):
            raise ValueError(f"model.anchor.sizes: {len(anchor_sizes)} sizes for {len(strides)} levels "
                             f"(one per level, strides {list(strides)})")
        per_level = anchor_lib.generate_anchors(level_shapes(canvas, strides), list(strides),
                                                [[s] for s in anchor_sizes], list(aspect_ratios),
                                                offset=anchor_offset, round_anchors=round_anchors)
        self.level_anchors = [ms.Tensor(np.asarray(a, np.float32)) for a in per_level]
        self.anchors = ms.Tensor(np.concatenate(per_level).astype(np.float32))
        self.head = RPNHead(in_channels=in_channels, num_anchors=len(aspect_ratios), conv_dims=conv_dims)
        self.loss_args = dict(iou_thresholds=tuple(iou_thresholds),
                              allow_low_quality_matches=allow_low_quality_matches,
                              batch_size_per_image=batch_size_per_image,
                              positive_fraction=positive_fraction,
                              bbox_reg_weights=tuple(bbox_reg_weights), smooth_l1_beta=smooth_l1_beta)
        self.pre_nms_topk = (pre_nms_topk_test, pre_nms_topk_train)
        self.post_nms_topk = (post_nms_topk_test, post_nms_topk_train)
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.bbox_reg_weights = tuple(bbox_reg_weights)
        self.scale_clamp = scale_clamp
        self.loss_weight = loss_weight

    def construct(self, features, image_size, gt_boxes=None, gt_valid=None, key=None):
        """Returns proposals (B, P, 4), proposal_valid (B, P) and, in training, the two losses
        (``key``: the step's sampling key, see ``rpn_losses``)."""
        pred_logits, pred_deltas = self.head(features)
        proposals, proposal_valid = self.find_top_proposals(pred_logits, pred_deltas, image_size)
        if not self.training:
            return proposals, proposal_valid
        loss_cls, loss_loc = rpn_losses(ops.concat(pred_logits, 1), ops.concat(pred_deltas, 1),
                                        self.anchors, gt_boxes, gt_valid, key=key, **self.loss_args)
        return proposals, proposal_valid, loss_cls * self.loss_weight, loss_loc * self.loss_weight

    def find_top_proposals(self, pred_logits, pred_deltas, image_size):
        """Per level top-k, decode, clip, drop small boxes, NMS per level, keep the best P overall."""
        pre_nms_topk = self.pre_nms_topk[int(self.training)]
        post_nms_topk = self.post_nms_topk[int(self.training)]
        boxes, scores, valid = [], [], []
        for level, (logits, deltas) in enumerate(zip(pred_logits, pred_deltas)):
            logits = ops.stop_gradient(logits)
            deltas = ops.stop_gradient(deltas)
            k = min(pre_nms_topk, logits.shape[1])
            top_logits, top_idx = ops.topk(logits, k)
            top_idx = top_idx.astype(ms.int32)
            top_anchors = ops.gather(self.level_anchors[level], top_idx, 0)
            level_boxes = box_ops.decode_boxes(top_anchors, gather_rows(deltas, top_idx),
                                               self.bbox_reg_weights, self.scale_clamp)
            level_boxes = box_ops.clip_boxes(level_boxes, image_size)
            boxes.append(level_boxes)
            scores.append(top_logits)
            valid.append(box_ops.nonempty(level_boxes, self.min_box_size) & ops.isfinite(top_logits)
                         & ops.isfinite(level_boxes).all(-1))
        keep_idx, keep_valid = nms.grouped_nms(boxes, scores, valid, self.nms_thresh, post_nms_topk)
        proposals = ops.stop_gradient(gather_rows(ops.concat(boxes, 1), keep_idx))
        return proposals, keep_valid
