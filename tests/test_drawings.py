"""eval.py --draw's pictures (mindseg.engine.drawings) and the side-by-side and ground-truth
labels of mindseg.utils.visualize, on a synthetic COCO set with hand-made results."""

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from mindseg.dataset.synthetic import make_synthetic_coco
from mindseg.engine.drawings import DrawSettings, draw_val_images
from mindseg.utils.visualize import draw_instances, side_by_side

GAP = 8


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("drawings")
    make_synthetic_coco(root, num_train=1, num_val=3, image_size=96, seed=3)
    ann_file = root / "annotations" / "instances_val2017.json"
    coco = COCO(str(ann_file))
    cats = sorted(coco.getCatIds())
    names = [coco.cats[c]["name"] for c in cats]
    return {"root": root, "ann_file": str(ann_file), "images": str(root / "val2017"),
            "coco": coco, "category_ids": cats, "class_names": names}


def _as_results(coco, image_id, score):
    """The ground truth of one image as COCO results with ``score``."""
    results = []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        rle = mask_util.encode(np.asfortranarray(coco.annToMask(ann)))
        results.append({"image_id": image_id, "category_id": ann["category_id"],
                        "bbox": ann["bbox"], "score": score,
                        "segmentation": dict(rle, counts=rle["counts"].decode("ascii"))})
    return results


def _expected(coco, image_id, image, class_names, category_ids, score=None):
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
    labels = [category_ids.index(a["category_id"]) for a in anns]
    masks = np.array([coco.annToMask(a).astype(bool) for a in anns])
    scores = None if score is None else [score] * len(anns)
    return draw_instances(image, boxes, labels, scores, masks, class_names), len(anns)


def test_ground_truth_left_detections_above_the_threshold_right(shapes, tmp_path):
    coco = shapes["coco"]
    first = sorted(coco.getImgIds())[0]
    results = _as_results(coco, first, 0.9)
    weak = dict(results[0], score=0.2, bbox=[1, 1, 20, 20])  # below the threshold: not drawn
    lines = []
    drawn = draw_val_images(shapes["ann_file"], shapes["images"], results + [weak],
                            shapes["class_names"], shapes["category_ids"],
                            DrawSettings(str(tmp_path), 1, 0.5), log=lines.append)
    info = coco.imgs[first]
    image = cv2.imread(f"{shapes['images']}/{info['file_name']}")
    left, objects = _expected(coco, first, image, shapes["class_names"], shapes["category_ids"])
    right, _ = _expected(coco, first, image, shapes["class_names"], shapes["category_ids"], 0.9)
    path = str(tmp_path / (info["file_name"].rsplit(".", 1)[0] + ".png"))
    assert drawn == [(path, objects, objects)] and objects > 0
    assert lines == [f"drawn {path}: {objects} objects, {objects} detections with score >= 0.5"]
    picture = cv2.imread(path)
    height, width = image.shape[:2]
    top = picture.shape[0] - height
    assert picture.shape[1] == 2 * width + GAP and top > 0
    np.testing.assert_array_equal(picture[top:, :width], left)
    np.testing.assert_array_equal(picture[top:, width + GAP:], right)
    assert not np.array_equal(left, right)  # the scores are in the right side's labels only


def test_unreadable_images_are_named_and_the_next_drawn(shapes, tmp_path):
    coco = shapes["coco"]
    ids = sorted(coco.getImgIds())
    broken = tmp_path / "val2017"
    broken.mkdir()
    for image_id in ids[1:]:
        name = coco.imgs[image_id]["file_name"]
        (broken / name).write_bytes((shapes["root"] / "val2017" / name).read_bytes())
    (broken / coco.imgs[ids[0]]["file_name"]).write_bytes(b"not an image")
    lines = []
    drawn = draw_val_images(shapes["ann_file"], str(broken), [], shapes["class_names"],
                            shapes["category_ids"], DrawSettings(str(tmp_path / "out"), 5, 0.5),
                            log=lines.append)
    assert [p.rsplit("/", 1)[1] for p, _, _ in drawn] == \
        [coco.imgs[i]["file_name"].rsplit(".", 1)[0] + ".png" for i in ids[1:]]
    assert all(detections == 0 for _, _, detections in drawn)
    assert f"--draw: skipped image {ids[0]}: cannot read" in lines[0]
    assert lines[-1].startswith("--draw 5: all 2 readable images of")


def test_ground_truth_labels_name_the_class_only():
    image = np.full((60, 120, 3), 100, np.uint8)
    box = [[10, 30, 110, 55]]
    with_score = draw_instances(image, box, [0], [0.87], None, ["rectangle"])
    class_only = draw_instances(image, box, [0], None, None, ["rectangle"])
    label_row = with_score[22]  # inside the label above the box
    filled = np.flatnonzero(np.any(label_row != 100, axis=1))
    filled_gt = np.flatnonzero(np.any(class_only[22] != 100, axis=1))
    assert filled.max() > filled_gt.max() + 20  # " 0.87" widens the label
    with pytest.raises(ValueError, match="differ in number"):
        draw_instances(image, box, [0], [0.5, 0.4], None)


def test_side_by_side_puts_titles_above_both_images():
    left = np.full((50, 40, 3), 10, np.uint8)
    right = np.full((50, 40, 3), 200, np.uint8)
    picture = side_by_side(left, right, ("ground truth (3)", "predictions (2, score >= 0.3)"))
    top = picture.shape[0] - 50
    assert picture.shape == (50 + top, 2 * 40 + GAP, 3) and top > 8
    np.testing.assert_array_equal(picture[top:, :40], left)
    np.testing.assert_array_equal(picture[top:, 40 + GAP:], right)
    np.testing.assert_array_equal(picture[top:, 40:40 + GAP], 255)
    assert (picture[:top, :40] < 128).any() and (picture[:top, 40 + GAP:] < 128).any()  # titles
    with pytest.raises(ValueError, match="differ"):
        side_by_side(left, right[:10])


def _exif_jpeg(path, height, width, orientation=6):
    """A JPEG of ``height`` x ``width`` stored pixels, dark left half, whose EXIF orientation tag
    asks viewers to rotate it (6: 90 degrees clockwise)."""
    from PIL import Image
    pixels = np.full((height, width, 3), 220, np.uint8)
    pixels[:, :width // 2] = 30
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", exif=exif, quality=95)


def test_images_are_drawn_in_their_stored_frame_as_the_loader_keeps_them(tmp_path):
    """EXIF-rotated JPEGs (one 40x24, one square) are drawn in the stored pixel frame the
    annotations and the pipeline use; a second entry of image 3 (another file and size) is not
    drawn, and an image whose file disagrees with its annotated size is named and skipped."""
    import json
    from mindseg.dataset.transforms import decode_image
    images = tmp_path / "images"
    images.mkdir()
    _exif_jpeg(images / "wide.jpg", 24, 40)
    _exif_jpeg(images / "square.jpg", 32, 32)
    _exif_jpeg(images / "plain.jpg", 20, 30, orientation=1)
    _exif_jpeg(images / "other.jpg", 50, 50, orientation=1)
    _exif_jpeg(images / "wrong_size.jpg", 20, 30, orientation=1)
    entries = [(1, "wide.jpg", 24, 40), (2, "square.jpg", 32, 32), (3, "plain.jpg", 20, 30),
               (3, "other.jpg", 50, 50), (4, "wrong_size.jpg", 30, 20)]
    box = [2, 3, 12, 10]
    polygon = [[2, 3, 14, 3, 14, 13, 2, 13]]
    gt = {"images": [{"id": i, "file_name": n, "height": h, "width": w} for i, n, h, w in entries],
          "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": box, "area": 120,
                           "iscrowd": 0, "segmentation": polygon} for i in (1, 2, 3, 4)]}
    ann_file = tmp_path / "gt.json"
    ann_file.write_text(json.dumps(gt))
    lines = []
    drawn = draw_val_images(str(ann_file), str(images), [], ["thing"], [1],
                            DrawSettings(str(tmp_path / "out"), 5, 0.5), log=lines.append)
    assert [p.rsplit("/", 1)[1] for p, _, _ in drawn] == ["wide.png", "square.png", "plain.png"]
    assert [objects for _, objects, _ in drawn] == [1, 1, 1]
    skipped = [line for line in lines if line.startswith("--draw: skipped")]
    assert len(skipped) == 1 and skipped[0].startswith("--draw: skipped image 4: cannot read")
    assert "decodes to 30x20 but is annotated as 20x30" in skipped[0]
    for name, (height, width) in (("wide", (24, 40)), ("square", (32, 32))):
        stored = decode_image((images / f"{name}.jpg").read_bytes())
        assert stored.shape[:2] == (height, width)
        assert not np.array_equal(stored, cv2.imread(str(images / f"{name}.jpg")))  # rotated
        mask = np.zeros((1, height, width), bool)
        mask[0, 3:13, 2:14] = True
        expected = draw_instances(stored, [[2, 3, 14, 13]], [0], None, mask, ["thing"])
        picture = cv2.imread(str(tmp_path / "out" / f"{name}.png"))
        np.testing.assert_array_equal(picture[picture.shape[0] - height:, :width], expected)
