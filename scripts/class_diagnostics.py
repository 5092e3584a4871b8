"""How much of a model's COCO AP its classifier costs.

    python scripts/class_diagnostics.py --ann ANN.json --results RESULTS.json [--iou 0.5]

ANN.json is the ground truth eval.py was run on, RESULTS.json the ``results.json`` eval.py wrote
beside its metrics. Prints:

- bbox and segm AP as COCO computes them (class-aware), and again with every category merged
  into one (class-agnostic: a detection counts whatever class it names; each image keeps its 100
  best). The gap is what wrong classes cost; the class-agnostic AP is what a perfect classifier
  on the same boxes and masks would approach.
- a confusion matrix: for each ground-truth object (crowd regions left out), the class of the
  best-scoring detection whose box overlaps it at IoU >= --iou, or "missed" when none does; and
  the share of found objects whose best detection names the right class.
"""
import argparse
import json
import os
import sys

import numpy as np
from pycocotools import mask as mask_util

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mindseg.engine.evaluator import evaluate_coco  # noqa: E402

MAX_DETS = 100


def class_aps(ann_file, results, iou_types=("bbox",)):
    """{iou_type: (class-aware AP, class-agnostic AP)} in percent, both by eval.py's
    :func:`~mindseg.engine.evaluator.evaluate_coco` (CenterMask's segm_score included), on the
    annotation file as it is (box-only files included) and on its one-category merge."""
    with open(ann_file, "r", encoding="utf-8") as f:
        gt = json.load(f)
    merged_gt, merged = merge_categories(gt, results)
    quiet = lambda line: None  # noqa: E731
    aware = evaluate_coco(results, gt, iou_types, log=quiet)
    agnostic = evaluate_coco(merged, merged_gt, iou_types, log=quiet)
    return {t: (aware[t]["AP"], agnostic[t]["AP"]) for t in iou_types}


def merge_categories(gt, results, max_dets=MAX_DETS):
    """(gt, results) with every category made one (id 1); each image keeps its ``max_dets``
    best-scoring detections, since a box detected under several classes now competes with itself."""
    merged_gt = dict(gt, categories=[{"id": 1, "name": "object", "supercategory": "object"}],
                     annotations=[dict(a, category_id=1) for a in gt["annotations"]])
    per_image = {}
    for det in results:
        per_image.setdefault(det["image_id"], []).append(dict(det, category_id=1))
    merged = [det for dets in per_image.values()
              for det in sorted(dets, key=lambda d: -d["score"])[:max_dets]]
    return merged_gt, merged


def confusion_matrix(gt, results, iou=0.5):
    """(K, K + 1) int counts, rows the ground-truth category (in ``gt["categories"]`` order),
    columns the category of the best-scoring detection with box IoU >= ``iou``, the last column
    objects that no detection overlaps that much. Crowd annotations are left out."""
    cat_ids = [c["id"] for c in gt["categories"]]
    column = {cat: k for k, cat in enumerate(cat_ids)}
    per_image = {}
    for det in results:
        per_image.setdefault(det["image_id"], []).append(det)
    counts = np.zeros((len(cat_ids), len(cat_ids) + 1), np.int64)
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        row = column[ann["category_id"]]
        dets = per_image.get(ann["image_id"], [])
        if dets:
            overlaps = mask_util.iou([d["bbox"] for d in dets], [ann["bbox"]], [0])[:, 0]
            hits = [d for d, o in zip(dets, overlaps) if o >= iou]
        else:
            hits = []
        if not hits:
            counts[row, -1] += 1
            continue
        best = max(hits, key=lambda d: d["score"])
        counts[row, column[best["category_id"]]] += 1
    return counts


def top1_accuracy(counts):
    """Share of found objects (all but the last column) whose best detection is right."""
    found = counts[:, :-1]
    return float(np.trace(found) / max(found.sum(), 1))


def _load_json(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann", required=True, help="ground-truth COCO annotation file")
    parser.add_argument("--results", required=True, help="eval.py's results.json")
    parser.add_argument("--iou", type=float, default=0.5,
                        help="box IoU at which a detection counts as finding an object")
    args = parser.parse_args(argv)
    try:
        gt, results = _load_json(args.ann), _load_json(args.results)
    except ValueError as err:
        print(f"class_diagnostics.py: error: {err}", file=sys.stderr)
        return 2
    iou_types = ["bbox"] + (["segm"] if results and all("segmentation" in r for r in results) else [])
    for iou_type, (aware, agnostic) in class_aps(args.ann, results, iou_types).items():
        print(f"{iou_type}: class-aware AP {aware:.2f}, class-agnostic AP {agnostic:.2f}")
    counts = confusion_matrix(gt, results, args.iou)
    names = [c["name"][:9] for c in gt["categories"]]
    print(f"\nground truth (rows) against the best detection's class at box IoU >= {args.iou}:")
    print(" " * 10 + "".join(f"{n:>10}" for n in names + ["missed"]))
    for name, row in zip(names, counts):
        print(f"{name:>10}" + "".join(f"{v:>10d}" for v in row))
    print(f"best detection names the right class for {top1_accuracy(counts):.0%} of "
          f"{int(counts[:, :-1].sum())} found objects; {int(counts[:, -1].sum())} missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
