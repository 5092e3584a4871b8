"""How many ground-truth objects a model finds, and names right, at one score threshold: the count
a person checks on a drawing, beside COCO AP which averages over every threshold."""
import numpy as np
import pycocotools.mask as mask_util


def _rle(segmentation, height, width):
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_util.frPyObjects(segmentation, height, width)
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def count_found(coco_gt, results, score_thresh, iou_thresh=0.5):
    """Count the non-crowd objects of ``coco_gt`` (a pycocotools COCO) that the ``results`` (COCO
    result dicts) scored >= ``score_thresh`` find, and name right.

    An object is found when a detection of its image overlaps it at IoU >= ``iou_thresh`` (mask
    IoU when every result has a ``segmentation``, box IoU otherwise), and right when the
    best-scoring of those detections names its category, as scripts/class_diagnostics.py judges:
    a model that scores each class on its own (FCOS, the point heatmap) often outputs one box
    under two classes, and the higher score is the name it gives. Returns ``(found, total, right)``.
    """
    use_masks = all("segmentation" in r for r in results)
    by_image = {}
    for res in results:
        if res["score"] >= score_thresh:
            by_image.setdefault(int(res["image_id"]), []).append(res)
    found = total = right = 0
    for image_id in coco_gt.getImgIds():
        anns = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id]))
                if not a.get("iscrowd", 0)]
        total += len(anns)
        dets = by_image.get(int(image_id), [])
        if not anns or not dets:
            continue
        info = coco_gt.imgs[image_id]
        height, width = int(info["height"]), int(info["width"])
        if use_masks:
            gts = [coco_gt.annToRLE(a) for a in anns]
            dts = [_rle(d["segmentation"], height, width) for d in dets]
        else:
            gts = [list(map(float, a["bbox"])) for a in anns]
            dts = [list(map(float, d["bbox"])) for d in dets]
        ious = np.asarray(mask_util.iou(dts, gts, [0] * len(gts))).reshape(len(dts), len(gts))
        scores = np.array([d["score"] for d in dets], np.float64)
        for g, ann in enumerate(anns):
            overlapping = np.flatnonzero(ious[:, g] >= iou_thresh)
            if len(overlapping):
                found += 1
                named = overlapping[np.argmax(scores[overlapping])]
                right += int(dets[named]["category_id"]) == int(ann["category_id"])
    return found, total, right


def found_line(ann_file, results, score_thresh, iou_thresh=0.5):
    """The count of ``count_found`` on the annotation file ``ann_file`` (read as the data loader
    and the evaluator keep it) as the line eval.py prints: ``found N of M val objects, K with the
    right class (...)``."""
    from mindseg.engine.evaluator import coco_ground_truth
    coco_gt = coco_ground_truth(ann_file, log=lambda *args: None)
    found, total, right = count_found(coco_gt, results, score_thresh, iou_thresh)
    return (f"found {found} of {total} val objects, {right} with the right class "
            f"(IoU >= {iou_thresh:g}, score >= {score_thresh:g})")
