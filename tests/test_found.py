"""count_found: each val object found by the detections overlapping it at a score threshold and
named by the best-scoring of them, on a hand-computed image."""
import contextlib
import io
import json

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from mindseg.engine.found import count_found, found_line


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _box(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


def _mask(rows, cols):
    mask = np.zeros((10, 10), bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


# objects: a 4x4 square (category 1), a 5x5 square (3), a 2x3 strip (7), a crowd region (1)
OBJECTS = [((0, 4), (0, 4), 1, 0), ((5, 10), (5, 10), 3, 0), ((0, 2), (7, 10), 7, 0),
           ((8, 10), (0, 2), 1, 1)]
# detections: the square exactly (right class); 20 of the 5x5 square's 25 pixels (IoU 0.8, wrong
# class); the 5x5 square exactly but scored 0.2 (right class); 2 of the strip's 6 pixels (IoU 1/3)
DETECTIONS = [((0, 4), (0, 4), 1, 0.9), ((5, 10), (5, 9), 7, 0.6), ((5, 10), (5, 10), 3, 0.2),
              ((0, 1), (7, 9), 7, 0.95)]


def _coco():
    anns = []
    for k, (rows, cols, cat, crowd) in enumerate(OBJECTS):
        mask = _mask(rows, cols)
        anns.append({"id": k + 1, "image_id": 5, "category_id": cat, "iscrowd": crowd,
                     "segmentation": _rle(mask), "area": float(mask.sum()), "bbox": _box(mask)})
    dataset = {"images": [{"id": 5, "file_name": "a.jpg", "height": 10, "width": 10},
                          {"id": 6, "file_name": "b.jpg", "height": 10, "width": 10}],
               "annotations": anns,
               "categories": [{"id": c, "name": str(c)} for c in (1, 3, 7)]}
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, dataset


def _results(with_masks=True):
    results = []
    for rows, cols, cat, score in DETECTIONS:
        mask = _mask(rows, cols)
        res = {"image_id": 5, "category_id": cat, "score": score, "bbox": _box(mask)}
        if with_masks:
            res["segmentation"] = _rle(mask)
        results.append(res)
    # a confident detection on the image without objects counts for nothing
    results.append({**results[0], "image_id": 6})
    return results


def test_count_found_hand_case():
    coco, _ = _coco()
    results = _results()
    # the crowd region is not an object to find: 3 objects
    assert count_found(coco, results, 0.5) == (2, 3, 1)
    # at 0.1 the exact, right-class detection of the 5x5 square (0.2) overlaps it too, but the
    # wrong-class one scored 0.6 names it
    assert count_found(coco, results, 0.1) == (2, 3, 1)
    # at 0.9 the square and the strip's poor detection are left
    assert count_found(coco, results, 0.9) == (1, 3, 1)
    assert count_found(coco, results, 0.96) == (0, 3, 0)
    # a stricter IoU loses the 5x5 square's IoU-0.8 match
    assert count_found(coco, results, 0.5, iou_thresh=0.85) == (1, 3, 1)
    # IoU 1/3 counts at a lenient threshold
    assert count_found(coco, results, 0.5, iou_thresh=0.3) == (3, 3, 2)
    assert count_found(coco, [], 0.5) == (0, 3, 0)


def test_one_box_under_two_classes_is_named_by_the_higher_score():
    """A dense head's two classes on one box: the same IoU, so the name is the higher score's,
    whichever comes first in the results."""
    coco, _ = _coco()
    square = _results()[0]  # the 4x4 square exactly, category 1
    for right_score, wrong_score, named_right in ((0.8, 0.6, 1), (0.6, 0.8, 0)):
        results = [{**square, "category_id": 3, "score": wrong_score}, {**square, "score": right_score}]
        assert count_found(coco, results, 0.5) == (1, 3, named_right)
        assert count_found(coco, results[::-1], 0.5) == (1, 3, named_right)


def test_count_found_with_boxes_only():
    coco, _ = _coco()
    # the rectangles' boxes are their masks: the same count from box IoU
    assert count_found(coco, _results(with_masks=False), 0.5) == (2, 3, 1)


def test_found_line_reads_the_annotation_file(tmp_path):
    _, dataset = _coco()
    ann_file = tmp_path / "instances_val2017.json"
    ann_file.write_text(json.dumps(dataset))
    assert found_line(str(ann_file), _results(), 0.5) == \
        "found 2 of 3 val objects, 1 with the right class (IoU >= 0.5, score >= 0.5)"
