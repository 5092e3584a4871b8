"""Host side: a batch of model outputs -> per-image detections in original pixels -> COCO results.

Shape shorthand: B images, D detections per image, S mask resolution (28).
"""
import numpy as np

from mindseg.models.mask_ops import mask_to_rle, paste_masks


def to_original(boxes, scale, height, width):
    """boxes (D, 4) in resized pixels, scale (2,) as (h, w) resized / original -> boxes (D, 4)
    in original pixels, clipped to the image."""
    boxes = np.asarray(boxes, np.float64) / np.array([scale[1], scale[0], scale[1], scale[0]])
    return np.clip(boxes, 0, [width, height, width, height])


def detections_to_coco(outputs, scale, original_sizes, image_ids, category_ids, mask_threshold=0.5,
                       with_masks=True):
    """outputs: the inference tuple (boxes (B, D, 4), scores (B, D), classes (B, D), valid (B, D),
    mask_probs (B, D, S, S)[, mask_scores (B, D)]) as numpy or Tensors; scale (B, 2);
    original_sizes (B, 2) as (h, w); image_ids (B,); category_ids: contiguous label -> COCO category id.

    Returns a list of COCO result dicts {image_id, category_id, bbox xywh, score, segmentation}.
    A model with a separate segm score (CenterMask: box score x predicted mask IoU) returns it as a
    6th output; its results then also carry ``segm_score``, the score of the segm result.
    """
    boxes, scores, classes, valid, mask_probs = (_numpy(x) for x in outputs[:5])
    segm_scores = _numpy(outputs[5]) if len(outputs) > 5 else None
    results = []
    for b in range(boxes.shape[0]):
        keep = valid[b].astype(bool)
        if not keep.any():
            continue
        height, width = int(original_sizes[b][0]), int(original_sizes[b][1])
        image_boxes = to_original(boxes[b][keep], np.asarray(scale[b], np.float64), height, width)
        masks = paste_masks(mask_probs[b][keep], image_boxes, height, width, mask_threshold) if with_masks else None
        image_segm_scores = segm_scores[b][keep] if segm_scores is not None else None
        for i, (box, score, label) in enumerate(zip(image_boxes, scores[b][keep], classes[b][keep])):
            result = {"image_id": int(image_ids[b]), "category_id": int(category_ids[int(label)]),
                      "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                      "score": float(score)}
            if with_masks:
                result["segmentation"] = mask_to_rle(masks[i])
                if image_segm_scores is not None:
                    result["segm_score"] = float(image_segm_scores[i])
            results.append(result)
    return results


def _numpy(value):
    return value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
