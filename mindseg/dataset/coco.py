"""COCO-format annotation reading: category mapping, validation and per-image records.

:class:`CocoDataset` turns any COCO-format annotation file into the per-image record dicts of
``docs/contracts.md`` (with ``file_path`` instead of ``image_bytes``). COCO category ids map to
contiguous labels ``0..K-1`` in increasing id order and back (``category_ids[label]``); ``K``
comes from the file's ``categories``, nowhere else.

Bad input never stops loading unless ``strict``: each problem (missing image file, zero-size
box, box wholly outside its image, polygon with fewer than 3 points, annotation on an unknown
image or category, ...) is recorded as a :class:`Problem` naming the image id and file, and the
item is skipped. An annotation id that appears twice is recorded too, and both annotations are
kept (:meth:`CocoDataset.ground_truth` gives the later one a new id). A box reaching more than
``CLIP_TOLERANCE`` pixels outside its image is clipped to it, kept and recorded too (nearer ones, annotation-tool rounding, are clipped silently). With
``strict=True`` the first problem raises :class:`DataError` with the same text.
:mod:`mindseg.dataset.problems` prints them and the one counted summary convert_coco.py,
train.py and eval.py print.

:meth:`CocoDataset.ground_truth` is the COCO-format ground truth of exactly the images and
annotations kept, the one COCOeval and the drawings use, so that a skipped duplicate or bad entry
cannot come back through pycocotools' own reading of the raw file.

Segmentations are normalized so that both sources (JSON and MindRecord) give identical records:
a polygon is a flat list of Python floats holding float32 values (sub-millipixel rounding that
halves the MindRecord size of polygon-heavy data), an RLE is ``{"size": [h, w], "counts": bytes}`` in
pycocotools' compressed form (uncompressed crowd RLEs are compressed on load).
"""
import collections
import json
import math
import os

import numpy as np
from pycocotools import mask as mask_utils

from mindseg.dataset.problems import (PROBLEM_KINDS, Problem, problem_kind,  # noqa: F401
                                      summarize_problems)

CROWD_MODES = ("drop", "ignore")


class DataError(ValueError):
    """Bad input met in strict mode; the message names the image id and file."""


CLIP_TOLERANCE = 1.0  # pixels a box may reach outside its image before clipping is reported


def coco_paths(dataset_dir, split):
    """``(ann_file, image_dir)`` of ``split`` in the COCO 2017 layout:
    ``annotations/instances_<split>.json`` and ``<split>/``."""
    ann_file = os.path.join(dataset_dir, "annotations", f"instances_{split}.json")
    image_dir = os.path.join(dataset_dir, split)
    return ann_file, image_dir


def drop_crowd(record):
    """A copy of ``record`` without its crowd annotations (``iscrowd`` kept, all 0)."""
    keep = record["iscrowd"] == 0
    out = dict(record)
    out["boxes"] = record["boxes"][keep]
    out["labels"] = record["labels"][keep]
    out["iscrowd"] = record["iscrowd"][keep]
    out["segms"] = [s for s, k in zip(record["segms"], keep) if k]
    return out


def num_objects(record):
    """Number of non-crowd annotations: an image with none is 'empty' for training."""
    return int(np.sum(record["iscrowd"] == 0))


def ground_truth_of(ann_file):
    """``(ground truth, problems)`` of ``ann_file`` as :class:`CocoDataset` keeps it, crowd
    annotations and images whose file is missing included (evaluation names those itself)."""
    dataset = CocoDataset(ann_file, os.path.dirname(ann_file), crowd="ignore", filter_empty=False,
                          check_files=False)
    return dataset.ground_truth(), dataset.problems


def _load_json(ann_file):
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    with open(ann_file, "r", encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise DataError(f"{ann_file}: not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list):
        raise DataError(f"{ann_file}: not a COCO annotation file (needs 'images' and "
                        f"'categories' lists)")
    data.setdefault("annotations", [])
    return data


def _read_categories(categories, ann_file):
    """Sorted category ids and names; duplicate or missing ids are fatal (labels depend on them)."""
    if not categories:
        raise DataError(f"{ann_file}: 'categories' is empty; the number of classes comes from it")
    seen = {}
    for cat in categories:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise DataError(f"{ann_file}: category without an integer 'id': {cat!r}")
        if cat["id"] in seen:
            raise DataError(f"{ann_file}: category id {cat['id']} appears twice")
        seen[cat["id"]] = str(cat.get("name", cat["id"]))
    ids = sorted(seen)
    return ids, [seen[i] for i in ids]


def _polygon_problem(poly, index):
    if not isinstance(poly, (list, tuple)) or len(poly) % 2 != 0:
        return f"bad polygon: part {index} is not a flat list of x, y pairs"
    if len(poly) < 6:
        return f"bad polygon: part {index} has {len(poly) // 2} points (needs >= 3)"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
        return f"bad polygon: part {index} has non-finite or non-numeric coordinates"
    return None


def _normalize_segm(segm, height, width):
    """``(segm, problems)``: polygons as float lists (bad parts dropped) or a compressed RLE.

    ``segm`` is None when nothing usable is left.
    """
    if isinstance(segm, list):
        if not segm:
            return None, ["no segmentation: empty polygon list"]
        polys, problems = [], []
        for index, poly in enumerate(segm):
            reason = _polygon_problem(poly, index)
            if reason:
                problems.append(reason)
            else:
                polys.append(np.asarray(poly, np.float32).tolist())
        if not polys:
            return None, problems
        return polys, problems
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
            return None, [f"bad rle: size {size} differs from the image's [{height}, {width}]"]
        if isinstance(counts, list):
            try:
                rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts},
                                             height, width)
            except Exception as err:  # pycocotools raises bare Exceptions
                return None, [f"bad rle: {err}"]
            if int(np.sum(counts)) != height * width:
                return None, [f"bad rle: counts sum to {int(np.sum(counts))}, "
                              f"not {height} x {width}"]
            counts = rle["counts"]
        elif isinstance(counts, str):
            counts = counts.encode("ascii")
        elif not isinstance(counts, bytes):
            return None, ["bad rle: counts are neither a list nor a string"]
        if not counts:
            return None, ["bad rle: empty counts"]
        return {"size": [height, width], "counts": counts}, []
    return None, ["no segmentation"]


def _clip_box(bbox, height, width):
    """``(xyxy clipped to the image, problem or None)``; the box is None when nothing is left."""
    x, y, w, h = (float(v) for v in bbox)
    box = (x, y, x + w, y + h)
    clipped = (min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
               min(max(box[2], 0.0), width), min(max(box[3], 0.0), height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, (f"box outside image: [x, y, w, h] = {list(bbox)} lies wholly outside the "
                      f"{width}x{height} image")
    if max(abs(a - b) for a, b in zip(box, clipped)) > CLIP_TOLERANCE:
        kept = [round(clipped[0], 2), round(clipped[1], 2), round(clipped[2] - clipped[0], 2),
                round(clipped[3] - clipped[1], 2)]
        return clipped, (f"clipped box: [x, y, w, h] = {list(bbox)} reaches outside the "
                         f"{width}x{height} image; kept as {kept}")
    return clipped, None


def _box_problem(bbox):
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 \
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        return f"bad box: {bbox!r} is not 4 finite numbers"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return f"bad box: [x, y, w, h] = {list(bbox)} has zero or negative width/height"
    return None


def _kept_annotation(ann, clipped_box, segm_problems):
    """``ann`` as COCOeval's ground truth holds it: a reported clipped box clipped, as the
    records hold it, and without the polygon parts that were dropped."""
    changes = {}
    if clipped_box is not None:
        x0, y0, x1, y1 = clipped_box
        changes["bbox"] = [x0, y0, x1 - x0, y1 - y0]
    if segm_problems:
        changes["segmentation"] = [part for k, part in enumerate(ann["segmentation"])
                                   if not _polygon_problem(part, k)]
    return dict(ann, **changes) if changes else ann


class CocoDataset:
    """Per-image records of a COCO-format annotation file.

    Args:
        ann_file: the COCO JSON.
        image_dir: folder the images' ``file_name`` are relative to.
        crowd: ``"drop"`` removes crowd annotations; ``"ignore"`` keeps them with ``iscrowd`` 1
            (ignore regions for the matchers). Records always carry ``iscrowd``.
        filter_empty: skip images without non-crowd annotations (training); eval sets False.
        strict: raise :class:`DataError` at the first problem instead of skipping.
        check_files: check that each image file exists (one ``stat`` per image).

    Attributes: ``records``, ``num_classes``, ``class_names``, ``category_ids`` (label -> COCO
    id), ``problems`` (list of :class:`Problem`), ``num_empty`` (images without non-crowd
    annotations), ``num_crowd_dropped``; :meth:`ground_truth` is what COCOeval scores against.
    """

    def __init__(self, ann_file, image_dir, crowd="drop", filter_empty=True, strict=False,
                 check_files=True):
        if crowd not in CROWD_MODES:
            raise ValueError(f"crowd must be one of {CROWD_MODES}, got {crowd!r}")
        self.ann_file = os.path.abspath(ann_file)
        self.image_dir = os.path.abspath(image_dir)
        self.crowd = crowd
        self.filter_empty = filter_empty
        self.strict = strict
        self.problems = []
        self.num_empty = 0
        self.num_crowd_dropped = 0

        data = _load_json(self.ann_file)
        self.category_ids, self.class_names = _read_categories(data["categories"], self.ann_file)
        self.num_classes = len(self.category_ids)
        self._label_of_category = {cid: label for label, cid in enumerate(self.category_ids)}
        self._categories = data["categories"]
        self._kept_anns = []  # the annotations kept, as written (bad polygon parts left out)
        self.records = self._build_records(data, check_files)

    def __len__(self):
        return len(self.records)

    def label_to_category_id(self, label):
        return self.category_ids[int(label)]

    def category_id_to_label(self, category_id):
        return self._label_of_category[int(category_id)]

    def read_image_bytes(self, record):
        """The image file's bytes as stored (never re-encoded)."""
        path = record["file_path"]
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as err:
            raise DataError(f"image {record['image_id']} ({record['file_name']}): cannot read "
                            f"{path}: {err.strerror}") from None

    def summary(self):
        return summarize_problems(self.problems)

    def ground_truth(self):
        """COCO-format dict of the images of ``records`` and their kept annotations, as the file
        writes them (crowd ones included, which COCOeval ignores; bad polygon parts left out). An
        annotation whose id was taken already, or that has none, gets an id after the largest."""
        kept = {r["image_id"]: r for r in self.records}
        images = [{"id": r["image_id"], "file_name": r["file_name"], "height": r["height"],
                   "width": r["width"]} for r in self.records]
        taken = [a["id"] for a in self._kept_anns if isinstance(a.get("id"), int)]
        next_id, used, anns = max(taken, default=0) + 1, set(), []
        for ann in self._kept_anns:
            if ann["image_id"] not in kept:
                continue
            if not isinstance(ann.get("id"), int) or ann["id"] in used:
                ann, next_id = dict(ann, id=next_id), next_id + 1
            used.add(ann["id"])
            anns.append(ann)
        return {"images": images, "annotations": anns, "categories": self._categories}

    def _problem(self, image_id, file_name, reason):
        problem = Problem(image_id, file_name, reason)
        if self.strict:
            raise DataError(f"{self.ann_file}: {problem}")
        self.problems.append(problem)

    def _read_images(self, images):
        """Valid image entries by id; bad entries and missing files become problems."""
        by_id = {}
        for entry in images:
            image_id = entry.get("id") if isinstance(entry, dict) else None
            file_name = entry.get("file_name", "?") if isinstance(entry, dict) else "?"
            if not isinstance(image_id, int):
                self._problem(image_id, file_name, f"bad image entry: no integer 'id': {entry!r}")
                continue
            if image_id in by_id:
                self._problem(image_id, file_name, "bad image entry: image id appears twice")
                continue
            height, width = entry.get("height"), entry.get("width")
            if not (isinstance(height, int) and isinstance(width, int) and height > 0
                    and width > 0 and isinstance(entry.get("file_name"), str)):
                self._problem(image_id, file_name,
                              "bad image entry: needs 'file_name' and positive 'height', 'width'")
                continue
            by_id[image_id] = entry
        return by_id

    def _build_records(self, data, check_files):
        images = self._read_images(data["images"])
        anns_of_image, ann_ids = collections.defaultdict(list), set()
        for ann in data["annotations"]:
            image_id = ann.get("image_id")
            if image_id not in images:
                self._problem(image_id, "<unknown image>",
                              f"unknown image id: annotation {ann.get('id')} refers to image id "
                              f"{image_id}, which is not in 'images'")
                continue
            ann_id = ann.get("id")
            if isinstance(ann_id, int):
                if ann_id in ann_ids:
                    self._problem(image_id, images[image_id]["file_name"],
                                  f"duplicate annotation id: annotation {ann_id} appears more "
                                  f"than once; both kept, this one under a new id for COCOeval")
                ann_ids.add(ann_id)
            anns_of_image[image_id].append(ann)

        records = []
        for image_id in sorted(images):
            entry = images[image_id]
            file_name = entry["file_name"]
            file_path = os.path.join(self.image_dir, file_name)
            if check_files and not os.path.isfile(file_path):
                self._problem(image_id, file_name, f"missing image file: {file_path}")
                continue
            record = self._make_record(entry, file_path, anns_of_image.get(image_id, []))
            if num_objects(record) == 0:
                self.num_empty += 1
                if self.filter_empty:
                    continue
            records.append(record)
        return records

    def _make_record(self, entry, file_path, anns):
        image_id, file_name = entry["id"], entry["file_name"]
        height, width = entry["height"], entry["width"]
        boxes, labels, iscrowd, segms = [], [], [], []
        for ann in anns:
            where = f"annotation {ann.get('id')}"
            crowd = int(bool(ann.get("iscrowd", 0)))
            if crowd and self.crowd == "drop":
                self.num_crowd_dropped += 1
                self._kept_anns.append(ann)  # an ignore region for COCOeval all the same
                continue
            category_id = ann.get("category_id")
            if category_id not in self._label_of_category:
                self._problem(image_id, file_name,
                              f"unknown category id: {where} has category id {category_id}")
                continue
            reason = _box_problem(ann.get("bbox"))
            if reason:
                self._problem(image_id, file_name, f"{reason} ({where})")
                continue
            box, clipped = _clip_box(ann["bbox"], height, width)
            if clipped:
                self._problem(image_id, file_name,
                              f"{clipped} ({where}{'' if box else '; dropped'})")
            if box is None:
                continue
            segm, reasons = _normalize_segm(ann.get("segmentation"), height, width)
            for reason in reasons:
                dropped = "the annotation" if segm is None else "this part"
                self._problem(image_id, file_name, f"{reason} ({where}; dropped {dropped})")
            if segm is None:
                continue
            self._kept_anns.append(_kept_annotation(ann, box if clipped else None, reasons))
            boxes.append(box)
            labels.append(self._label_of_category[category_id])
            iscrowd.append(crowd)
            segms.append(segm)
        return {
            "image_id": image_id,
            "file_name": file_name,
            "file_path": file_path,
            "height": height,
            "width": width,
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int32),
            "iscrowd": np.asarray(iscrowd, np.uint8),
            "segms": segms,
        }
