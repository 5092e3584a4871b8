"""Per-image transforms on host numpy arrays: decode, keep-ratio resize, horizontal flip,
normalization, padding to the canvas, gt padding to a fixed count and box-relative mask crops;
and the sample transforms that ``data.transforms`` lists (:data:`SAMPLE_TRANSFORMS`).

Shape shorthand: N instances of one image, G padded gt (``max_instances``), M mask crop size,
h w an image's own size, H W the padded canvas. Boxes are float32 xyxy in continuous pixel
coordinates (docs/contracts.md).

Masks never exist as full-image bitmaps here (except transiently when an RLE is decoded): each
gt mask is cropped over exactly its gt box in ORIGINAL image coordinates into an (M, M) grid, so
resizing the image does not touch it and a horizontal flip is ``np.fliplr``.
"""
import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

CHANNEL_ORDERS = ("BGR", "RGB")


class ImageDecodeError(ValueError):
    """An image whose bytes do not decode, or decode to another size than annotated."""


def decode_image(image_bytes, height=None, width=None, name=""):
    """Encoded JPEG/PNG bytes -> (h, w, 3) uint8 BGR, in stored pixel order (EXIF rotation is
    ignored, as the annotations are in stored pixel coordinates)."""
    data = np.frombuffer(image_bytes, np.uint8) if not isinstance(image_bytes, np.ndarray) \
        else image_bytes.reshape(-1).view(np.uint8)
    image = None
    if data.size:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ImageDecodeError(f"image {name!r}: cannot decode {data.size} bytes")
    if height is not None and image.shape[:2] != (height, width):
        raise ImageDecodeError(f"image {name!r}: decodes to {image.shape[1]}x{image.shape[0]} "
                               f"but is annotated as {width}x{height}")
    return image


def choose_scale(height, width, min_size, max_size, canvas):
    """Keep-ratio scale factor: short side to ``min_size``, long side at most ``max_size``, and
    the resized image inside the ``canvas`` (H, W)."""
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return min(scale, canvas[0] / height, canvas[1] / width)


def resized_size(height, width, scale, canvas):
    """(h, w) of the image after resizing by ``scale``, rounded, never beyond the canvas."""
    out_h = min(int(height * scale + 0.5), canvas[0])
    out_w = min(int(width * scale + 0.5), canvas[1])
    return max(out_h, 1), max(out_w, 1)


def resize_image(image, size_hw):
    """Bilinear resize of an (h, w, 3) image to ``size_hw``."""
    if image.shape[:2] == tuple(size_hw):
        return image
    return cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_LINEAR)


def scale_boxes(boxes, scale_hw):
    """(N, 4) xyxy boxes scaled by (sh, sw)."""
    factors = np.array([scale_hw[1], scale_hw[0], scale_hw[1], scale_hw[0]], np.float32)
    return (boxes * factors).astype(np.float32)


def hflip_image(image):
    """Mirror an (h, w, C) image left-right."""
    return cv2.flip(image, 1)


def hflip_boxes(boxes, width):
    """Mirror (N, 4) xyxy boxes inside an image ``width`` wide: x0' = w - x1, x1' = w - x0."""
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def hflip_crops(crops):
    """Mirror (N, M, M) box-relative mask crops: the box flips with the image, so the crop over
    it is the same crop mirrored."""
    return np.ascontiguousarray(crops[..., ::-1])


def normalize_image(image, mean, std, channel_order):
    """(h, w, 3) uint8 BGR -> float32 (3, h, w) in ``channel_order``, (x - mean) / std per channel
    (mean and std are given in ``channel_order``)."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    channels = (0, 1, 2) if channel_order == "BGR" else (2, 1, 0)
    out = np.empty((3,) + image.shape[:2], np.float32)
    for dst, src in enumerate(channels):
        np.subtract(image[:, :, src], np.float32(mean[dst]), out=out[dst], dtype=np.float32)
        if std[dst] != 1.0:
            out[dst] *= np.float32(1.0 / std[dst])
    return out


def pad_image(image_chw, canvas):
    """Zero-pad a (3, h, w) image at the bottom and right to the (H, W) canvas."""
    channels, height, width = image_chw.shape
    if height > canvas[0] or width > canvas[1]:
        raise ValueError(f"image {height}x{width} does not fit the canvas {canvas[0]}x{canvas[1]}")
    out = np.zeros((channels, canvas[0], canvas[1]), image_chw.dtype)
    out[:, :height, :width] = image_chw
    return out


def box_areas(boxes):
    """(N,) areas of (N, 4) xyxy boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def keep_largest(boxes, max_instances):
    """Indices (in their original order) of at most ``max_instances`` boxes, the largest by area
    when there are more; ties go to the earlier box."""
    count = len(boxes)
    if count <= max_instances:
        return np.arange(count)
    order = np.argsort(-box_areas(boxes), kind="stable")
    return np.sort(order[:max_instances])


def pad_instances(boxes, labels, crowd, masks, max_instances):
    """Pad N <= G instances to G rows; returns gt_boxes (G, 4) float32, gt_labels (G,) int32,
    gt_valid (G,) bool, gt_crowd (G,) bool, gt_masks (G, M, M) uint8. Padded rows are zero."""
    count = len(boxes)
    if count > max_instances:
        raise ValueError(f"{count} instances exceed max_instances={max_instances}; "
                         "select them with keep_largest first")
    size = masks.shape[-1]
    gt_boxes = np.zeros((max_instances, 4), np.float32)
    gt_labels = np.zeros((max_instances,), np.int32)
    gt_valid = np.zeros((max_instances,), np.bool_)
    gt_crowd = np.zeros((max_instances,), np.bool_)
    gt_masks = np.zeros((max_instances, size, size), np.uint8)
    gt_boxes[:count] = boxes
    gt_labels[:count] = labels
    gt_valid[:count] = True
    gt_crowd[:count] = crowd
    gt_masks[:count] = masks
    return gt_boxes, gt_labels, gt_valid, gt_crowd, gt_masks


def crop_centres(box_xyxy, size):
    """Pixel-centre coordinates of an (M, M) grid over the box: xs (M,), ys (M,)."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    steps = np.arange(size, dtype=np.float64) + 0.5
    return x0 + steps * ((x1 - x0) / size), y0 + steps * ((y1 - y0) / size)


def polygon_crop(polygons, box_xyxy, size):
    """Rasterize polygons (flat [x0, y0, x1, y1, ...] lists, image coordinates) onto the (M, M)
    grid over the box: a cell is 1 iff its centre lies inside the union of the parts (even-odd
    rule within a part). Scanline crossing counts; no full-image bitmap."""
    xs, ys = crop_centres(box_xyxy, size)
    crop = np.zeros((size, size), np.bool_)
    if box_xyxy[2] < box_xyxy[0] or box_xyxy[3] < box_xyxy[1]:
        return crop.astype(np.uint8)
    for polygon in polygons:
        points = np.asarray(polygon, np.float64).reshape(-1, 2)
        if len(points) < 3:
            continue
        xa, ya = points[:, 0], points[:, 1]
        xb, yb = np.roll(xa, -1), np.roll(ya, -1)
        crosses = (ya[None, :] > ys[:, None]) != (yb[None, :] > ys[:, None])
        rows, edges = np.nonzero(crosses)
        if rows.size == 0:
            continue
        x_cross = xa[edges] + (ys[rows] - ya[edges]) * (xb[edges] - xa[edges]) \
            / (yb[edges] - ya[edges])
        # A crossing at x_cross lies right of the centres xs[j] < x_cross, i.e. of j < n_left.
        n_left = np.searchsorted(xs, x_cross, side="left")
        hist = np.bincount(rows * (size + 1) + n_left, minlength=size * (size + 1))
        hist = hist.reshape(size, size + 1)
        crossings_right = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
        crop |= (crossings_right & 1).astype(np.bool_)
    return crop.astype(np.uint8)


def rle_crop(rle, box_xyxy, size):
    """Sample an RLE mask ({"size": [h, w], "counts": ...}) at the (M, M) grid's pixel centres
    (nearest pixel). The full bitmap exists only inside this call."""
    from pycocotools import mask as mask_utils

    height, width = (int(v) for v in rle["size"])
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, height, width)
    elif isinstance(rle["counts"], str):
        rle = {"size": [height, width], "counts": rle["counts"].encode("ascii")}
    bitmap = mask_utils.decode(rle)
    xs, ys = crop_centres(box_xyxy, size)
    cols = np.clip(np.floor(xs).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(ys).astype(np.int64), 0, height - 1)
    return np.ascontiguousarray(bitmap[np.ix_(rows, cols)], dtype=np.uint8)


def mask_crop(segm, box_xyxy, height, width, size):
    """(M, M) uint8 crop of one instance mask over exactly its box (original image coordinates).
    ``segm`` is a list of polygons or an RLE dict; ``height``, ``width`` are the image's."""
    if isinstance(segm, dict):
        if "size" not in segm:
            segm = dict(segm, size=[height, width])
        return rle_crop(segm, box_xyxy, size)
    return polygon_crop(segm, box_xyxy, size)


# ------------------------------------------------------------------ sample transforms
# :func:`mindseg.dataset.sample.build_sample` applies the ``data.transforms`` names of
# SAMPLE_TRANSFORMS in order, each ``transform(sample, spec, rng) -> sample`` on the dict of the
# image being built: "image" ((h, w, 3) uint8 BGR, (3, h, w) float32 after "normalize", (3, H, W)
# after "pad"), "size_hw" (its size before padding), "scale_hw" (that size over the original),
# "boxes" (N, 4) xyxy in its pixels, "masks" (N, M, M) crops over the boxes, "labels" (N,),
# "crowd" (N,). ``spec`` is the SampleSpec; ``rng`` the sample's generator, None at evaluation,
# where a random transform does nothing (flip) or its deterministic part (resize: first min size).
# A new augmentation is a function here, an entry in SAMPLE_TRANSFORMS and its name in the list.

def resize_sample(sample, spec, rng):
    """Keep-ratio resize to a min size drawn from ``spec.min_sizes`` (the first at evaluation)."""
    min_size = spec.min_sizes[0] if rng is None else \
        spec.min_sizes[int(rng.integers(len(spec.min_sizes)))]
    height, width = sample["size_hw"]
    scale = choose_scale(height, width, min_size, spec.max_size, spec.canvas)
    size_hw = resized_size(height, width, scale, spec.canvas)
    factor_hw = (size_hw[0] / height, size_hw[1] / width)
    sample["image"] = resize_image(sample["image"], size_hw)
    sample["boxes"] = scale_boxes(sample["boxes"], factor_hw)
    sample["size_hw"] = size_hw
    scale_hw = sample["scale_hw"]
    sample["scale_hw"] = (scale_hw[0] * factor_hw[0], scale_hw[1] * factor_hw[1])
    return sample


def flip_sample(sample, spec, rng):
    """Horizontal flip of image, boxes and mask crops with probability ``spec.flip_prob``
    (training only)."""
    if rng is None or not rng.random() < spec.flip_prob:
        return sample
    sample["image"] = hflip_image(sample["image"])
    sample["boxes"] = hflip_boxes(sample["boxes"], sample["size_hw"][1])
    sample["masks"] = hflip_crops(sample["masks"])
    return sample


def normalize_sample(sample, spec, rng):
    """uint8 BGR (h, w, 3) -> normalized float32 (3, h, w) in ``spec.channel_order``."""
    sample["image"] = normalize_image(sample["image"], spec.mean, spec.std, spec.channel_order)
    return sample


def pad_sample(sample, spec, rng):
    """Zero-pad the (3, h, w) image to the canvas (bottom and right)."""
    sample["image"] = pad_image(sample["image"], spec.canvas)
    return sample


SAMPLE_TRANSFORMS = {"resize": resize_sample, "flip": flip_sample, "normalize": normalize_sample,
                     "pad": pad_sample}
DEFAULT_TRANSFORMS = ("resize", "flip", "normalize", "pad")
