"""The synthetic COCO dataset: valid for pycocotools, exact masks, every annotation kind present,
deterministic; in the distinct style, classes a colour statistic tells apart."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mindseg.dataset import synthetic
from mindseg.dataset.synthetic import (CATEGORY_IDS, CLASS_NAMES, decode_segmentation,
                                       generate_split, make_synthetic_coco, mask_to_polygons)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    info = make_synthetic_coco(out, num_train=64, num_val=16, seed=0, image_size=256)
    return out, info


@pytest.fixture(scope="module")
def cocos(dataset_dir):
    out, _ = dataset_dir
    return {split: COCO(str(out / "annotations" / f"instances_{split}.json"))
            for split in synthetic.SPLITS}


def _all_anns(coco):
    return coco.loadAnns(coco.getAnnIds())


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])


def test_mask_to_polygons_hand_case():
    # L shape: pixels (x, y) = (0, 0), (1, 0), (0, 1); its outline runs along pixel edges.
    mask = np.zeros((4, 5), bool)
    mask[0, 0:2] = True
    mask[1, 0] = True
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1
    corners = {tuple(p) for p in np.array(polygons[0]).reshape(-1, 2)}
    assert {(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)} <= corners
    np.testing.assert_array_equal(decode_segmentation(polygons, 4, 5), mask)

    two_parts = np.zeros((6, 8), bool)
    two_parts[1:3, 1:3] = True
    two_parts[3:6, 5:8] = True
    polygons = mask_to_polygons(two_parts)
    assert len(polygons) == 2
    np.testing.assert_array_equal(decode_segmentation(polygons, 6, 8), two_parts)


def test_uncompressed_rle_hand_case():
    mask = np.array([[1, 0], [1, 1]], bool)  # column-major: 1, 1, 0, 1
    rle = synthetic._uncompressed_rle(mask)
    assert rle == {"size": [2, 2], "counts": [0, 2, 1, 1]}
    np.testing.assert_array_equal(decode_segmentation(rle, 2, 2), mask)


def test_layout_and_categories(dataset_dir, cocos):
    out, info = dataset_dir
    assert info["dataset_dir"] == str(out)
    assert info["class_names"] == list(CLASS_NAMES) and info["category_ids"] == list(CATEGORY_IDS)
    for split, key in zip(synthetic.SPLITS, ("train", "val")):
        coco = cocos[split]
        cats = coco.loadCats(coco.getCatIds())
        assert [c["id"] for c in cats] == list(CATEGORY_IDS)
        assert [c["name"] for c in cats] == list(CLASS_NAMES)
        assert len(coco.getImgIds()) == info[f"num_{key}_images"]
        assert len(coco.getAnnIds()) == info[f"num_{key}_annotations"]
    assert len(cocos["train2017"].getImgIds()) == 64 and len(cocos["val2017"].getImgIds()) == 16
    ids = list(CATEGORY_IDS)
    assert ids != list(range(1, len(ids) + 1)) and ids == sorted(set(ids))


def test_images_match_annotation_sizes(dataset_dir, cocos):
    out, _ = dataset_dir
    shapes = set()
    for split, coco in cocos.items():
        for img in coco.loadImgs(coco.getImgIds()):
            image = cv2.imread(str(out / split / img["file_name"]))
            assert image.shape == (img["height"], img["width"], 3), img["file_name"]
            assert max(img["height"], img["width"]) == 256
            shapes.add("landscape" if img["width"] > img["height"] else "portrait"
                       if img["height"] > img["width"] else "square")
    assert {"landscape", "portrait"} <= shapes


def test_jpegs_are_the_rendered_images(dataset_dir):
    out, _ = dataset_dir
    dataset, images, _ = generate_split("val2017", 16, seed=0, image_size=256)
    for img in dataset["images"][:4]:
        on_disk = cv2.imread(str(out / "val2017" / img["file_name"])).astype(np.float32)
        assert np.abs(on_disk - images[img["id"]]).mean() < 6.0


def test_every_mask_decodes_with_tight_bbox_and_area(cocos):
    for split, coco in cocos.items():
        for ann in _all_anns(coco):
            mask = coco.annToMask(ann)
            where = f"{split} annotation {ann['id']}"
            assert mask.sum() >= synthetic.MIN_AREA, where
            assert ann["area"] == mask.sum(), where
            np.testing.assert_allclose(ann["bbox"], _tight_box(mask), atol=1, err_msg=where)
            assert ann["category_id"] in CATEGORY_IDS, where


@pytest.mark.parametrize("split, count", [("train2017", 64), ("val2017", 16)])
def test_masks_equal_rendered_visible_pixels(cocos, split, count):
    coco = cocos[split]
    _, _, visible = generate_split(split, count, seed=0, image_size=256)
    assert sorted(visible) == sorted(coco.getAnnIds())
    polygon_ious = []
    for ann in _all_anns(coco):
        mask = coco.annToMask(ann).astype(bool)
        rendered = visible[ann["id"]]
        if isinstance(ann["segmentation"], dict):
            np.testing.assert_array_equal(mask, rendered, err_msg=f"RLE annotation {ann['id']}")
        else:
            iou = (mask & rendered).sum() / (mask | rendered).sum()
            if rendered.sum() >= 100:
                assert iou >= 0.9, f"polygon annotation {ann['id']}: IoU {iou:.3f}"
            polygon_ious.append(iou)
    # The pixel-edge tracing makes polygons exact, not only close.
    assert polygon_ious and min(polygon_ious) == 1.0


def test_all_annotation_kinds_present(cocos):
    anns = _all_anns(cocos["train2017"])
    polygons = [a for a in anns if isinstance(a["segmentation"], list)]
    rles = [a for a in anns if isinstance(a["segmentation"], dict)]
    crowd = [a for a in anns if a["iscrowd"]]
    assert sum(len(a["segmentation"]) >= 2 for a in polygons) >= 3
    parts = [part for a in polygons for part in a["segmentation"]]
    assert all(len(part) >= 6 and len(part) % 2 == 0 for part in parts)
    assert any(isinstance(a["segmentation"]["counts"], list) for a in rles)
    assert any(isinstance(a["segmentation"]["counts"], str) for a in rles)
    assert crowd and all(isinstance(a["segmentation"], dict) for a in crowd)
    assert any(not a["iscrowd"] for a in rles)
    assert len(polygons) > len(rles)


def test_empty_images_and_instance_counts(cocos):
    coco = cocos["train2017"]
    per_image = [len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()]
    assert 1 <= per_image.count(0) <= 6
    assert max(per_image) <= 9  # up to 8 shapes plus a crowd region
    areas = [a["area"] for a in _all_anns(coco) if not a["iscrowd"]]
    assert min(areas) < 300 and max(areas) > 5000  # small to large


def test_deterministic(dataset_dir, tmp_path):
    out, _ = dataset_dir
    again = tmp_path / "again"
    make_synthetic_coco(again, num_train=64, num_val=16, seed=0, image_size=256)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name

    other = tmp_path / "other"
    make_synthetic_coco(other, num_train=4, num_val=2, seed=1, image_size=256)
    for split in synthetic.SPLITS:
        mine = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        theirs = json.loads((other / "annotations" / f"instances_{split}.json").read_text())
        assert mine["images"][:2] != theirs["images"][:2] or \
            mine["annotations"][:3] != theirs["annotations"][:3]
        first = theirs["images"][0]["file_name"]
        assert (out / split / first).read_bytes() != (other / split / first).read_bytes()


def test_train_and_val_differ():
    train, train_images, _ = generate_split("train2017", 2, seed=0, image_size=64)
    val, val_images, _ = generate_split("val2017", 2, seed=0, image_size=64)
    assert train["images"][0]["id"] != val["images"][0]["id"]
    first_train = train_images[train["images"][0]["id"]]
    first_val = val_images[val["images"][0]["id"]]
    assert first_train.shape != first_val.shape or not np.array_equal(first_train, first_val)


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        generate_split("train2017", 1, image_size=16)
    with pytest.raises(ValueError, match="split"):
        generate_split("test2017", 1)


def test_script(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic_coco.py"),
                             "--out", str(out), "--num-train", "4", "--num-val", "2",
                             "--seed", "3", "--image-size", "96"],
                            capture_output=True, text=True, check=True, cwd=str(tmp_path))
    assert "train: 4 images" in result.stdout and "val: 2 images" in result.stdout
    assert "(distinct style," in result.stdout  # the script's default
    assert len(list((out / "train2017").glob("*.jpg"))) == 4
    val = json.loads((out / "annotations" / "instances_val2017.json").read_text())
    assert len(val["images"]) == 2
    assert max(val["images"][0]["height"], val["images"][0]["width"]) == 96


# ---------------------------------------------------------------- the "distinct" style

@pytest.fixture(scope="module")
def distinct():
    """Both splits of the distinct style in memory: {split: (dataset, images, visible)}."""
    return {split: generate_split(split, count, seed=0, image_size=128, style="distinct")
            for split, count in (("train2017", 60), ("val2017", 30))}


def _appearance(split_data, min_area=40):
    """(category ids, mean chromaticity (N, 3), brightness std (N,)) of the visible pixels of the
    non-crowd annotations."""
    dataset, images, visible = split_data
    labels, chroma, spread = [], [], []
    for ann in dataset["annotations"]:
        if ann["iscrowd"] or ann["area"] < min_area:
            continue
        pixels = images[ann["image_id"]][visible[ann["id"]]].astype(np.float64)
        mean = pixels.mean(axis=0)
        labels.append(ann["category_id"])
        chroma.append(mean / mean.sum())
        spread.append(pixels.mean(axis=1).std())
    return np.array(labels), np.array(chroma), np.array(spread)


def _nearest_centroid_accuracy(train, val):
    train_labels, train_chroma, _ = _appearance(train)
    val_labels, val_chroma, _ = _appearance(val)
    centroids = np.array([train_chroma[train_labels == c].mean(axis=0) for c in CATEGORY_IDS])
    distances = ((val_chroma[:, None] - centroids[None]) ** 2).sum(axis=-1)
    predicted = np.array(CATEGORY_IDS)[distances.argmin(axis=1)]
    return float((predicted == val_labels).mean()), len(val_labels)


def test_distinct_classes_separate_by_mean_colour(distinct):
    # one mean colour per class, fitted on train, names nearly every val object
    accuracy, count = _nearest_centroid_accuracy(distinct["train2017"], distinct["val2017"])
    assert count >= 60 and accuracy >= 0.95
    # in the outline style the same statistic is near chance (1 in 5)
    outline = {split: generate_split(split, count, seed=0, image_size=128)
               for split, count in (("train2017", 60), ("val2017", 30))}
    accuracy, _ = _nearest_centroid_accuracy(outline["train2017"], outline["val2017"])
    assert accuracy < 0.4


def test_distinct_classes_differ_in_pattern(distinct):
    # the solid class's brightness barely varies; every patterned class's varies well above it
    labels, _, spread = _appearance(distinct["train2017"])
    solid = CATEGORY_IDS[CLASS_NAMES.index("ellipse")]
    assert set(labels) == set(CATEGORY_IDS)
    for cat_id in CATEGORY_IDS:
        if cat_id != solid:
            assert np.percentile(spread[labels == cat_id], 10) > \
                np.percentile(spread[labels == solid], 90), cat_id


def test_distinct_keeps_every_annotation_kind(distinct):
    dataset, images, visible = distinct["train2017"]
    assert [c["id"] for c in dataset["categories"]] == list(CATEGORY_IDS)
    anns = dataset["annotations"]
    polygons = [a for a in anns if isinstance(a["segmentation"], list)]
    assert sum(len(a["segmentation"]) >= 2 for a in polygons) >= 3
    assert any(a["iscrowd"] and isinstance(a["segmentation"], dict) for a in anns)
    with_holes = [a for a in anns if synthetic._has_holes(visible[a["id"]])]
    assert with_holes and all(isinstance(a["segmentation"], dict) for a in with_holes)
    annotated = {a["image_id"] for a in anns}
    assert any(img["id"] not in annotated for img in dataset["images"])
    for ann in anns:  # masks are the rendered visible pixels, exactly
        height, width = images[ann["image_id"]].shape[:2]
        np.testing.assert_array_equal(decode_segmentation(ann["segmentation"], height, width),
                                      visible[ann["id"]], err_msg=f"annotation {ann['id']}")
    # the same images and annotation ids as the outline style, different pixels
    outline, outline_images, _ = generate_split("train2017", 60, seed=0, image_size=128)
    assert [i["id"] for i in outline["images"]] == [i["id"] for i in dataset["images"]]
    first = dataset["images"][0]["id"]
    assert not np.array_equal(images[first], outline_images[first])


def test_bad_style():
    with pytest.raises(ValueError, match="style must be one of"):
        generate_split("train2017", 1, style="plain")
