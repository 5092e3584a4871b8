"""Run a MINDIR that export.py wrote, with MindSpore, NumPy and OpenCV only (no mindseg).

    python examples/deploy_mindir.py --mindir model.mindir --image street.jpg --output drawn.png

Reads the JSON export.py wrote beside the graph (same stem, ``.json``): the input shapes, the
preprocessing, the output names and the class names. Prints one line per detection
(``car 0.912 box 12.3 40.1 220.7 180.0 mask 10432 px``) and, with ``--output``, draws them;
``--json`` writes them as a list of dicts. Copy this file into your own application: every step
a deployment needs is here, in about 150 lines.
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np
import mindspore as ms
from mindspore import nn


def load(mindir_path):
    """The compiled graph and its description."""
    spec_path = os.path.splitext(mindir_path)[0] + ".json"
    with open(spec_path, "r", encoding="utf-8") as f:
        spec = json.load(f)
    return nn.GraphCell(ms.load(mindir_path)), spec


def preprocess(image_bgr, pre):
    """uint8 (h, w, 3) BGR -> the normalised (3, H, W) canvas, its resized (h', w') and the
    scale (h' / h, w' / w): the steps the JSON's ``preprocess`` section spells out."""
    height, width = image_bgr.shape[:2]
    canvas_h, canvas_w = pre["canvas"]
    scale = pre["min_size"] / min(height, width)
    if max(height, width) * scale > pre["max_size"]:
        scale = pre["max_size"] / max(height, width)
    scale = min(scale, canvas_h / height, canvas_w / width)
    new_h = min(int(height * scale + 0.5), canvas_h)
    new_w = min(int(width * scale + 0.5), canvas_w)
    resized = image_bgr if (new_h, new_w) == (height, width) else \
        cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if pre["channel_order"] == "RGB":
        resized = resized[:, :, ::-1]
    mean = np.array(pre["mean"], np.float32).reshape(3, 1, 1)
    std = np.array(pre["std"], np.float32).reshape(3, 1, 1)
    normalised = (resized.transpose(2, 0, 1).astype(np.float32) - mean) / std
    padded = np.zeros((3, canvas_h, canvas_w), np.float32)
    padded[:, :new_h, :new_w] = normalised
    return padded, np.array([new_h, new_w], np.float32), (new_h / height, new_w / width)


def paste_weights(start, end, cells, length):
    """(length, cells) bilinear weights of pixel centres over cells spanning [start, end], zero
    outside the cells."""
    centre = (np.arange(length) + 0.5 - start) / max(end - start, 1e-6) * cells - 0.5
    low = np.floor(centre).astype(np.int64)
    frac = centre - low
    weights = np.zeros((length, cells + 2))
    rows = np.arange(length)
    weights[rows, np.clip(low + 1, 0, cells + 1)] += 1 - frac
    weights[rows, np.clip(low + 2, 0, cells + 1)] += frac
    return weights[:, 1:-1]


def paste(probs, box, height, width, threshold):
    """A (S, S) mask probability grid over ``box`` (original pixels) -> a (height, width) bool
    mask."""
    mask = np.zeros((height, width), bool)
    x0, y0 = int(np.clip(np.floor(box[0]) - 1, 0, width)), int(np.clip(np.floor(box[1]) - 1, 0, height))
    x1, y1 = int(np.clip(np.ceil(box[2]) + 1, 0, width)), int(np.clip(np.ceil(box[3]) + 1, 0, height))
    if x1 > x0 and y1 > y0:
        wy = paste_weights(box[1] - y0, box[3] - y0, probs.shape[0], y1 - y0)
        wx = paste_weights(box[0] - x0, box[2] - x0, probs.shape[1], x1 - x0)
        mask[y0:y1, x0:x1] = wy @ probs.astype(np.float64) @ wx.T >= threshold
    return mask


def detect(graph, spec, image_bgr, score_thresh=0.5):
    """Detections of one image, best first: dicts with class_id, class_name, score, box (x0, y0,
    x1, y1 in original pixels) and mask ((h, w) bool)."""
    height, width = image_bgr.shape[:2]
    image, size, (scale_h, scale_w) = preprocess(image_bgr, spec["preprocess"])
    batch = spec["inputs"][0]["shape"][0]  # the graph's fixed batch: fill it with copies
    outputs = graph(ms.Tensor(np.stack([image] * batch)), ms.Tensor(np.stack([size] * batch)))
    out = {o["name"]: value.asnumpy()[0] for o, value in zip(spec["outputs"], outputs)}
    keep = np.flatnonzero(out["valid"].astype(bool) & (out["scores"] >= score_thresh))
    keep = keep[np.argsort(-out["scores"][keep], kind="stable")]
    threshold = spec["postprocess"]["mask_threshold"]
    canvas_h, canvas_w = spec["preprocess"]["canvas"]
    found = []
    for k in keep:
        box = out["boxes"][k].astype(np.float64) / [scale_w, scale_h, scale_w, scale_h]
        box = np.clip(box, 0, [width, height, width, height])
        if "mask_probs" in out:  # a grid over the detection's box
            mask = paste(out["mask_probs"][k], box, height, width, threshold)
        else:                    # a grid over the whole padded canvas
            mask = paste(out["masks"][k], [0, 0, canvas_w / scale_w, canvas_h / scale_h],
                         height, width, threshold)
        class_id = int(out["classes"][k])
        found.append({"class_id": class_id, "class_name": spec["class_names"][class_id],
                      "score": float(out["scores"][k]), "box": [float(v) for v in box],
                      "mask": mask})
    return found


def draw(image_bgr, detections):
    drawn = image_bgr.copy()
    for i, det in enumerate(detections):
        color = np.array([(67 * i + 80) % 256, (151 * i + 40) % 256, (29 * i + 200) % 256], np.uint8)
        drawn[det["mask"]] = (0.5 * drawn[det["mask"]] + 0.5 * color).astype(np.uint8)
        x0, y0, x1, y1 = (int(round(v)) for v in det["box"])
        cv2.rectangle(drawn, (x0, y0), (x1, y1), color.tolist(), 2)
        cv2.putText(drawn, f"{det['class_name']} {det['score']:.2f}", (x0, max(y0 - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, color.tolist(), 1)
    return drawn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mindir", required=True, help="the .mindir export.py wrote (its .json beside it)")
    parser.add_argument("--image", required=True, help="an image file")
    parser.add_argument("--score_thresh", type=float, default=None,
                        help="keep detections scored at least this (default: the JSON's postprocess.draw_thresh)")
    parser.add_argument("--output", default=None, help="write the drawn detections to this image file")
    parser.add_argument("--json", default=None, help="write the detections (masks as pixel counts) here")
    args = parser.parse_args(argv)
    # the stored pixels, EXIF orientation ignored, as mindseg decodes (COCO boxes are in that frame)
    image = cv2.imread(args.image, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        sys.exit(f"deploy_mindir.py: error: cannot read {args.image} as an image")
    graph, spec = load(args.mindir)
    if args.score_thresh is None:
        args.score_thresh = spec["postprocess"].get("draw_thresh", 0.5)
    detections = detect(graph, spec, image, args.score_thresh)
    for det in detections:
        print(f"{det['class_name']} {det['score']:.3f} box {' '.join(f'{v:.1f}' for v in det['box'])} "
              f"mask {int(det['mask'].sum())} px")
    print(f"{len(detections)} detection(s) with score >= {args.score_thresh}")
    if args.output and not cv2.imwrite(args.output, draw(image, detections)):
        sys.exit(f"deploy_mindir.py: error: cannot write {args.output}")
    if args.json:
        rows = [{**{k: v for k, v in det.items() if k != "mask"}, "mask_pixels": int(det["mask"].sum())}
                for det in detections]
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f)
    return detections


if __name__ == "__main__":
    main()
