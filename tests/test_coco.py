"""COCO reading: category mapping, crowd and empty-image handling, bad-input detection."""
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mindseg.dataset.coco import CocoDataset, DataError, coco_paths, drop_crowd, problem_kind
from mindseg.dataset.image_bytes import check_image_bytes

H, W = 48, 64
CATEGORIES = [{"id": 12, "name": "cat_c"}, {"id": 3, "name": "cat_a"},
              {"id": 7, "name": "cat_b"}, {"id": 20, "name": "unused"}]
SQUARE = [10.0, 5.0, 30.0, 5.0, 30.0, 20.0, 10.0, 20.0]
BAD_KINDS = ("missing image file", "unknown image id", "unknown category id", "zero-width box",
             "short polygon", "corrupt jpeg", "truncated jpeg")


def jpeg_bytes(seed, height=H, width=W):
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (width, height))
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def crowd_rle():
    """An uncompressed RLE (as COCO stores crowd regions) covering rows 30..39 of columns 0..9."""
    mask = np.zeros((H, W), np.uint8)
    mask[30:40, 0:10] = 1
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}, mask


def make_coco(root, bad=(), split="train2017"):
    """A tiny COCO 2017-layout dataset; ``bad`` adds the named bad inputs (see BAD_KINDS).

    Good images: 1 (polygon cat 7 + crowd cat 3), 2 (two-part polygon cat 12 + compressed RLE
    cat 3), 3 (no annotations), 4 (only a crowd annotation). Returns ``(dataset_dir, split)``.
    """
    ann_file, image_dir = coco_paths(str(root), split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.dirname(ann_file), exist_ok=True)
    images, anns = [], []

    def add_image(image_id, file_name, data=None):
        images.append({"id": image_id, "file_name": file_name, "height": H, "width": W})
        if data is not None:
            with open(os.path.join(image_dir, file_name), "wb") as f:
                f.write(data)

    def add_ann(image_id, category_id, bbox, segmentation, iscrowd=0):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": category_id,
                     "bbox": bbox, "segmentation": segmentation, "iscrowd": iscrowd,
                     "area": float(bbox[2] * bbox[3])})

    rle, _ = crowd_rle()
    mask = np.zeros((H, W), np.uint8, order="F")
    mask[2:12, 40:60] = 1
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed["counts"] = compressed["counts"].decode("ascii")

    add_image(1, "000001.jpg", jpeg_bytes(1))
    add_ann(1, 7, [10, 5, 20, 15], [SQUARE])
    add_ann(1, 3, [0, 30, 10, 10], rle, iscrowd=1)
    add_image(2, "000002.jpg", jpeg_bytes(2))
    add_ann(2, 12, [1.5, 2.25, 40, 30], [SQUARE, [1.5, 2.25, 41.5, 2.25, 20.0, 32.25]])
    add_ann(2, 3, [40, 2, 20, 10], compressed)
    add_image(3, "000003.jpg", jpeg_bytes(3))
    add_image(4, "000004.jpg", jpeg_bytes(4))
    add_ann(4, 7, [0, 30, 10, 10], rle, iscrowd=1)

    if "missing image file" in bad:
        add_image(5, "missing.jpg")
        add_ann(5, 7, [10, 5, 20, 15], [SQUARE])
    if "zero-width box" in bad:
        add_image(6, "000006.jpg", jpeg_bytes(6))
        add_ann(6, 7, [10, 5, 0, 15], [SQUARE])
        add_ann(6, 7, [10, 5, 20, 15], [SQUARE])
    if "short polygon" in bad:
        add_image(7, "000007.jpg", jpeg_bytes(7))
        add_ann(7, 12, [10, 5, 20, 15], [[10.0, 5.0, 30.0, 20.0]])
        add_ann(7, 12, [10, 5, 20, 15], [SQUARE, [1.0, 1.0, 2.0, 2.0]])
    if "unknown image id" in bad:
        add_ann(999, 7, [10, 5, 20, 15], [SQUARE])
    if "unknown category id" in bad:
        add_ann(1, 99, [10, 5, 20, 15], [SQUARE])
    if "corrupt jpeg" in bad:
        add_image(8, "corrupt.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg" * 20)
        add_ann(8, 7, [10, 5, 20, 15], [SQUARE])
    if "truncated jpeg" in bad:
        data = jpeg_bytes(9)
        add_image(9, "truncated.jpg", data[:len(data) // 2])
        add_ann(9, 7, [10, 5, 20, 15], [SQUARE])

    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": anns, "categories": CATEGORIES}, f)
    return str(root), split


def load(root, **kwargs):
    return CocoDataset(*coco_paths(root, "train2017"), **kwargs)


def by_id(dataset):
    return {r["image_id"]: r for r in dataset.records}


def test_category_mapping_non_contiguous_ids_and_back(tmp_path):
    dataset = load(make_coco(tmp_path)[0])
    assert dataset.category_ids == [3, 7, 12, 20]
    assert dataset.class_names == ["cat_a", "cat_b", "cat_c", "unused"]
    assert [dataset.label_to_category_id(label) for label in range(4)] == [3, 7, 12, 20]
    assert [dataset.category_id_to_label(cid) for cid in (3, 7, 12, 20)] == [0, 1, 2, 3]
    records = by_id(dataset)
    assert records[1]["labels"].tolist() == [1]  # category 7
    assert records[2]["labels"].tolist() == [2, 0]  # categories 12, 3


def test_num_classes_from_file_includes_unused_category(tmp_path):
    dataset = load(make_coco(tmp_path)[0])
    assert dataset.num_classes == 4


def test_boxes_xywh_to_xyxy_and_segms(tmp_path):
    records = by_id(load(make_coco(tmp_path)[0]))
    np.testing.assert_array_equal(records[1]["boxes"], np.array([[10, 5, 30, 20]], np.float32))
    np.testing.assert_array_equal(records[2]["boxes"][0], [1.5, 2.25, 41.5, 32.25])
    assert records[1]["boxes"].dtype == np.float32 and records[1]["labels"].dtype == np.int32
    assert records[1]["segms"] == [[SQUARE]]
    assert len(records[2]["segms"][0]) == 2
    rle = records[2]["segms"][1]
    assert isinstance(rle["counts"], bytes) and rle["size"] == [H, W]
    assert mask_utils.decode(rle)[2:12, 40:60].all() and mask_utils.decode(rle).sum() == 200
    assert os.path.isabs(records[1]["file_path"])


def test_crowd_drop_and_ignore(tmp_path):
    root = make_coco(tmp_path)[0]
    dropped = by_id(load(root, crowd="drop"))
    assert dropped[1]["iscrowd"].tolist() == [0] and dropped[1]["labels"].tolist() == [1]
    ignored = by_id(load(root, crowd="ignore"))
    assert ignored[1]["iscrowd"].tolist() == [0, 1]
    assert ignored[1]["labels"].tolist() == [1, 0]
    np.testing.assert_array_equal(ignored[1]["boxes"][1], [0, 30, 10, 40])
    crowd = ignored[1]["segms"][1]
    assert isinstance(crowd["counts"], bytes)  # uncompressed RLE compressed on load
    np.testing.assert_array_equal(mask_utils.decode(crowd), crowd_rle()[1])
    # the record helper gives the same as dropping at load time
    again = drop_crowd(ignored[1])
    np.testing.assert_array_equal(again["boxes"], dropped[1]["boxes"])
    assert again["segms"] == dropped[1]["segms"]


def test_empty_images_skipped_by_default_kept_on_request(tmp_path):
    root = make_coco(tmp_path)[0]
    dataset = load(root)
    assert sorted(by_id(dataset)) == [1, 2]  # 3 has nothing, 4 only a crowd region
    assert dataset.num_empty == 2
    assert sorted(by_id(load(root, crowd="ignore"))) == [1, 2]
    everything = load(root, filter_empty=False)
    assert sorted(by_id(everything)) == [1, 2, 3, 4]
    assert by_id(everything)[3]["boxes"].shape == (0, 4)
    assert by_id(everything)[3]["segms"] == []
    assert dataset.problems == []


LOAD_TIME_BAD = {  # kind -> image id, file name, problem kind, problems, annotations left
    "missing image file": (5, "missing.jpg", "missing image file", 1, None),
    "unknown image id": (999, "<unknown image>", "unknown image id", 1, None),
    "unknown category id": (1, "000001.jpg", "unknown category id", 1, 1),
    "zero-width box": (6, "000006.jpg", "bad box", 1, 1),
    "short polygon": (7, "000007.jpg", "bad polygon", 2, 1),
}


@pytest.mark.parametrize("kind", sorted(LOAD_TIME_BAD))
def test_bad_input_named_and_skipped(tmp_path, kind):
    image_id, file_name, problem, count, survivors = LOAD_TIME_BAD[kind]
    dataset = load(make_coco(tmp_path, bad=[kind])[0])
    assert len(dataset.problems) == count, dataset.problems
    for found in dataset.problems:
        assert (found.image_id, found.file_name, problem_kind(found)) == \
            (image_id, file_name, problem)
        assert str(found).startswith(f"image {image_id} ({file_name}): {problem}")
    assert dataset.summary() == f"{count} problems skipped: {count} {problem}"
    records = by_id(dataset)
    if survivors is not None:
        assert len(records[image_id]["labels"]) == survivors
    elif kind == "missing image file":
        assert image_id not in records
    assert {1, 2} <= set(records)  # good images (and image 1's good annotation) kept


def test_short_polygon_drops_only_the_bad_part(tmp_path):
    records = by_id(load(make_coco(tmp_path, bad=["short polygon"])[0]))
    assert records[7]["segms"] == [[SQUARE]]  # first ann had only the bad part: dropped


@pytest.mark.parametrize("kind", sorted(LOAD_TIME_BAD))
def test_bad_input_raises_in_strict_mode(tmp_path, kind):
    image_id, file_name = LOAD_TIME_BAD[kind][:2]
    with pytest.raises(DataError) as err:
        load(make_coco(tmp_path, bad=[kind])[0], strict=True)
    assert f"image {image_id} ({file_name})" in str(err.value)


def test_all_load_time_problems_counted_together(tmp_path):
    dataset = load(make_coco(tmp_path, bad=BAD_KINDS)[0])
    expected = sum(entry[3] for entry in LOAD_TIME_BAD.values())
    assert len(dataset.problems) == expected  # decoding is conversion's job
    assert sorted(by_id(dataset)) == [1, 2, 6, 7, 8, 9]


def test_check_image_bytes():
    good = jpeg_bytes(0)
    assert check_image_bytes(good) is None
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert check_image_bytes(png.tobytes()) is None
    assert "empty" in check_image_bytes(b"")
    assert "not a known image format" in check_image_bytes(b"hello" * 100)
    for cut in (2, 100, len(good) // 2):
        assert "truncated" in check_image_bytes(good[:-cut]), cut
    corrupt = bytearray(good)
    corrupt[2:40] = b"\x00" * 38  # header destroyed
    assert check_image_bytes(bytes(corrupt)) is not None


def test_bad_annotation_file_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        CocoDataset(str(tmp_path / "nothing.json"), str(tmp_path))
    path = tmp_path / "dup.json"
    path.write_text(json.dumps({"images": [], "categories": [{"id": 1}, {"id": 1}]}))
    with pytest.raises(DataError, match="category id 1 appears twice"):
        CocoDataset(str(path), str(tmp_path))
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DataError, match="'categories' is empty"):
        CocoDataset(str(path), str(tmp_path))


def test_read_image_bytes_is_the_file(tmp_path):
    dataset = load(make_coco(tmp_path)[0])
    record = by_id(dataset)[2]
    assert dataset.read_image_bytes(record) == jpeg_bytes(2)


def _boxes_dataset(root, boxes):
    """Image 1 (W x H) with one polygon annotation per ``[x, y, w, h]`` box of ``boxes``."""
    ann_file, image_dir = coco_paths(str(root), "train2017")
    os.makedirs(image_dir)
    os.makedirs(os.path.dirname(ann_file))
    with open(os.path.join(image_dir, "000001.jpg"), "wb") as f:
        f.write(jpeg_bytes(1))
    anns = [{"id": k + 1, "image_id": 1, "category_id": 7, "bbox": box, "iscrowd": 0,
             "segmentation": [SQUARE], "area": 1.0} for k, box in enumerate(boxes)]
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump({"images": [{"id": 1, "file_name": "000001.jpg", "height": H, "width": W}],
                   "annotations": anns, "categories": CATEGORIES}, f)
    return str(root)


def test_boxes_outside_the_image_are_clipped_or_dropped_and_reported(tmp_path):
    inside = [10, 5, 20, 15]
    partly = [50, 40, 30, 20]            # reaches 16 px right of and 12 px below the 64x48 image
    wholly = [70, 10, 10, 10]            # starts right of the image
    rounding = [0, 0, W + 0.4, H + 0.2]  # annotation-tool rounding: clipped, not reported
    dataset = load(_boxes_dataset(tmp_path, [inside, partly, wholly, rounding]))
    boxes = by_id(dataset)[1]["boxes"]
    np.testing.assert_allclose(boxes, [[10, 5, 30, 20], [50, 40, W, H], [0, 0, W, H]])
    kinds = [problem_kind(p) for p in dataset.problems]
    assert kinds == ["clipped box", "box outside image"]
    clipped, outside = (str(p) for p in dataset.problems)
    assert clipped.startswith("image 1 (000001.jpg): clipped box") and "annotation 2" in clipped
    assert "kept as [50.0, 40.0, 14.0, 8.0]" in clipped
    assert outside.startswith("image 1 (000001.jpg): box outside image") and "annotation 3" in outside
    assert "dropped" in outside
    gt_boxes = {a["id"]: a["bbox"] for a in dataset.ground_truth()["annotations"]}
    assert gt_boxes == {1: inside, 2: [50.0, 40.0, 14.0, 8.0], 4: rounding}  # as the records
    for box in (partly, wholly):
        with pytest.raises(DataError, match="image 1 \\(000001.jpg\\)"):
            load(_boxes_dataset(tmp_path / str(box[0]), [inside, box]), strict=True)


def test_problem_report_names_and_counts(tmp_path):
    """The lines train.py / eval.py print, with the counted summary convert_coco.py prints."""
    from mindseg.dataset.problems import report_problems
    dataset = load(make_coco(tmp_path, bad=["missing image file", "zero-width box"])[0])
    lines = []
    report_problems(dataset.problems, lines.append)
    assert lines[0] == "skipped: image 5 (missing.jpg): missing image file: " + \
        os.path.join(str(tmp_path), "train2017", "missing.jpg")
    assert lines[1].startswith("skipped: image 6 (000006.jpg): bad box")
    assert lines[2] == "skipped: 1 images, 2 problems (1 missing image file, 1 bad box)"


def test_duplicate_annotation_ids_are_named_kept_and_renumbered_for_cocoeval(tmp_path):
    root, _ = make_coco(tmp_path, bad=["zero-width box", "short polygon"])
    ann_file = coco_paths(root, "train2017")[0]
    with open(ann_file, encoding="utf-8") as f:
        data = json.load(f)
    data["annotations"][2]["id"] = 1  # image 2's polygon reuses image 1's annotation id
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump(data, f)
    dataset = load(root, crowd="ignore", filter_empty=False)
    duplicate = [str(p) for p in dataset.problems if problem_kind(p) == "duplicate annotation id"]
    assert duplicate == ["image 2 (000002.jpg): duplicate annotation id: annotation 1 appears "
                         "more than once; both kept, this one under a new id for COCOeval"]
    assert len(by_id(dataset)[2]["segms"]) == 2  # the annotation is not lost
    gt = dataset.ground_truth()
    ids = [a["id"] for a in gt["annotations"]]
    assert len(ids) == len(set(ids)) and max(ids) == len(data["annotations"]) + 1
    renumbered = [a for a in gt["annotations"] if a["id"] == max(ids)]
    assert renumbered[0]["image_id"] == 2 and renumbered[0]["bbox"] == [1.5, 2.25, 40, 30]
    # what the loader dropped is not in the ground truth: the zero-width box, the short polygon
    # and the bad part of a two-part polygon
    assert sum(a["image_id"] == 6 for a in gt["annotations"]) == 1
    seven = [a["segmentation"] for a in gt["annotations"] if a["image_id"] == 7]
    assert seven == [[SQUARE]]
    assert [i["id"] for i in gt["images"]] == [1, 2, 3, 4, 6, 7]
    with pytest.raises(DataError, match="image 2 \\(000002.jpg\\): duplicate annotation id"):
        load(root, strict=True)


def test_problem_list_that_cannot_be_written_is_said_in_the_summary(tmp_path):
    from mindseg.dataset.problems import report_problems
    dataset = load(make_coco(tmp_path, bad=["zero-width box"])[0])
    (tmp_path / "taken").write_text("a file, not a folder")
    lines = []
    report_problems(dataset.problems, lines.append, str(tmp_path / "taken" / "problems.txt"))
    assert lines[-1].startswith("skipped: 0 images, 1 problems (1 bad box); the full list could "
                                f"not be written to {tmp_path / 'taken' / 'problems.txt'}: ")
