"""Region Proposal Network (detectron2 StandardRPNHead + RPN with static shapes).

Shape shorthand: B images, L pyramid levels, A anchors per location, Hi Wi the size of level i,
N = sum_i Hi*Wi*A anchors of the canvas, G padded gt, P proposals per image.
Per-level predictions are flattened in (row, col, anchor) order, the order of ``generate_anchors``.
"""
from dataclasses import dataclass, field

import numpy as np
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common import initializer as init

from mindseg.models import box_ops, matcher
from mindseg.models.layers import nms, step_random
from mindseg.models.layers.gather import gather_rows
from mindseg.models.losses import smooth_l1
from mindseg.models.necks.fpn import level_shapes

__all__ = ["RPNSettings", "RPNTrainSettings", "RPNHead", "rpn_losses", "RPN"]


@dataclass(frozen=True)
class RPNSettings:
    """How the RPN proposes in one mode: the top ``pre_nms_topk`` anchors per level enter NMS at
    ``nms_thresh``, boxes not wider and taller than ``min_box_size`` are dropped, the best
    ``post_nms_topk`` per image are kept; ``box_coder`` decodes the anchor deltas."""
    pre_nms_topk: int = 1000
    post_nms_topk: int = 1000
    nms_thresh: float = 0.7
    min_box_size: float = 0.0
    box_coder: box_ops.BoxCoder = field(default_factory=box_ops.BoxCoder)


@dataclass(frozen=True)
class RPNTrainSettings(RPNSettings):
    """Training adds the loss: ``anchor_matcher`` labels the anchors, ``batch_size_per_image``
    anchors are sampled per image, up to ``positive_fraction`` of them foreground, smooth L1
    ``smooth_l1_beta`` on the deltas ``box_coder`` encodes, both losses times ``loss_weight``."""
    anchor_matcher: matcher.Matcher = field(default_factory=matcher.Matcher)
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    smooth_l1_beta: float = 0.0
    loss_weight: float = 1.0


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


def rpn_losses(pred_logits, pred_deltas, anchors, gt_boxes, gt_valid, settings, key=None):
    """Sampled objectness BCE and anchor-delta loss on positives, both divided by the number of
    sampled anchors over the batch (B * batch_size_per_image), as detectron2 does; not weighted.

    pred_logits (B, N), pred_deltas (B, N, 4), anchors (N, 4), gt_boxes (B, G, 4), gt_valid (B, G);
    settings an :class:`RPNTrainSettings`; key: the step's ``StepRandom`` key for the anchor sample
    (None: ``ops.rand_like``).
    """
    batch = pred_logits.shape[0]
    batch_anchors = ops.broadcast_to(anchors.reshape((1,) + anchors.shape), (batch,) + anchors.shape)
    iou = box_ops.pairwise_iou(gt_boxes, batch_anchors)
    matched_idx, match_labels = settings.anchor_matcher(iou, gt_valid)
    noise = None if key is None else step_random.uniform(match_labels.shape, key, stream=0)
    sampled_idx, sampled_valid, sampled_is_fg = matcher.sample_balanced(
        match_labels, settings.batch_size_per_image, settings.positive_fraction, noise=noise)
    sampled_valid = sampled_valid.astype(ms.float32)
    sampled_fg = sampled_is_fg.astype(ms.float32) * sampled_valid
    normalizer = float(batch * settings.batch_size_per_image)

    sampled_logits = gather_rows(pred_logits, sampled_idx)
    objectness = ops.binary_cross_entropy_with_logits(sampled_logits, sampled_fg, reduction="none")
    loss_cls = (objectness * sampled_valid).sum() / normalizer

    sampled_anchors = gather_rows(batch_anchors, sampled_idx)
    sampled_gt = gather_rows(gt_boxes, gather_rows(matched_idx, sampled_idx))
    fg_rows = sampled_fg.reshape(sampled_fg.shape + (1,)) > 0
    sampled_gt = ops.where(fg_rows, sampled_gt, sampled_anchors)
    gt_deltas = ops.stop_gradient(settings.box_coder.encode(sampled_anchors, sampled_gt))
    sampled_deltas = gather_rows(pred_deltas, sampled_idx)
    per_anchor = smooth_l1(sampled_deltas - gt_deltas, settings.smooth_l1_beta).sum(-1)
    loss_loc = ops.where(sampled_fg > 0, per_anchor, 0.0).sum() / normalizer
    return loss_cls, loss_loc


class RPN(nn.Cell):
    """RPN head, anchors of the static canvas, proposals and (in training) losses.

    anchor_generator an ``anchors.AnchorGenerator``, train an :class:`RPNTrainSettings`, test an
    :class:`RPNSettings`.
    """

    def __init__(self, *, in_channels, canvas, strides, anchor_generator, train=RPNTrainSettings(pre_nms_topk=2000),
                 test=RPNSettings(), conv_dims=-1):
        super().__init__()
        per_level = anchor_generator.per_level(level_shapes(canvas, strides), strides)
        self.level_anchors = [ms.Tensor(np.asarray(a, np.float32)) for a in per_level]
        self.anchors = ms.Tensor(np.concatenate(per_level).astype(np.float32))
        self.head = RPNHead(in_channels=in_channels, num_anchors=anchor_generator.num_cell_anchors,
                            conv_dims=conv_dims)
        self.train_settings = train
        self.test_settings = test

    def construct(self, features, image_size, gt_boxes=None, gt_valid=None, key=None):
        """Returns proposals (B, P, 4), proposal_valid (B, P) and, in training, the two losses
        (``key``: the step's sampling key, see ``rpn_losses``)."""
        pred_logits, pred_deltas = self.head(features)
        proposals, proposal_valid = self.find_top_proposals(pred_logits, pred_deltas, image_size)
        if not self.training:
            return proposals, proposal_valid
        train = self.train_settings
        loss_cls, loss_loc = rpn_losses(ops.concat(pred_logits, 1), ops.concat(pred_deltas, 1), self.anchors,
                                        gt_boxes, gt_valid, train, key)
        return proposals, proposal_valid, loss_cls * train.loss_weight, loss_loc * train.loss_weight

    def find_top_proposals(self, pred_logits, pred_deltas, image_size):
        """Per level top-k, decode, clip, drop small boxes, NMS per level, keep the best P overall."""
        settings = self.train_settings if self.training else self.test_settings
        boxes, scores, valid = [], [], []
        for level, (logits, deltas) in enumerate(zip(pred_logits, pred_deltas)):
            logits = ops.stop_gradient(logits)
            deltas = ops.stop_gradient(deltas)
            k = min(settings.pre_nms_topk, logits.shape[1])
            top_logits, top_idx = ops.topk(logits, k)
            top_idx = top_idx.astype(ms.int32)
            top_anchors = ops.gather(self.level_anchors[level], top_idx, 0)
            level_boxes = settings.box_coder.decode(top_anchors, gather_rows(deltas, top_idx))
            level_boxes = box_ops.clip_boxes(level_boxes, image_size)
            boxes.append(level_boxes)
            scores.append(top_logits)
            valid.append(box_ops.nonempty(level_boxes, settings.min_box_size) & ops.isfinite(top_logits)
                         & ops.isfinite(level_boxes).all(-1))
        keep_idx, keep_valid = nms.grouped_nms(boxes, scores, valid, settings.nms_thresh, settings.post_nms_topk)
        proposals = ops.stop_gradient(gather_rows(ops.concat(boxes, 1), keep_idx))
        return proposals, keep_valid
