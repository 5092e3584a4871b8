"""Detections of CenterMask (point representation) from its heads (device, static shapes).

Shape shorthand as in ``targets.py``; D detections per image (``max_detections``, 100).
Peaks are the heatmap probabilities equal to their 3x3 max-pool; the top D over classes and
locations are kept, those above ``score_thresh`` valid. A box is centred at (pixel + offset) with
the predicted size, in output pixels times the stride, clipped to the image. Its mask is the
product of local shape and class saliency (``masks.py``) on the box grid; the host pastes it into
the box and thresholds it at the model's ``mask_threshold`` (0.4).
"""
import mindspore as ms
import mindspore.ops as ops

from mindseg.models import box_ops
from mindseg.models.centermask_point.masks import assemble_masks, gather_at


def heatmap_peaks(heatmap_logits, max_detections):
    """(B, K, Ho, Wo) logits -> scores (B, D), classes (B, D) int32, index (B, D) int32 (flat
    ``y * Wo + x``) of the top-D 3x3 local maxima of the probabilities."""
    batch, num_classes, out_h, out_w = heatmap_logits.shape
    prob = ops.sigmoid(heatmap_logits)
    pooled = ops.max_pool2d(prob, kernel_size=3, stride=1, padding=1)
    peaks = prob * (pooled == prob).astype(prob.dtype)
    scores, flat = ops.topk(peaks.reshape(batch, -1), max_detections)
    flat = flat.astype(ms.int32)
    classes = flat // (out_h * out_w)
    return scores, classes, flat - classes * (out_h * out_w)


def point_inference(heads, image_size, *, stride, max_detections, score_thresh, resolution):
    """heads: the five head outputs -> boxes (B, D, 4), scores (B, D), classes (B, D) int32,
    valid (B, D) bool, mask_probs (B, D, R, R): M = sigmoid(shape) x sigmoid(saliency)."""
    heatmap_logits, pred_offset, pred_size, shape_logits, saliency_logits = heads
    out_w = heatmap_logits.shape[3]
    scores, classes, index = heatmap_peaks(heatmap_logits, max_detections)
    offset = gather_at(pred_offset, index)
    size = gather_at(pred_size, index)
    rows = index // out_w
    ys = rows.astype(ms.float32)
    xs = (index - rows * out_w).astype(ms.float32)
    cx, cy = xs + offset[..., 0], ys + offset[..., 1]
    half_w, half_h = size[..., 0] / 2, size[..., 1] / 2
    boxes = ops.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1) * stride
    boxes = box_ops.clip_boxes(boxes, image_size)
    valid = ops.logical_and(scores > score_thresh, box_ops.nonempty(boxes))
    shapes, saliency = assemble_masks(shape_logits, saliency_logits, index, classes, boxes, stride=stride,
                                      resolution=resolution)
    return boxes, scores, classes, valid, ops.sigmoid(shapes) * ops.sigmoid(saliency)
