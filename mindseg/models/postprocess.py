"""Host side: network outputs (by name, :mod:`mindseg.models.outputs`) -> one image's detections
in original pixels -> COCO results. The one conversion that eval.py, infer.py, the Predictor and
the benchmarks use.

Shape shorthand: B images, D detections per image, S mask resolution (28).
"""
import numpy as np

from mindseg.models.mask_ops import mask_to_rle, paste_masks
from mindseg.models.outputs import DEFAULT_MASK_THRESHOLD


def to_original(boxes, scale, height, width):
    """boxes (D, 4) in resized pixels, scale (2,) as (h, w) resized / original -> boxes (D, 4)
    in original pixels, clipped to the image."""
    boxes = np.asarray(boxes, np.float64) / np.array([scale[1], scale[0], scale[1], scale[0]])
    return np.clip(boxes, 0, [width, height, width, height])


def image_detections(outputs, index, scale_hw, height, width, score_thresh=0.0,
                     mask_threshold=DEFAULT_MASK_THRESHOLD):
    """Image ``index`` of a batch of named outputs (``{name: (B, ...) array}``) -> its valid
    detections above ``score_thresh`` in original pixels: ``{"boxes" (N, 4) xyxy, "scores" (N,),
    "labels" (N,), "masks" (N, h, w) uint8}`` and ``"mask_scores"`` (N,) where the model scores
    masks apart from boxes; best score first."""
    boxes, scores, classes, valid = (np.asarray(outputs[k][index]) for k in ("boxes", "scores", "classes", "valid"))
    keep = np.flatnonzero(valid.astype(bool) & (scores >= score_thresh))
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    scale_hw = np.asarray(scale_hw, np.float64)
    boxes = to_original(boxes[keep], scale_hw, height, width)
    masks = paste_masks(np.asarray(outputs["mask_probs"][index])[keep], boxes, height, width, mask_threshold)
    detections = {"boxes": boxes, "scores": scores[keep].astype(np.float32),
                  "labels": classes[keep].astype(np.int64), "masks": masks}
    if "mask_scores" in outputs:
        detections["mask_scores"] = np.asarray(outputs["mask_scores"][index])[keep].astype(np.float32)
    return detections


def coco_results(detections, category_ids, image, rounded=False):
    """One image's detections as COCO result dicts: ``image`` (``{"image_id": id}``, or
    ``{"image": file name}`` for infer.py) then ``category_id`` (original id), ``bbox`` xywh,
    ``score``, ``segmentation`` (RLE, str counts) and ``segm_score`` where the model scores masks
    apart from boxes (CenterMask: evaluator.py scores segm results by it). ``rounded``: bbox to
    0.01 px and scores to 1e-5, for files people read."""
    def value(v, digits):
        return round(float(v), digits) if rounded else float(v)
    results = []
    for i, (box, score, label, mask) in enumerate(zip(detections["boxes"], detections["scores"],
                                                      detections["labels"], detections["masks"])):
        result = dict(image)
        result.update({
            "category_id": int(category_ids[int(label)]),
            "bbox": [value(v, 2) for v in (box[0], box[1], box[2] - box[0], box[3] - box[1])],
            "score": value(score, 5),
            "segmentation": mask_to_rle(mask),
        })
        if "mask_scores" in detections:
            result["segm_score"] = value(detections["mask_scores"][i], 5)
        results.append(result)
    return results


def batch_coco_results(outputs, scale, original_sizes, image_ids, category_ids,
                       mask_threshold=DEFAULT_MASK_THRESHOLD):
    """COCO results of a batch of named outputs: scale (B, 2), original_sizes (B, 2) as (h, w),
    image_ids (B,), category_ids: contiguous label -> COCO category id."""
    outputs = {name: _numpy(value) for name, value in outputs.items()}
    results = []
    for b, image_id in enumerate(image_ids):
        height, width = int(original_sizes[b][0]), int(original_sizes[b][1])
        found = image_detections(outputs, b, scale[b], height, width, mask_threshold=mask_threshold)
        results.extend(coco_results(found, category_ids, {"image_id": int(image_id)}))
    return results


def _numpy(value):
    return value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
