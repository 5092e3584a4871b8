"""scripts/class_diagnostics.py: class-aware against class-agnostic AP and the confusion matrix,
on one hand-computed image."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import class_diagnostics as cd  # noqa: E402

# one 100x100 image: objects of class 1 ("a") and 2 ("b"), a class-1 crowd region in a corner
GT = {"images": [{"id": 7, "width": 100, "height": 100, "file_name": "x.jpg"}],
      "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
      "annotations": [
          {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
          {"id": 2, "image_id": 7, "category_id": 2, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0},
          {"id": 3, "image_id": 7, "category_id": 2, "bbox": [0, 60, 10, 10], "area": 100, "iscrowd": 0},
          {"id": 4, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1}]}
RESULTS = [
    {"image_id": 7, "category_id": 2, "bbox": [10, 10, 20, 20], "score": 0.9},  # object 1, wrong class
    {"image_id": 7, "category_id": 2, "bbox": [51, 51, 30, 30], "score": 0.8},  # object 2, IoU 841/959
    {"image_id": 7, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.4},  # object 1, right class
    {"image_id": 7, "category_id": 1, "bbox": [80, 0, 10, 10], "score": 0.3}]   # nothing there


def test_confusion_matrix_by_hand():
    # object 1: the 0.9 box of class b beats the 0.4 one of class a; object 2: class b;
    # object 3: no box overlaps it; the crowd region is not counted
    counts = cd.confusion_matrix(GT, RESULTS)
    np.testing.assert_array_equal(counts, [[0, 1, 0], [0, 1, 1]])
    assert cd.top1_accuracy(counts) == 0.5
    # object 2's box has IoU 0.877 with its detection: at 0.9 that detection no longer finds it
    np.testing.assert_array_equal(cd.confusion_matrix(GT, RESULTS, iou=0.9), [[0, 1, 0], [0, 0, 2]])


def test_merge_categories_keeps_each_images_best():
    merged_gt, merged = cd.merge_categories(GT, RESULTS, max_dets=2)
    assert [c["id"] for c in merged_gt["categories"]] == [1]
    assert {a["category_id"] for a in merged_gt["annotations"]} == {1}
    assert [(d["score"], d["category_id"]) for d in merged] == [(0.9, 1), (0.8, 1)]
    assert GT["annotations"][1]["category_id"] == 2 and RESULTS[0]["category_id"] == 2  # inputs kept


def test_class_aware_and_agnostic_ap_by_hand(tmp_path):
    # COCO AP: 10 IoU thresholds, precision at 101 recall points.
    # Class a: its one object found first by the 0.4 box, at every threshold -> AP 1.
    # Class b: the 0.9 box is a false positive, the 0.8 one finds 1 of 2 objects at IoU <= 0.85
    # (precision 0.5 up to recall 0.5: 51 points) -> (8 x 51 x 0.5 / 101) / 10.
    aware = (1.0 + 8 * 51 * 0.5 / 101 / 10) / 2
    # Merged: 3 objects; the 0.9 and 0.8 boxes find two at IoU <= 0.85 (precision 1 up to recall
    # 2/3: 67 points), only the first at 0.9 and 0.95 (34 points); the rest are false positives.
    agnostic = (8 * 67 + 2 * 34) / 101 / 10
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(GT))
    assert cd.class_aps(str(ann), RESULTS)["bbox"] == pytest.approx((100 * aware, 100 * agnostic), abs=1e-6)
    # with the class of the 0.9 box right, class-aware AP rises: the classifier's cost
    fixed = [dict(RESULTS[0], category_id=1)] + RESULTS[1:]
    assert cd.class_aps(str(ann), fixed)["bbox"][0] > 100 * aware + 10


def test_script_prints_both_aps_and_names_a_bad_file(tmp_path, capsys):
    ann, res = tmp_path / "ann.json", tmp_path / "results.json"
    ann.write_text(json.dumps(GT))
    res.write_text(json.dumps(RESULTS))
    assert cd.main(["--ann", str(ann), "--results", str(res)]) == 0
    out = capsys.readouterr().out
    assert f"class-aware AP {100 * (1.0 + 8 * 51 * 0.5 / 101 / 10) / 2:.2f}" in out
    assert "segm" not in out  # no segmentation in the results
    assert "right class for 50% of 2 found objects; 1 missed" in out
    res.write_text("[{")
    assert cd.main(["--ann", str(ann), "--results", str(res)]) == 2
    assert str(res) in capsys.readouterr().err
