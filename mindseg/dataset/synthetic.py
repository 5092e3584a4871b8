"""A COCO-format synthetic shapes dataset for the quick start and for tests.

Each image is a background with 1-8 shapes drawn in order, so later shapes occlude earlier ones;
an instance's mask is its visible part. Two styles: "distinct" (the quick start's) gives each class
its own outline, colour family and surface pattern on varied textured backgrounds
(synthetic_looks.py), as real classes differ in how they look; "outline" (the tests' fixtures)
paints every shape in a random hue on a grey ramp, so only the outline tells the classes apart. The annotations exercise what real
COCO files contain: non-contiguous category ids, polygons with several parts (a shape cut in two by
a bar), RLE masks in both encodings, `iscrowd` regions and images without annotations.

Masks are exact: a polygon annotation traces the pixel edges of the visible mask, so pycocotools
rasterizes it back to the same pixels (RLE is used where the mask has holes), and `bbox` / `area`
are computed from the decoded annotation.
"""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util

from mindseg.dataset import synthetic_looks

CLASS_NAMES = ("rectangle", "ellipse", "triangle", "star", "cross")
CATEGORY_IDS = (1, 3, 7, 12, 15)
CATEGORIES = tuple({"id": cat_id, "name": name, "supercategory": "shape"}
                   for cat_id, name in zip(CATEGORY_IDS, CLASS_NAMES))

SPLITS = ("train2017", "val2017")
MIN_AREA = 20           # visible leftovers smaller than this (px) are not annotated
EMPTY_EVERY = 20        # train images 3, 23, 43, ... have no shapes
BAR_PROB = 0.3          # an image ends with a thin bar across a large shape (multi-part polygons)
CROWD_PROB = 0.12       # an image holds a cluster of small shapes annotated as one crowd region
RLE_PROB = 0.12         # a non-crowd annotation is written as RLE instead of polygons
JPEG_QUALITY = 90
STYLES = ("outline", "distinct")
# a shape's radius range, as a fraction of the image's long side
_RADIUS_RANGE = {"outline": (0.04, 0.4), "distinct": (0.06, 0.35)}
_IMAGE_ID_BASE = {"train2017": 1, "val2017": 100001}
_ANN_ID_BASE = {"train2017": 1, "val2017": 1000001}


# ---------------------------------------------------------------- shapes (float vertex arrays)

def _rotate(points, angle):
    cos, sin = np.cos(angle), np.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def _shape_polygon(class_name, center, radius, angle, rng):
    """(P, 2) float vertices (x, y) of a shape whose vertices lie within `radius` of `center`."""
    if class_name == "rectangle":
        aspect = rng.uniform(0.35, 1.0)
        half = radius / np.sqrt(1.0 + aspect ** 2)
        points = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]]) * half
    elif class_name == "ellipse":
        theta = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        points = np.stack([np.cos(theta), rng.uniform(0.4, 1.0) * np.sin(theta)], 1) * radius
    elif class_name == "triangle":
        theta = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
        points = np.stack([np.cos(theta), np.sin(theta)], 1) * radius
    elif class_name == "star":
        theta = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5)) * radius
        points = np.stack([np.cos(theta), np.sin(theta)], 1) * radii[:, None]
    elif class_name == "cross":
        arm = rng.uniform(0.25, 0.4)
        unit = [[arm, -1], [arm, -arm], [1, -arm], [1, arm], [arm, arm], [arm, 1],
                [-arm, 1], [-arm, arm], [-1, arm], [-1, -arm], [-arm, -arm], [-arm, -1]]
        points = np.array(unit) * radius / np.sqrt(1.0 + arm ** 2)
    else:
        raise ValueError(f"unknown shape class {class_name!r}")
    return _rotate(points, angle) + np.asarray(center, dtype=np.float64)


def _fill(polygons, height, width):
    """Rasterize float polygons (a list of (P, 2) arrays) to a bool (H, W) mask."""
    canvas = np.zeros((height, width), np.uint8)
    shift = 4
    pts = [np.round(p * (1 << shift)).astype(np.int32) for p in polygons]
    cv2.fillPoly(canvas, pts, 1, lineType=cv2.LINE_8, shift=shift)
    return canvas.astype(bool)


def _random_color(rng):
    hsv = np.array([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(120, 256)]]],
                   np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _linear_ramp(height, width, rng):
    """(H, W) float ramp in [0, 1] along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    return (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)


def _background(height, width, rng):
    gray = rng.uniform(60, 190)
    colors = gray + rng.uniform(-40, 40, (2, 3))
    ramp = _linear_ramp(height, width, rng)[..., None]
    image = colors[0] * (1 - ramp) + colors[1] * ramp
    blotches = rng.normal(0, 14, (height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    return image + cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)


# ---------------------------------------------------------------- one image

def _image_size(image_size, rng):
    short = int(round(image_size * rng.uniform(0.6, 1.0)))
    return (short, image_size) if rng.random() < 0.55 else (image_size, short)


def _scene(height, width, rng, style="outline"):
    """Shapes to draw in order: dicts with class index, float polygons, iscrowd and the centre,
    radius and angle their surface pattern is laid out by."""
    long_side = max(height, width)
    low, high = _RADIUS_RANGE[style]
    shapes = []
    for _ in range(int(rng.integers(1, 8))):
        label = int(rng.integers(len(CLASS_NAMES)))
        radius = long_side * np.exp(rng.uniform(np.log(low), np.log(high)))
        center = (rng.uniform(0, width), rng.uniform(0, height))
        angle = rng.uniform(0, 2 * np.pi)
        polygon = _shape_polygon(CLASS_NAMES[label], center, radius, angle, rng)
        shapes.append({"label": label, "polygons": [polygon], "iscrowd": 0,
                       "center": center, "radius": radius, "angle": angle})
    if rng.random() < CROWD_PROB:
        label = int(rng.integers(len(CLASS_NAMES)))
        region = long_side * rng.uniform(0.1, 0.2)
        cx, cy = rng.uniform(region, width - region), rng.uniform(region, height - region)
        members = []
        for _ in range(int(rng.integers(4, 9))):
            center = (cx + rng.uniform(-region, region), cy + rng.uniform(-region, region))
            radius = long_side * rng.uniform(0.025, 0.05)
            members.append(_shape_polygon(CLASS_NAMES[label], center, radius,
                                          rng.uniform(0, 2 * np.pi), rng))
        position = int(rng.integers(len(shapes) + 1))
        shapes.insert(position, {"label": label, "polygons": members, "iscrowd": 1,
                                 "center": (cx, cy), "radius": region / 4, "angle": 0.0})
    large = [s for s in shapes if not s["iscrowd"] and s["radius"] > 0.12 * long_side]
    if large and rng.random() < BAR_PROB:
        target = large[int(rng.integers(len(large)))]
        thickness = max(4.0, 0.15 * target["radius"])
        length = 2.5 * target["radius"]
        bar = np.array([[-length, -thickness], [length, -thickness],
                        [length, thickness], [-length, thickness]]) / 2
        angle = rng.uniform(0, np.pi)
        shapes.append({"label": CLASS_NAMES.index("rectangle"),
                       "polygons": [_rotate(bar, angle) + np.asarray(target["center"])],
                       "iscrowd": 0, "center": target["center"], "radius": thickness * 2,
                       "angle": -angle})
    return shapes


def _render(height, width, shapes, rng, style="outline"):
    """Draw shapes in order; returns the BGR uint8 image and each shape's visible bool mask."""
    distinct = style == "distinct"
    image = synthetic_looks.background(height, width, rng) if distinct else \
        _background(height, width, rng)
    owner = np.full((height, width), -1, np.int32)
    for index, shape in enumerate(shapes):
        owner[_fill(shape["polygons"], height, width)] = index
    for index, shape in enumerate(shapes):
        inside = owner == index
        if not inside.any():
            continue
        if distinct:
            synthetic_looks.paint_object(image, inside, CLASS_NAMES[shape["label"]],
                                         shape["center"], shape["radius"], shape["angle"], rng)
            continue
        shading = 1.0 + rng.uniform(-0.25, 0.25) * (_linear_ramp(height, width, rng) - 0.5)
        image[inside] = _random_color(rng) * shading[inside][:, None]
    image += rng.normal(0, 5, image.shape).astype(np.float32)
    visible = [owner == index for index in range(len(shapes))]
    return np.clip(np.round(image), 0, 255).astype(np.uint8), visible


# ---------------------------------------------------------------- annotations

def mask_to_polygons(mask):
    """Exact pixel-edge outlines of a hole-free bool (H, W) mask as COCO polygons.

    Tracing the 2x-upsampled mask and mapping sub-pixel p to edge ceil(p / 2) puts every vertex on
    a pixel corner, which pycocotools rasterizes back to the same pixels. Holes are not
    representable: callers use RLE for masks with holes.
    """
    upsampled = mask.astype(np.uint8).repeat(2, axis=0).repeat(2, axis=1)
    contours, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        corners = (contour.reshape(-1, 2) + 1) // 2
        corners = corners[np.any(corners != np.roll(corners, 1, axis=0), axis=1)]
        if len(corners) >= 3:
            polygons.append([float(v) for v in corners.ravel()])
    return polygons


def _has_holes(mask):
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool(np.any(hierarchy[0][:, 3] >= 0))


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE: run lengths over the column-major mask, starting with zeros."""
    flat = mask.astype(np.uint8).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _compressed_rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_segmentation(segmentation, height, width):
    """Decode any COCO segmentation (polygons, uncompressed or compressed RLE) to uint8 (H, W)."""
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_util.decode(rle)


def _segmentation(mask, iscrowd, rng):
    if iscrowd:
        return _uncompressed_rle(mask)
    if _has_holes(mask) or rng.random() < RLE_PROB:
        return _compressed_rle(mask) if rng.random() < 0.5 else _uncompressed_rle(mask)
    return mask_to_polygons(mask)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


# ---------------------------------------------------------------- splits

def _split_seed(seed, split):
    return [int(seed), SPLITS.index(split)]


def generate_split(split, num_images, seed=0, image_size=256, style="outline"):
    """Render one split in memory in one of STYLES.

    Returns (dataset, images, visible): the COCO dict, BGR uint8 arrays by image id, and the
    rendered visible bool (H, W) mask of each annotation by annotation id.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    description = "mindseg synthetic shapes" + (f" ({style} style)" if style != "outline" else "")
    dataset = {
        "info": {"description": description, "version": "1.0", "year": 2024},
        "licenses": [],
        "images": [], "annotations": [], "categories": [dict(c) for c in CATEGORIES],
    }
    images, visible_by_ann = {}, {}
    ann_id = _ANN_ID_BASE[split]
    for index in range(num_images):
        rng = np.random.default_rng(_split_seed(seed, split) + [index])
        image_id = _IMAGE_ID_BASE[split] + index
        height, width = _image_size(image_size, rng)
        empty = split == "train2017" and index % EMPTY_EVERY == 3
        shapes = [] if empty else _scene(height, width, rng, style)
        image, visible = _render(height, width, shapes, rng, style)
        file_name = f"{image_id:012d}.jpg"
        dataset["images"].append({"id": image_id, "file_name": file_name,
                                  "height": height, "width": width})
        images[image_id] = image
        for shape, mask in zip(shapes, visible):
            if mask.sum() < MIN_AREA:
                continue
            segmentation = _segmentation(mask, shape["iscrowd"], rng)
            decoded = decode_segmentation(segmentation, height, width)
            dataset["annotations"].append({
                "id": ann_id, "image_id": image_id,
                "category_id": CATEGORY_IDS[shape["label"]],
                "segmentation": segmentation, "area": float(decoded.sum()),
                "bbox": _tight_box(decoded), "iscrowd": int(shape["iscrowd"]),
            })
            visible_by_ann[ann_id] = mask
            ann_id += 1
    return dataset, images, visible_by_ann


def make_synthetic_coco(out_dir, num_train=64, num_val=16, seed=0, image_size=256,
                        style="outline"):
    """Write a synthetic dataset of one of STYLES in the COCO 2017 layout under `out_dir`.

    out_dir/annotations/instances_{train,val}2017.json and out_dir/{train,val}2017/<id>.jpg.
    The same arguments give byte-identical files. Returns paths and counts.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    result = {"dataset_dir": out_dir, "style": style, "num_classes": len(CLASS_NAMES),
              "class_names": list(CLASS_NAMES), "category_ids": list(CATEGORY_IDS)}
    for split, count in zip(SPLITS, (num_train, num_val)):
        dataset, images, _ = generate_split(split, count, seed, image_size, style)
        image_dir = os.path.join(out_dir, split)
        os.makedirs(image_dir, exist_ok=True)
        for info in dataset["images"]:
            ok, encoded = cv2.imencode(".jpg", images[info["id"]],
                                       [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {info['file_name']}")
            with open(os.path.join(image_dir, info["file_name"]), "wb") as f:
                f.write(encoded.tobytes())
        ann_file = os.path.join(out_dir, "annotations", f"instances_{split}.json")
        with open(ann_file, "w") as f:
            json.dump(dataset, f)
        annotated = {a["image_id"] for a in dataset["annotations"]}
        key = split[:-4]  # "train" / "val"
        result[f"{key}_json"] = ann_file
        result[f"{key}_dir"] = image_dir
        result[f"num_{key}_images"] = len(dataset["images"])
        result[f"num_{key}_annotations"] = len(dataset["annotations"])
        result[f"num_{key}_empty_images"] = len(dataset["images"]) - len(annotated)
    return result
