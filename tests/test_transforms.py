"""Transforms: hand-computed cases and NumPy references for resize, flip, normalize, padding and
the box-relative mask crop."""
import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mindseg.dataset import transforms as T


# ---------------------------------------------------------------- references

def reference_polygon_crop(polygons, box, size):
    """Pixel by pixel: a cell is 1 iff its centre is inside some part (even-odd ray casting)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    crop = np.zeros((size, size), np.uint8)
    for i in range(size):
        y = y0 + (i + 0.5) * ((y1 - y0) / size)
        for j in range(size):
            x = x0 + (j + 0.5) * ((x1 - x0) / size)
            for polygon in polygons:
                pts = np.asarray(polygon, np.float64).reshape(-1, 2)
                inside = False
                for k in range(len(pts)):
                    (xa, ya), (xb, yb) = pts[k], pts[(k + 1) % len(pts)]
                    if (ya > y) != (yb > y):
                        if x < xa + (y - ya) * (xb - xa) / (yb - ya):
                            inside = not inside
                if inside:
                    crop[i, j] = 1
    return crop


def rectangle_rle(height, width, x0, y0, x1, y1):
    bitmap = np.zeros((height, width), np.uint8)
    bitmap[y0:y1, x0:x1] = 1
    return mask_utils.encode(np.asfortranarray(bitmap))


# ---------------------------------------------------------------- decode

def test_decode_round_trip_and_errors():
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8)
    ok, png = cv2.imencode(".png", image)
    assert ok
    np.testing.assert_array_equal(T.decode_image(png.tobytes(), 20, 30), image)
    with pytest.raises(T.ImageDecodeError, match="broken.jpg"):
        T.decode_image(b"\xff\xd8 not a jpeg", name="broken.jpg")
    with pytest.raises(T.ImageDecodeError, match="annotated as 20x30"):
        T.decode_image(png.tobytes(), 30, 20, name="a.png")


# ---------------------------------------------------------------- resize

@pytest.mark.parametrize("height, width, min_size, max_size, canvas, expected", [
    (480, 640, 800, 1333, (800, 1344), (800, 1067)),     # short side -> 800
    (100, 1000, 800, 1333, (1344, 1344), (133, 1333)),   # long side capped by max_size
    (640, 480, 800, 1333, (800, 1344), (800, 600)),      # portrait: capped by the canvas height
    (300, 2000, 800, 4000, (800, 1344), (202, 1344)),    # capped by the canvas width
    (800, 1200, 800, 1333, (800, 1344), (800, 1200)),    # already the right size
])
def test_choose_scale_keeps_ratio_and_limits(height, width, min_size, max_size, canvas, expected):
    scale = T.choose_scale(height, width, min_size, max_size, canvas)
    size = T.resized_size(height, width, scale, canvas)
    assert size == expected
    assert size[0] <= canvas[0] and size[1] <= canvas[1] and max(size) <= max_size + 0.5
    assert abs(size[0] / size[1] - height / width) < 1.0 / min(size)


def test_resize_image_and_boxes():
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, 10:] = 200
    resized = T.resize_image(image, (20, 40))
    assert resized.shape == (20, 40, 3)
    assert (resized[:, :19] == 0).all() and (resized[:, 21:] == 200).all()
    boxes = np.array([[1, 2, 5, 6]], np.float32)
    np.testing.assert_allclose(T.scale_boxes(boxes, (2.0, 0.5)), [[0.5, 4, 2.5, 12]])


# ---------------------------------------------------------------- flip

def test_hflip_boxes_hand_case():
    boxes = np.array([[1, 2, 4, 5], [0, 0, 10, 3]], np.float32)
    np.testing.assert_array_equal(T.hflip_boxes(boxes, 10), [[6, 2, 9, 5], [0, 0, 10, 3]])


def test_flip_twice_is_identity():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (7, 9, 3), np.uint8)
    boxes = (rng.integers(0, 72, (5, 4)) / 8).astype(np.float32)   # exact in float32
    crops = rng.integers(0, 2, (5, 8, 8), np.uint8)
    np.testing.assert_array_equal(T.hflip_image(T.hflip_image(image)), image)
    np.testing.assert_array_equal(T.hflip_boxes(T.hflip_boxes(boxes, 9), 9), boxes)
    any_boxes = rng.uniform(0, 9, (5, 4)).astype(np.float32)
    np.testing.assert_allclose(T.hflip_boxes(T.hflip_boxes(any_boxes, 9), 9), any_boxes, atol=1e-5)
    np.testing.assert_array_equal(T.hflip_crops(T.hflip_crops(crops)), crops)
    np.testing.assert_array_equal(T.hflip_image(image), image[:, ::-1])
    assert not np.array_equal(T.hflip_crops(crops), crops)


def test_flipped_crop_equals_crop_of_flipped_polygon():
    width = 50
    polygon = [3.3, 4.1, 40.7, 9.2, 12.9, 37.4, 8.1, 20.6]
    box = np.array([3.3, 4.1, 40.7, 37.4], np.float32)
    flipped_polygon = [width - v if k % 2 == 0 else v for k, v in enumerate(polygon)]
    flipped_box = T.hflip_boxes(box[None], width)[0]
    crop = T.mask_crop([polygon], box, 45, width, 28)
    assert 100 < crop.sum() < 28 * 28
    np.testing.assert_array_equal(T.mask_crop([flipped_polygon], flipped_box, 45, width, 28),
                                  T.hflip_crops(crop))


# ---------------------------------------------------------------- normalize and pad

def test_normalize_channel_order():
    image = np.array([[[10, 20, 30], [0, 0, 0]]], np.uint8)  # one BGR pixel, one black
    bgr = T.normalize_image(image, [1, 2, 3], [1, 2, 3], "BGR")
    assert bgr.shape == (3, 1, 2) and bgr.dtype == np.float32
    np.testing.assert_allclose(bgr[:, 0, 0], [9, 9, 9])
    np.testing.assert_allclose(bgr[:, 0, 1], [-1, -1, -1])
    rgb = T.normalize_image(image, [1, 2, 3], [1, 2, 3], "RGB")
    np.testing.assert_allclose(rgb[:, 0, 0], [29, 9, 7 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="channel_order"):
        T.normalize_image(image, [0, 0, 0], [1, 1, 1], "BRG")


def test_pad_image():
    image = np.arange(2 * 3 * 3, dtype=np.float32).reshape(3, 2, 3) + 1
    padded = T.pad_image(image, (4, 5))
    assert padded.shape == (3, 4, 5)
    np.testing.assert_array_equal(padded[:, :2, :3], image)
    assert padded.sum() == image.sum()
    with pytest.raises(ValueError, match="does not fit"):
        T.pad_image(image, (1, 5))


# ---------------------------------------------------------------- gt padding

def test_keep_largest_and_pad_instances():
    boxes = np.array([[0, 0, 2, 2], [0, 0, 10, 10], [0, 0, 1, 1], [0, 0, 5, 10], [5, 5, 15, 15]],
                     np.float32)                                # areas 4, 100, 1, 50, 100
    keep = T.keep_largest(boxes, 3)
    np.testing.assert_array_equal(keep, [1, 3, 4])
    np.testing.assert_array_equal(T.keep_largest(boxes, 5), np.arange(5))
    labels = np.arange(5, dtype=np.int32) + 10
    crowd = np.array([0, 1, 0, 0, 1], np.bool_)
    masks = np.ones((5, 4, 4), np.uint8)
    gt_boxes, gt_labels, gt_valid, gt_crowd, gt_masks = T.pad_instances(
        boxes[keep], labels[keep], crowd[keep], masks[keep], 6)
    np.testing.assert_array_equal(gt_valid, [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(gt_labels, [11, 13, 14, 0, 0, 0])
    np.testing.assert_array_equal(gt_crowd, [1, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(gt_boxes[:3], boxes[[1, 3, 4]])
    assert not gt_boxes[3:].any() and not gt_masks[3:].any() and gt_masks[:3].all()
    assert gt_masks.dtype == np.uint8 and gt_boxes.dtype == np.float32
    with pytest.raises(ValueError, match="max_instances"):
        T.pad_instances(boxes, labels, crowd, masks, 4)


# ---------------------------------------------------------------- mask crops

def test_rectangle_crop_is_exact():
    box = np.array([10, 20, 30, 60], np.float32)               # 20 wide, 40 high
    left_half = [[10, 20, 20, 20, 20, 60, 10, 60]]
    crop = T.mask_crop(left_half, box, 100, 100, 56)
    expected = np.zeros((56, 56), np.uint8)
    expected[:, :28] = 1
    np.testing.assert_array_equal(crop, expected)
    np.testing.assert_array_equal(T.mask_crop([[10, 20, 30, 20, 30, 60, 10, 60]], box, 100, 100,
                                              56), np.ones((56, 56), np.uint8))
    top_quarter = [[10, 20, 30, 20, 30, 30, 10, 30]]
    expected = np.zeros((56, 56), np.uint8)
    expected[:14] = 1
    np.testing.assert_array_equal(T.mask_crop(top_quarter, box, 100, 100, 56), expected)


def test_rle_rectangle_crop_is_exact():
    box = np.array([10, 20, 30, 60], np.float32)
    rle = rectangle_rle(100, 100, 10, 20, 20, 60)               # columns 10..19: left half
    expected = np.zeros((56, 56), np.uint8)
    expected[:, :28] = 1
    np.testing.assert_array_equal(T.mask_crop(rle, box, 100, 100, 56), expected)
    rle_str = dict(rle, counts=rle["counts"].decode("ascii"))
    np.testing.assert_array_equal(T.mask_crop(rle_str, box, 100, 100, 56), expected)
    bitmap = np.zeros((100, 100), np.uint8)
    bitmap[20:60, 10:20] = 1
    counts, previous, run = [], 0, 0
    for value in bitmap.flatten(order="F"):
        if value != previous:
            counts.append(run)
            previous, run = value, 0
        run += 1
    counts.append(run)
    uncompressed = {"size": [100, 100], "counts": counts}
    np.testing.assert_array_equal(T.mask_crop(uncompressed, box, 100, 100, 56), expected)


def test_triangle_crop_hand_computed():
    # Centre (j + .5, i + .5) is inside x + y < 8 iff i + j <= 6; centres on the hypotenuse
    # (i + j = 7) are outside under the half-open crossing rule.
    crop = T.mask_crop([[0, 0, 8, 0, 0, 8]], np.array([0, 0, 8, 8], np.float32), 8, 8, 8)
    expected = (np.add.outer(np.arange(8), np.arange(8)) <= 6).astype(np.uint8)
    np.testing.assert_array_equal(crop, expected)
    assert crop.sum() == 28


def test_polygon_crop_matches_reference():
    rng = np.random.default_rng(3)
    for trial in range(6):
        parts = [list(rng.uniform(0, 40, 2 * int(rng.integers(3, 9))))
                 for _ in range(1 + trial % 3)]
        box = np.array([2.5, 1.25, 37.0, 30.5], np.float32)
        size = 14 if trial % 2 else 21
        np.testing.assert_array_equal(T.mask_crop(parts, box, 40, 40, size),
                                      reference_polygon_crop(parts, box, size))


def test_union_of_parts_and_even_odd_within_a_part():
    box = np.array([0, 0, 8, 8], np.float32)
    left, right = [0, 0, 4, 0, 4, 8, 0, 8], [4, 0, 8, 0, 8, 8, 4, 8]
    np.testing.assert_array_equal(T.mask_crop([left, right], box, 8, 8, 8), np.ones((8, 8)))
    np.testing.assert_array_equal(T.mask_crop([left, left], box, 8, 8, 8),
                                  T.mask_crop([left], box, 8, 8, 8))
    # One part tracing an outer square then an inner square: even-odd leaves a hole.
    ring = [0, 0, 8, 0, 8, 8, 0, 8, 0, 0, 2, 2, 2, 6, 6, 6, 6, 2, 2, 2]
    expected = np.ones((8, 8), np.uint8)
    expected[2:6, 2:6] = 0
    np.testing.assert_array_equal(T.mask_crop([ring], box, 8, 8, 8), expected)


def test_polygon_crop_matches_pycocotools_on_pixel_aligned_masks():
    from mindseg.dataset.synthetic import generate_split

    dataset, _, _ = generate_split("train2017", 4, seed=5, image_size=96)
    images = {im["id"]: im for im in dataset["images"]}
    checked = 0
    for ann in dataset["annotations"]:
        if not isinstance(ann["segmentation"], list):
            continue
        info = images[ann["image_id"]]
        height, width = info["height"], info["width"]
        bitmap = mask_utils.decode(mask_utils.merge(
            mask_utils.frPyObjects(ann["segmentation"], height, width)))
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        size = max(w, h)
        if x + size > width or y + size > height:
            continue
        box = np.array([x, y, x + size, y + size], np.float32)  # one crop cell per pixel
        np.testing.assert_array_equal(T.mask_crop(ann["segmentation"], box, height, width, size),
                                      bitmap[y:y + size, x:x + size])
        checked += 1
    assert checked >= 3
