"""FCOS, CenterMask's one-stage detector: head, losses and inference (centermask2 conventions).

Shape shorthand: B images, K classes, L = sum_i Hi*Wi locations over the levels (P3..P7), each
level flattened row-major, levels concatenated finest first (see ``fcos_targets``); D detections.

Box regression: the head predicts ``ReLU(scale_i * x)`` per level, which centermask2 trains
against (l, t, r, b) targets divided by the level's stride and multiplies by the stride at
inference. Here the head returns ``pred_ltrb = ReLU(scale_i * x) * stride_i`` in pixels
by design, and :func:`fcos_losses` divides prediction and target by the location's stride before
the IoU loss, so the loss is centermask2's to float rounding: its IoU term is smoothed as
``(I + 1) / (U + 1)``, which is not scale invariant, so the units matter.
"""
import math
from dataclasses import dataclass

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Parameter, Tensor
from mindspore.common import initializer as init

from mindseg.models import box_ops
from mindseg.models.dense_heads.fcos_targets import compute_locations, location_levels, per_location
from mindseg.models.layers.class_rows import mark_class_rows
from mindseg.models.layers.gather import gather_rows
from mindseg.models.layers.nms import batched_nms
from mindseg.models.layers.reduce import data_parallel_mean
from mindseg.models.necks.fpn import level_shapes


class Scale(nn.Cell):
    """A learnable scalar multiplier (one per pyramid level), initialised to 1."""

    def __init__(self, init_value=1.0):
        super().__init__()
        self.scale = Parameter(Tensor([init_value], ms.float32), name="scale")

    def construct(self, x):
        return x * self.scale


def _tower(in_channels, num_convs, num_groups):
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, in_channels, 3, pad_mode="pad", padding=1, has_bias=True,
                             weight_init=init.Normal(sigma=0.01), bias_init="zeros"),
                   nn.GroupNorm(num_groups, in_channels), nn.ReLU()]
    return nn.SequentialCell(layers)


def _predictor(in_channels, out_channels, bias=0.0):
    return nn.Conv2d(in_channels, out_channels, 3, pad_mode="pad", padding=1, has_bias=True,
                     weight_init=init.Normal(sigma=0.01), bias_init=init.Constant(bias))


def _flatten_level(x):
    """(B, C, H, W) -> (B, H*W, C)."""
    batch, channels = x.shape[0], x.shape[1]
    return x.transpose(0, 2, 3, 1).reshape(batch, -1, channels)


class FCOSHead(nn.Cell):
    """Classification and box towers shared over levels, each ``num_convs`` x [3x3 conv + GN + ReLU]
    (4, Lite 2); 3x3 predictors: K class logits on the class tower, 4 box distances and 1
    centerness logit on the box tower. Init N(0, 0.01), class bias -log((1 - p) / p).

    construct(features: per level (B, C, Hi, Wi)) ->
        cls_logits (B, L, K), pred_ltrb (B, L, 4) pixels, ctr_logits (B, L).
    """

    def __init__(self, *, in_channels, num_classes, strides=(8, 16, 32, 64, 128), num_convs=4,
                 num_groups=32, prior_prob=0.01):
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(float(s) for s in strides)
        self.cls_tower = _tower(in_channels, num_convs, num_groups)
        self.bbox_tower = _tower(in_channels, num_convs, num_groups)
        self.cls_logits = mark_class_rows(_predictor(in_channels, num_classes,
                                                     -math.log((1 - prior_prob) / prior_prob)))
        self.bbox_pred = _predictor(in_channels, 4)
        self.ctrness = _predictor(in_channels, 1)
        self.scales = nn.CellList([Scale() for _ in strides])

    def construct(self, features):
        cls_logits, pred_ltrb, ctr_logits = [], [], []
        for level, feature in enumerate(features):
            cls_feature = self.cls_tower(feature)
            box_feature = self.bbox_tower(feature)
            cls_logits.append(_flatten_level(self.cls_logits(cls_feature)))
            distances = ops.relu(self.scales[level](self.bbox_pred(box_feature))) * self.strides[level]
            pred_ltrb.append(_flatten_level(distances))
            ctr_logits.append(_flatten_level(self.ctrness(box_feature)))
        return (ops.cat(cls_logits, axis=1), ops.cat(pred_ltrb, axis=1),
                ops.cat(ctr_logits, axis=1)[..., 0])


# ---------------------------------------------------------------------------------------- losses

def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Elementwise sigmoid focal loss (RetinaNet): alpha_t * (1 - p_t)^gamma * BCE; no reduction."""
    prob = ops.sigmoid(logits)
    bce = ops.binary_cross_entropy_with_logits(logits, targets, ops.ones_like(logits),
                                               ops.ones_like(logits), reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = bce * ops.pow(1 - p_t, gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def ltrb_giou_loss(pred_ltrb, target_ltrb):
    """(..., 4) distances from a common location -> (...) 1 - GIoU, with centermask2's smoothed IoU
    ``(I + 1) / (U + 1)`` and hull ``+ 1e-7``. Inputs are in stride units in the FCOS loss."""
    pred_area = (pred_ltrb[..., 0] + pred_ltrb[..., 2]) * (pred_ltrb[..., 1] + pred_ltrb[..., 3])
    target_area = (target_ltrb[..., 0] + target_ltrb[..., 2]) * (target_ltrb[..., 1] + target_ltrb[..., 3])
    low = ops.minimum(pred_ltrb, target_ltrb)
    high = ops.maximum(pred_ltrb, target_ltrb)
    inter = (low[..., 0] + low[..., 2]) * (low[..., 1] + low[..., 3])
    hull = (high[..., 0] + high[..., 2]) * (high[..., 1] + high[..., 3]) + 1e-7
    union = pred_area + target_area - inter
    iou = (inter + 1.0) / (union + 1.0)
    return 1.0 - (iou - (hull - union) / hull)


def fcos_losses(cls_logits, pred_ltrb, ctr_logits, targets, location_strides, settings, reduce_mean=None):
    """FCOS losses over a batch (centermask2's ``fcos_losses``).

    Args:
        cls_logits (B, L, K), pred_ltrb (B, L, 4) pixels, ctr_logits (B, L): from FCOSHead.
        targets: (labels int (B, L) with K = background, reg_targets (B, L, 4) pixels,
            ctr_targets (B, L)), as fcos_targets returns them.
        location_strides: (L,) the stride of each location's level.
        settings: an :class:`FCOSTrainSettings` (the focal loss's alpha and gamma).
        reduce_mean: None on one device; in data-parallel training a callable that averages a
            scalar over the devices (AllReduce sum / world size), as centermask2 does for the
            positive count and the centerness-target sum.

    Returns:
        loss_cls: focal loss summed over all locations and classes / max(mean num_pos, 1).
        loss_box: GIoU loss of positives weighted by the centerness target / max(mean sum of
            centerness targets, 1e-6).
        loss_ctr: centerness BCE over positives / max(mean num_pos, 1).
    An image without gt contributes only to loss_cls.
    """
    labels, reg_targets, ctr_targets = targets
    num_classes = cls_logits.shape[2]
    is_positive = labels != num_classes
    positive = is_positive.astype(ms.float32)
    num_pos = positive.sum()
    if reduce_mean is not None:
        num_pos = reduce_mean(num_pos)
    num_pos = ops.maximum(num_pos, 1.0)

    cls_targets = ops.one_hot(labels, num_classes + 1, Tensor(1.0, ms.float32),
                              Tensor(0.0, ms.float32))[..., :num_classes]
    loss_cls = sigmoid_focal_loss(cls_logits, cls_targets, settings.focal_alpha, settings.focal_gamma).sum() / num_pos

    strides = location_strides.reshape(1, -1, 1)
    safe_targets = ops.where(is_positive[..., None], reg_targets, ops.ones_like(reg_targets))
    ctr_targets = ctr_targets * positive
    ctr_norm = ctr_targets.sum()
    if reduce_mean is not None:
        ctr_norm = reduce_mean(ctr_norm)
    ctr_norm = ops.maximum(ctr_norm, 1e-6)
    box_losses = ltrb_giou_loss(pred_ltrb / strides, safe_targets / strides)
    loss_box = (box_losses * ctr_targets).sum() / ctr_norm

    ctr_bce = ops.binary_cross_entropy_with_logits(ctr_logits, ctr_targets, ops.ones_like(ctr_logits),
                                                   ops.ones_like(ctr_logits), reduction="none")
    loss_ctr = (ctr_bce * positive).sum() / num_pos
    return loss_cls, loss_box, loss_ctr


# ------------------------------------------------------------------------------------- inference

def fcos_candidates(cls_logits, pred_ltrb, ctr_logits, locations, level_sizes, image_size, settings):
    """Per level, the top ``pre_nms_topk`` (location, class) pairs by cls * ctr among those with
    class probability > ``score_thresh`` (centermask2's ``forward_for_single_feature_map``).
    ``clip=False`` leaves the boxes unclipped, as centermask2 does until its postprocessing.

    Args: head outputs as in FCOSHead; locations (L, 2); level_sizes: Hi*Wi per level (ints);
        image_size (B, 2) as (h, w) of the unpadded image, for clipping; settings an
        :class:`FCOSSettings`.
    Returns: boxes (B, N, 4) xyxy (clipped unless ``clip=False``), scores (B, N) = sqrt(cls * ctr),
        classes (B, N) int32, valid (B, N) bool, N = sum_i min(pre_nms_topk, Hi*Wi*K).
    """
    num_classes = cls_logits.shape[2]
    cls_prob = ops.sigmoid(cls_logits)
    ctr_prob = ops.sigmoid(ctr_logits)
    boxes, scores, classes, valid = [], [], [], []
    start = 0
    for size in level_sizes:
        level_prob = cls_prob[:, start:start + size]
        level_scores = level_prob * ctr_prob[:, start:start + size, None]
        ranked = ops.where(level_prob > settings.score_thresh, level_scores, -1.0).reshape(level_prob.shape[0], -1)
        top_scores, top_index = ops.topk(ranked, min(settings.pre_nms_topk, size * num_classes))
        top_index = top_index.astype(ms.int32)
        location_index = top_index // num_classes
        level_ltrb = gather_rows(pred_ltrb[:, start:start + size], location_index)
        level_xy = ops.gather(locations[start:start + size], location_index, 0)
        boxes.append(ops.cat([level_xy - level_ltrb[..., :2], level_xy + level_ltrb[..., 2:]], axis=-1))
        scores.append(ops.sqrt(ops.relu(top_scores)))
        classes.append(top_index - location_index * num_classes)
        valid.append(top_scores >= 0)
        start += size
    boxes = ops.cat(boxes, axis=1)
    if settings.clip:
        boxes = box_ops.clip_boxes(boxes, image_size)
    return boxes, ops.cat(scores, axis=1), ops.cat(classes, axis=1), ops.cat(valid, axis=1)


def fcos_inference(cls_logits, pred_ltrb, ctr_logits, locations, level_sizes, image_size, settings):
    """Detections: :func:`fcos_candidates`, then class-wise NMS at ``nms_thresh`` keeping the top
    ``post_nms_topk`` per image (D = post_nms_topk); ``settings`` an :class:`FCOSSettings`.

    Returns boxes (B, D, 4), scores (B, D), classes (B, D) int32, valid (B, D) bool, best first;
    rows past the valid ones are zero.
    """
    boxes, scores, classes, valid = fcos_candidates(cls_logits, pred_ltrb, ctr_logits, locations,
                                                    level_sizes, image_size, settings)
    keep, keep_valid = batched_nms(boxes, scores, valid, settings.nms_thresh, settings.post_nms_topk,
                                   classes=classes)
    keep = keep.astype(ms.int32)
    keep_float = keep_valid.astype(ms.float32)
    out_boxes = gather_rows(boxes, keep) * keep_float[..., None]
    out_scores = gather_rows(scores, keep) * keep_float
    out_classes = gather_rows(classes, keep) * keep_valid.astype(ms.int32)
    return out_boxes, out_scores, out_classes, keep_valid


# ---------------------------------------------------------------------------- the FCOS of a canvas

@dataclass(frozen=True)
class FCOSSettings:
    """How FCOS detects in one mode (:func:`fcos_inference`): class probability > ``score_thresh``,
    the top ``pre_nms_topk`` per level, class-wise NMS at ``nms_thresh``, the best
    ``post_nms_topk`` per image; ``clip`` clips the boxes before NMS."""
    score_thresh: float = 0.05
    pre_nms_topk: int = 1000
    nms_thresh: float = 0.6
    post_nms_topk: int = 50
    clip: bool = True


@dataclass(frozen=True)
class FCOSTrainSettings(FCOSSettings):
    """Training adds the focal loss's alpha and gamma; the detections are CenterMask's mask
    proposals."""
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


class FCOS(nn.Cell):
    """FCOS on a static canvas, around its head (which stays ``CenterMask.fcos_head``): the
    locations of the levels, the targets and losses in training, the detections in both modes.

    canvas (H, W); location_matcher a ``fcos_targets.LocationMatcher`` (which holds the levels'
    strides and the class count); train an :class:`FCOSTrainSettings`, test an :class:`FCOSSettings`.
    """

    def __init__(self, *, canvas, location_matcher, train=FCOSTrainSettings(post_nms_topk=100), test=FCOSSettings()):
        super().__init__()
        strides = location_matcher.strides
        shapes = level_shapes(canvas, strides)
        levels = location_levels(shapes)
        self.strides = tuple(strides)
        self.level_sizes = [h * w for h, w in shapes]
        self.locations = Tensor(compute_locations(shapes, strides))
        self.location_levels = Tensor(levels)
        self.location_strides = Tensor(per_location(levels, strides))
        self.num_classes = location_matcher.num_classes
        self.location_matcher = location_matcher
        self.train_settings = train
        self.test_settings = test
        # the normalisers over the whole job, as centermask2
        self.rank_mean = data_parallel_mean()

    def losses(self, cls_logits, pred_ltrb, ctr_logits, gt_boxes, gt_labels, gt_valid):
        """Head outputs (see FCOSHead) and the gt -> loss_cls, loss_box, loss_ctr (:func:`fcos_losses`)."""
        targets = self.location_matcher(self.locations, self.location_levels, gt_boxes, gt_labels, gt_valid)
        return fcos_losses(cls_logits, pred_ltrb, ctr_logits, targets, self.location_strides, self.train_settings,
                           reduce_mean=self.rank_mean)

    def detections(self, cls_logits, pred_ltrb, ctr_logits, image_size):
        """Head outputs and image_size (B, 2) -> boxes, scores, classes, valid of :func:`fcos_inference`,
        with the settings of the current mode."""
        settings = self.train_settings if self.training else self.test_settings
        return fcos_inference(cls_logits, pred_ltrb, ctr_logits, self.locations, self.level_sizes, image_size,
                              settings)
