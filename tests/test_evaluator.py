"""COCO evaluation on a tiny ground truth made here: perfect, empty and shifted detections."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mindseg.engine.evaluator import (METRIC_NAMES, evaluate_coco, format_class_table,
                                      merge_results, write_results)

# two images, categories with non-contiguous ids; boxes xywh
GT_BOXES = [(1, 3, [10, 10, 40, 30]), (1, 7, [60, 50, 30, 40]), (2, 3, [5, 5, 50, 60])]


def _rect_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture()
def ann_file(tmp_path):
    gt = {"images": [{"id": 1, "width": 120, "height": 100, "file_name": "a.jpg"},
                     {"id": 2, "width": 80, "height": 90, "file_name": "b.jpg"}],
          "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}],
          "annotations": [{"id": i + 1, "image_id": img, "category_id": cat, "bbox": box,
                           "area": box[2] * box[3], "iscrowd": 0,
                           "segmentation": _rect_polygon(*box)}
                          for i, (img, cat, box) in enumerate(GT_BOXES)]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return str(path)


def _rle(box, height, width):
    mask = np.zeros((height, width), np.uint8, order="F")
    x, y, w, h = box
    mask[y:y + h, x:x + w] = 1
    return mask_utils.encode(np.asfortranarray(mask))  # counts as bytes, as a model gives them


def _result(img, cat, box, score=0.9):
    size = {1: (100, 120), 2: (90, 80)}[img]
    return {"image_id": img, "category_id": cat, "bbox": [float(v) for v in box], "score": score,
            "segmentation": _rle(box, *size)}


def test_perfect_detections_give_100(ann_file, tmp_path):
    results = [_result(img, cat, box) for img, cat, box in GT_BOXES]
    lines = []
    metrics = evaluate_coco(results, ann_file, output_dir=str(tmp_path / "out"), log=lines.append)
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(100.0)
        assert metrics[iou_type]["AP50"] == pytest.approx(100.0)
        assert metrics[f"{iou_type}_per_class"] == {"square": pytest.approx(100.0),
                                                    "disc": pytest.approx(100.0)}
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(saved) == {"bbox", "segm"} and set(saved["bbox"]) == set(METRIC_NAMES)
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(r["category_id"] for r in written) == [3, 3, 7]
    assert isinstance(written[0]["segmentation"]["counts"], str)
    assert any("square" in line and "100.00" in line for line in lines)


def test_no_detections_give_zero(ann_file, tmp_path):
    metrics = evaluate_coco([], ann_file, output_dir=str(tmp_path))
    assert metrics["bbox"] == {name: 0.0 for name in METRIC_NAMES}
    assert json.loads((tmp_path / "metrics.json").read_text())["segm"]["AP"] == 0.0


def test_shifted_box_gives_known_ap(tmp_path):
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
          "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                           "area": 400, "iscrowd": 0, "segmentation": _rect_polygon(10, 10, 20, 20)}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    # shifted 4 px: IoU = 16*20 / (400 + 400 - 320) = 2/3, a match at thresholds .50 .55 .60 .65
    det = {"image_id": 1, "category_id": 1, "bbox": [14.0, 10.0, 20.0, 20.0], "score": 0.8}
    metrics = evaluate_coco([det], str(path), iou_types=("bbox",))
    assert metrics["bbox"]["AP"] == pytest.approx(40.0)
    assert metrics["bbox"]["AP50"] == pytest.approx(100.0)
    assert metrics["bbox"]["AP75"] == pytest.approx(0.0)
    assert metrics["bbox"]["APs"] == pytest.approx(40.0)
    assert metrics["bbox"]["APl"] == -1.0  # no large ground truth


def test_segm_needs_segmentation(ann_file):
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_coco([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}],
                      ann_file)


def test_merge_results_across_ranks(ann_file, tmp_path):
    results = [_result(img, cat, box) for img, cat, box in GT_BOXES]
    write_results(results[:2], str(tmp_path / "results_rank0.json"))
    write_results(results[1:], str(tmp_path / "results_rank1.json"))  # result 1 on both ranks
    merged = merge_results(str(tmp_path / "results_rank*.json"))
    assert len(merged) == 3
    assert evaluate_coco(merged, ann_file, iou_types=("segm",))["segm"]["AP"] == pytest.approx(100.0)
    with pytest.raises(FileNotFoundError):
        merge_results(str(tmp_path / "nothing_*.json"))


def test_class_table_lists_every_class():
    table = format_class_table({"a": 12.345, "bb": float("nan"), "c": 1.0, "d": 50.0}, columns=3)
    assert table.splitlines()[0].split() == ["a", "12.35", "bb", "nan", "c", "1.00"]
    assert table.splitlines()[1].split() == ["d", "50.00"]


def test_inference_over_a_dataset_and_ranks_then_evaluation(ann_file, tmp_path):
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore import nn, ops
    from mindseg.engine.evaluator import gather_rank_results, infer_results
    from mindseg.runtime import RuntimeInfo

    class FixedNet(nn.Cell):
        """Returns every gt box of the image as a detection, in resized coordinates (x2)."""
        output_names = ("boxes", "scores", "classes", "valid", "mask_probs")

        def __init__(self):
            super().__init__()
            table = np.zeros((3, 2, 4), np.float32)
            for slot, (img, _, (x, y, w, h)) in enumerate(GT_BOXES):
                table[img, slot % 2] = [2 * x, 2 * y, 2 * (x + w), 2 * (y + h)]
            self.table = ms.Tensor(table)

        def construct(self, image, image_size):
            boxes = self.table[image[:, 0, 0, 0].astype(ms.int32)]
            scores = ops.ones(boxes.shape[:2], ms.float32)
            return boxes, scores, ops.zeros(boxes.shape[:2], ms.int32), boxes[..., 2] > 0, scores

    def postprocess(outputs, batch):
        boxes, scores, valid = outputs["boxes"], outputs["scores"], outputs["valid"]
        out = []
        for b, image_id in enumerate(batch["image_id"]):
            gt_cats = [cat for img, cat, _ in GT_BOXES if img == image_id]
            for d in np.flatnonzero(valid[b]):
                x0, y0, x1, y1 = boxes[b, d] / batch["scale"][b, 0]
                out.append({"image_id": int(image_id), "category_id": gt_cats[d],
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(scores[b, d])})
        return out

    def columns(image_ids=(1, 2)):
        for image_id in image_ids:
            # an image the pipeline could not read arrives as a dummy row with image_id -1
            yield (np.full((3, 4, 4), max(image_id, 0), np.float32), np.array([8, 8], np.float32),
                   np.array([2, 2], np.float32), np.int32(image_id))

    def dataset(image_ids=(1, 2)):
        return ds.GeneratorDataset(list(columns(image_ids)),
                                   ["image", "image_size", "scale", "image_id"],
                                   shuffle=False).batch(1)

    def bbox_evaluation(image_ids, output_dir):
        """What run_evaluation does, with boxes only: FixedNet's results have no masks."""
        lines = []
        results, seen = infer_results(FixedNet(), dataset(image_ids), postprocess, RuntimeInfo(),
                                      output_dir, log=lines.append)
        metrics = evaluate_coco(results, ann_file, iou_types=("bbox",), output_dir=output_dir,
                                log=lines.append, image_ids=seen)
        return metrics, lines

    metrics, lines = bbox_evaluation((1, 2), str(tmp_path / "single"))
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert any("inference: 2 images" in line for line in lines)
    assert not any("not evaluated" in line for line in lines)
    # image 2 could not be read: named, and its ground truth does not lower the AP
    metrics, lines = bbox_evaluation((1, -1), str(tmp_path / "missing"))
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert any(line.startswith("not evaluated: image 2 (b.jpg)") and "1 ground-truth" in line
               for line in lines), lines
    # two ranks: rank 1 has written its part; rank 0 adds its own and merges
    part = [{"image_id": 2, "category_id": 3, "bbox": [5.0, 5.0, 50.0, 60.0], "score": 1.0}]
    assert gather_rank_results(part, str(tmp_path / "dp"), rank=1, world=2) is None
    mine = [{"image_id": 1, "category_id": 3, "bbox": [10.0, 10.0, 40.0, 30.0], "score": 1.0}]
    merged = gather_rank_results(mine, str(tmp_path / "dp"), rank=0, world=2)
    assert sorted(r["image_id"] for r in merged) == [1, 2]


def test_segm_score_ranks_masks_and_box_score_ranks_boxes(ann_file, tmp_path):
    """CenterMask results carry a segm_score: segm AP ranks by it, bbox AP by the box score."""
    results = [_result(img, cat, box) for img, cat, box in GT_BOXES[:2]]
    good_box_bad_mask = _result(2, 3, [5, 5, 50, 60], score=0.9)
    good_box_bad_mask["segmentation"] = _rle([40, 50, 30, 30], 90, 80)
    bad_box_good_mask = _result(2, 3, [30, 40, 40, 40], score=0.8)
    bad_box_good_mask["segmentation"] = _rle([5, 5, 50, 60], 90, 80)
    plain = results + [good_box_bad_mask, bad_box_good_mask]
    metrics = evaluate_coco(plain, ann_file, output_dir=str(tmp_path / "a"))
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert metrics["segm"]["AP"] < 95.0  # the wrong mask ranks first for its image (91.7)

    rescored = [dict(r, segm_score=r["score"]) for r in results]
    rescored += [dict(good_box_bad_mask, segm_score=0.1), dict(bad_box_good_mask, segm_score=0.95)]
    metrics = evaluate_coco(rescored, ann_file, output_dir=str(tmp_path / "b"))
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert metrics["segm"]["AP"] == pytest.approx(100.0)


def test_ground_truth_is_what_the_loader_keeps(ann_file, tmp_path):
    """A second entry for image 2 (another size) is skipped, as the data loader skips it, and
    annotation id 2 given twice keeps both annotations: the ground truth fed back as results
    scores 100 (pycocotools' own reading of the file scores the masks of image 2 at the
    second entry's size and loses an annotation of image 1)."""
    with open(ann_file) as f:
        gt = json.load(f)
    gt["images"].append({"id": 2, "width": 70, "height": 60, "file_name": "c.jpg"})
    gt["annotations"][2]["id"] = 2
    path = tmp_path / "duplicates.json"
    path.write_text(json.dumps(gt))
    results = [_result(img, cat, box) for img, cat, box in GT_BOXES]
    lines = []
    metrics = evaluate_coco(results, str(path), log=lines.append)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert metrics["segm"]["AP"] == pytest.approx(100.0)
    assert [line for line in lines if "data loader" in line] == [
        f"COCOeval's ground truth keeps what the data loader keeps of {path} (2 problems "
        f"skipped: 1 bad image entry, 1 duplicate annotation id)"]
