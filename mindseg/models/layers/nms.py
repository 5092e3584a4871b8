"""Exact greedy non-maximum suppression with static shapes.

Shape shorthand: B images, N candidates per image, D kept per image (``max_output``).

Greedy NMS keeps a box when no kept box of higher score (and the same class) overlaps it with
IoU > threshold. Two exact implementations, both on the boxes sorted by score first:

- ``impl="native"`` (default): ``ops.NMSWithMask`` per image, classes separated by offsetting
  the boxes by class (torchvision's batched_nms trick). Its CPU index output is arange(N)
  (docs/platform_notes.md), which is harmless here because the input is already sorted. 10-40x faster
  than the matrix form on the CPU (0.007 s for N = 1000).
- ``impl="matrix"``: plain tensor ops, for backends without NMSWithMask. With S[j, i] = "j
  before i overlaps i", the kept set is the unique fixed point of keep[i] = valid[i] and not
  any_j(keep[j] and S[j, i]): entry i depends only on earlier entries, so iterating from
  keep = valid fixes at least one more leading entry per round and stops, exactly, when a round
  changes nothing (a few rounds in practice, at most N). Cost and memory grow as N^2.

``NonMaxSuppressionV3`` does not run on the CPU (docs/platform_notes.md). For RPN proposals use
``grouped_nms`` (one call per level) rather than levels as classes in one call.

On Ascend, NMSWithMask ignores the scores (the boxes must come sorted, as they do here) and takes
at most 2864 boxes (its docstring); a longer input (Mask R-CNN's ``test_topk_candidates``: 4000)
runs the matrix form there, which keeps the same boxes. Other devices keep the native form.
"""
import mindspore as ms
import mindspore.numpy as mnp
import mindspore.ops as ops

from mindseg.models.box_ops import pairwise_iou
from mindseg.models.layers.gather import gather_rows

_NEG = -3.0e38
# the most boxes ops.NMSWithMask takes, by device (its docstring: 2864 on Ascend; no limit elsewhere)
NATIVE_MAX_BOXES = {"Ascend": 2864}


@ops.constexpr  # evaluated while the graph is compiled: the device is known then
def _native_fits(length):
    """Whether ops.NMSWithMask takes ``length`` boxes on the device the graph is built for."""
    limit = NATIVE_MAX_BOXES.get(ms.get_context("device_target"))
    return limit is None or length <= limit


def _suppression_matrix(sorted_boxes, sorted_classes, iou_threshold):
    """(B, N, N) float: 1 where the earlier box j (row) would suppress box i (column)."""
    length = sorted_boxes.shape[1]
    overlap = pairwise_iou(sorted_boxes, sorted_boxes) > iou_threshold
    earlier = mnp.arange(length).reshape(length, 1) < mnp.arange(length).reshape(1, length)
    suppress = ops.logical_and(overlap, earlier.reshape(1, length, length))
    if sorted_classes is not None:
        same = sorted_classes.expand_dims(2) == sorted_classes.expand_dims(1)
        suppress = ops.logical_and(suppress, same)
    return suppress.astype(ms.float32)


def _greedy_keep(suppress, sorted_valid):
    """Fixed point of keep = valid and not (keep @ suppress); (B, N) bool."""
    valid = sorted_valid.astype(ms.float32).expand_dims(1)
    keep = valid
    changed = True
    while changed:
        hit = ops.bmm(keep, suppress) > 0.5
        new_keep = valid * (1.0 - hit.astype(ms.float32))
        changed = (new_keep != keep).any()
        keep = new_keep
    return keep.squeeze(1) > 0.5


def _native_keep(sorted_boxes, sorted_classes, iou_threshold):
    """ops.NMSWithMask on score-sorted boxes, one image at a time; (B, N) bool."""
    batch, length = sorted_boxes.shape[0], sorted_boxes.shape[1]
    if sorted_classes is not None:
        # ops.amax is ReduceMax, documented on Ascend, GPU and CPU (Tensor.max() lowers to Max,
        # which MindSpore does not document); the boxes come without gradient (batched_nms)
        span = ops.amax(ops.abs(sorted_boxes)) * 2.0 + 1.0
        offset = sorted_classes.astype(ms.float32) * span
        sorted_boxes = sorted_boxes + offset.expand_dims(-1)
    # strictly decreasing stand-in scores keep the given order on backends that sort inside
    order_score = (length - mnp.arange(length, dtype=ms.float32)).reshape(length, 1) / length
    suppress = ops.NMSWithMask(float(iou_threshold))
    keeps = []
    for image in range(batch):
        _, _, keep = suppress(ops.concat((sorted_boxes[image], order_score), 1))
        keeps.append(keep)
    return ops.stack(keeps)


def batched_nms(boxes, scores, valid, iou_threshold, max_output, classes=None, impl="native"):
    """Greedy NMS per image (and per class when classes are given).

    boxes (B, N, 4) xyxy, scores (B, N), valid (B, N) bool, classes (B, N) int or None ->
    keep_idx (B, D) int32 indices into N, in descending score order, and keep_valid (B, D) bool
    (False for slots after the last kept box; their index is 0). A box suppresses a lower-scored
    one of its class when their IoU > iou_threshold (torchvision / detectron2). Invalid boxes
    neither survive nor suppress (their boxes may hold NaN). Equal scores keep an unspecified
    order. impl: "native" (ops.NMSWithMask) or "matrix" (plain tensor ops), see the module doc.
    """
    if impl not in ("native", "matrix"):
        raise ValueError("mindseg/models/layers/nms.py: impl must be 'native' or 'matrix'")
    batch, length = scores.shape
    key = ops.where(valid, scores.astype(ms.float32), ops.full_like(scores, _NEG, dtype=ms.float32))
    _, order = ops.topk(key, length)
    order = order.astype(ms.int32)
    sorted_valid = ops.gather_elements(valid, 1, order)
    sorted_boxes = gather_rows(ops.stop_gradient(boxes).astype(ms.float32), order)
    sorted_boxes = ops.where(sorted_valid.expand_dims(-1), sorted_boxes,
                             ops.zeros_like(sorted_boxes))
    sorted_classes = None if classes is None else ops.gather_elements(classes, 1, order)
    if impl == "native" and _native_fits(length):
        keep = ops.logical_and(_native_keep(sorted_boxes, sorted_classes, iou_threshold),
                               sorted_valid)
    else:
        suppress = _suppression_matrix(sorted_boxes, sorted_classes, iou_threshold)
        keep = _greedy_keep(suppress, sorted_valid)

    count = min(max_output, length)
    position = (length - mnp.arange(length, dtype=ms.int32)).reshape(1, length)
    rank = ops.where(keep, ops.broadcast_to(position, (batch, length)), ops.zeros_like(order))
    kept_rank, kept_pos = ops.topk(rank.astype(ms.float32), count)
    keep_valid = kept_rank > 0.5
    keep_idx = ops.where(keep_valid, ops.gather_elements(order, 1, kept_pos.astype(ms.int32)),
                         ops.zeros_like(kept_pos).astype(ms.int32))
    if count < max_output:
        pad = max_output - count
        keep_idx = ops.concat((keep_idx, ops.zeros((batch, pad), ms.int32)), 1)
        keep_valid = ops.concat((keep_valid, ops.zeros((batch, pad), ms.bool_)), 1)
    return keep_idx, keep_valid


def grouped_nms(boxes, scores, valid, iou_threshold, max_output, impl="native"):
    """NMS within each group, then the best max_output survivors over all groups.

    boxes, scores, valid: lists (one entry per group, e.g. per RPN level) of (B, Ni, 4), (B, Ni),
    (B, Ni). Returns keep_idx (B, D) int32 into the concatenation of the groups and keep_valid
    (B, D). Equals batched_nms on the concatenation with the group as class (detectron2's RPN),
    at the cost of sum Ni^2 instead of (sum Ni)^2.
    """
    idx_parts, score_parts, valid_parts = [], [], []
    start = 0
    for level_boxes, level_scores, level_valid in zip(boxes, scores, valid):
        level_len = level_scores.shape[1]
        keep_idx, keep_valid = batched_nms(level_boxes, level_scores, level_valid, iou_threshold,
                                           min(max_output, level_len), impl=impl)
        idx_parts.append(keep_idx + start)
        score_parts.append(ops.where(keep_valid,
                                     ops.gather_elements(level_scores.astype(ms.float32), 1,
                                                         keep_idx),
                                     ops.full_like(keep_idx, _NEG, dtype=ms.float32)))
        valid_parts.append(keep_valid)
        start += level_len
    all_idx = ops.concat(idx_parts, 1)
    all_scores = ops.concat(score_parts, 1)
    all_valid = ops.concat(valid_parts, 1)
    count = min(max_output, all_idx.shape[1])
    _, pick = ops.topk(all_scores, count)
    pick = pick.astype(ms.int32)
    keep_idx = ops.gather_elements(all_idx, 1, pick)
    keep_valid = ops.gather_elements(all_valid, 1, pick)
    keep_idx = ops.where(keep_valid, keep_idx, ops.zeros_like(keep_idx))
    if count < max_output:
        pad = max_output - count
        batch = keep_idx.shape[0]
        keep_idx = ops.concat((keep_idx, ops.zeros((batch, pad), ms.int32)), 1)
        keep_valid = ops.concat((keep_valid, ops.zeros((batch, pad), ms.bool_)), 1)
    return keep_idx, keep_valid
