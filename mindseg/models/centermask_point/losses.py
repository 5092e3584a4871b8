"""CenterMask (point representation) losses: CenterNet focal heatmap loss, L1 on offset and size
at the object centres, BCE of the assembled mask (paper weights 1, 1, 0.1, 1).

Shape shorthand as in ``targets.py`` and ``masks.py``. Every loss is normalised by the number of
objects in the batch (at least 1), so an image without objects gives exactly zero offset, size
and mask losses; the heatmap loss then still pushes every location towards 0.
"""
import mindspore as ms
import mindspore.ops as ops

from mindseg.models.centermask_point.masks import gather_at

PROB_CLAMP = 1e-4  # CenterNet clamps sigmoid(heatmap) to [1e-4, 1 - 1e-4]
LOG_EPS = 1e-7


def num_objects(obj_valid):
    """Objects in the batch, at least 1: the normaliser of every loss."""
    return ops.clamp(obj_valid.astype(ms.float32).sum(), min=1.0)


def heatmap_focal_loss(heatmap_logits, gt_heatmap, normaliser, alpha=2.0, beta=4.0):
    """CenterNet's penalty-reduced focal loss: (B, K, Ho, Wo) logits and targets -> scalar.
    Positives (target 1): -(1 - p)^alpha log p; negatives: -(1 - y)^beta p^alpha log(1 - p)."""
    prob = ops.clamp(ops.sigmoid(heatmap_logits), PROB_CLAMP, 1 - PROB_CLAMP)
    positive = (gt_heatmap == 1).astype(ms.float32)
    pos_loss = ops.log(prob) * ops.pow(1 - prob, alpha) * positive
    neg_loss = ops.log(1 - prob) * ops.pow(prob, alpha) * ops.pow(1 - gt_heatmap, beta) * (1 - positive)
    return -(pos_loss.sum() + neg_loss.sum()) / normaliser


def center_l1_loss(pred_map, center_index, target, obj_valid, normaliser):
    """pred_map (B, 2, Ho, Wo) read at center_index (B, G) against target (B, G, 2): the L1 mean
    over valid objects and both coordinates."""
    pred = gather_at(pred_map, center_index)
    valid = obj_valid.astype(ms.float32).expand_dims(-1)
    return (ops.abs(pred - target) * valid).sum() / (2 * normaliser)


def mask_bce_loss(shape_logits, saliency_logits, gt_masks, obj_valid, normaliser):
    """BCE of M = sigmoid(shape) * sigmoid(saliency), each (B, G, R, R), against gt_masks
    (B, G, R, R) in {0, 1}: the per-pixel mean per object, summed over valid objects / normaliser.
    log M is computed as the sum of two log-sigmoids, log(1 - M) with M clamped below 1."""
    log_mask = -ops.softplus(-shape_logits) - ops.softplus(-saliency_logits)
    prob = ops.sigmoid(shape_logits) * ops.sigmoid(saliency_logits)
    log_background = ops.log(ops.clamp(1 - prob, min=LOG_EPS))
    bce = -(gt_masks * log_mask + (1 - gt_masks) * log_background)
    per_object = bce.mean(axis=(2, 3)) * obj_valid.astype(ms.float32)
    return per_object.sum() / normaliser
