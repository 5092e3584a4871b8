"""Drawing detections onto an image: filled translucent masks, mask outlines, boxes, and a label
``class score`` per instance. Host-side OpenCV on (h, w, 3) uint8 BGR images.

Shape shorthand: D detections of one image, h w the image's size.
"""
import cv2
import numpy as np

MASK_ALPHA = 0.45
SCORE_THRESH = 0.5  # drawing threshold where no config says (eval.draw_thresh) and for graphs exported without it


def instance_color(index):
    """A distinct, stable BGR colour for the ``index``-th class (golden-ratio hue steps)."""
    hue = int((index * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _label_text(class_names, label, score=None):
    name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
    return name if score is None else f"{name} {score:.2f}"


def draw_instances(image, boxes, labels, scores, masks=None, class_names=()):
    """Return a copy of ``image`` (h, w, 3) uint8 BGR with D instances drawn on it.

    ``boxes`` (D, 4) xyxy in the image's pixels, ``labels`` (D,) contiguous class indices,
    ``scores`` (D,) or None (ground truth: labels name the class only), ``masks`` (D, h, w)
    bool or None. Colours follow the class.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_instances needs an (h, w, 3) uint8 image, got {image.shape} "
                         f"{image.dtype}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    scores = None if scores is None else np.asarray(scores, np.float32).reshape(-1)
    if len(boxes) != len(labels) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(f"draw_instances: {len(boxes)} boxes, {len(labels)} labels and "
                         f"{len(boxes) if scores is None else len(scores)} scores differ in number")
    if masks is not None and len(masks) != len(boxes):
        raise ValueError(f"draw_instances: {len(masks)} masks for {len(boxes)} boxes")
    canvas = image.copy()
    height, width = canvas.shape[:2]
    # largest first, so small instances stay visible on top
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-areas, kind="stable")
    if masks is not None:
        for k in order:
            mask = np.asarray(masks[k], bool)
            if mask.shape != (height, width):
                raise ValueError(f"draw_instances: mask {k} is {mask.shape}, the image "
                                 f"{(height, width)}")
            color = np.array(instance_color(labels[k]), np.float32)
            canvas[mask] = (canvas[mask] * (1 - MASK_ALPHA) + color * MASK_ALPHA).astype(np.uint8)
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, instance_color(labels[k]), 1)
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.35, min(height, width) / 900)
    for k in order:
        color = instance_color(labels[k])
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[k])
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thickness)
        score = None if scores is None else float(scores[k])
        text = _label_text(class_names, int(labels[k]), score)
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = y0 - text_h - baseline if y0 - text_h - baseline >= 0 else y0
        cv2.rectangle(canvas, (x0, top), (x0 + text_w, top + text_h + baseline), color, -1)
        cv2.putText(canvas, text, (x0, top + text_h), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def side_by_side(left, right, titles=("", ""), gap=8):
    """``left`` and ``right`` (h, w, 3) uint8 images next to each other on white, ``gap`` px
    apart, each under a title line; returns the (h + title, 2 w + gap, 3) picture."""
    if left.shape != right.shape:
        raise ValueError(f"side_by_side: {left.shape} and {right.shape} differ")
    height, width = left.shape[:2]
    font_scale = max(0.4, min(height, width) / 700)
    widest = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0][0] for t in titles)
    font_scale = min(font_scale, (width - 4) / max(widest, 1))  # each title fits its image
    text_h = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][1]
    title_h = text_h * 2 + 6
    canvas = np.full((height + title_h, 2 * width + gap, 3), 255, np.uint8)
    for column, image, title in ((0, left, titles[0]), (width + gap, right, titles[1])):
        canvas[title_h:, column:column + width] = image
        cv2.putText(canvas, title, (column + 2, title_h - text_h // 2 - 3),
                    cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
