"""NumPy references for mindseg's geometry and target assignment, importable by every test.

Written loop-by-loop from the published definitions (detectron2, torchvision, centermask2) so
that the MindSpore versions are checked against an independent formulation.
"""
import math

import numpy as np


def box_area(boxes):
    boxes = np.asarray(boxes, np.float64)
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def pairwise_iou(boxes1, boxes2):
    """(N, 4), (M, 4) -> (N, M), 0 where the union is empty."""
    a = np.asarray(boxes1, np.float64)[:, None, :]
    b = np.asarray(boxes2, np.float64)[None, :, :]
    inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
             * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
    union = box_area(a) + box_area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def encode_boxes(ref, target, weights=(1.0, 1.0, 1.0, 1.0)):
    ref = np.asarray(ref, np.float64)
    target = np.asarray(target, np.float64)
    rw, rh = ref[..., 2] - ref[..., 0], ref[..., 3] - ref[..., 1]
    rx, ry = ref[..., 0] + 0.5 * rw, ref[..., 1] + 0.5 * rh
    tw, th = target[..., 2] - target[..., 0], target[..., 3] - target[..., 1]
    tx, ty = target[..., 0] + 0.5 * tw, target[..., 1] + 0.5 * th
    wx, wy, ww, wh = weights
    return np.stack([wx * (tx - rx) / rw, wy * (ty - ry) / rh, ww * np.log(tw / rw), wh * np.log(th / rh)], -1)


def decode_boxes(ref, deltas, weights=(1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(1000.0 / 16)):
    ref = np.asarray(ref, np.float64)
    deltas = np.asarray(deltas, np.float64)
    rw, rh = ref[..., 2] - ref[..., 0], ref[..., 3] - ref[..., 1]
    rx, ry = ref[..., 0] + 0.5 * rw, ref[..., 1] + 0.5 * rh
    wx, wy, ww, wh = weights
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = np.minimum(deltas[..., 2] / ww, scale_clamp)
    dh = np.minimum(deltas[..., 3] / wh, scale_clamp)
    cx, cy = dx * rw + rx, dy * rh + ry
    w, h = np.exp(dw) * rw, np.exp(dh) * rh
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def giou_loss(pred, target):
    pred = np.asarray(pred, np.float64).reshape(-1, 4)
    target = np.asarray(target, np.float64).reshape(-1, 4)
    out = []
    for p, t in zip(pred, target):
        iou = pairwise_iou(p[None], t[None])[0, 0]
        iw = max(0.0, min(p[2], t[2]) - max(p[0], t[0]))
        ih = max(0.0, min(p[3], t[3]) - max(p[1], t[1]))
        union = box_area(p) + box_area(t) - iw * ih
        hull = (max(p[2], t[2]) - min(p[0], t[0])) * (max(p[3], t[3]) - min(p[1], t[1]))
        out.append(1.0 - (iou - (hull - union) / hull))
    return np.asarray(out)


def greedy_nms(boxes, scores, valid, iou_threshold, classes=None):
    """Indices kept by greedy NMS (IoU > threshold suppresses), in descending score order."""
    iou = pairwise_iou(boxes, boxes)
    order = [i for i in np.argsort(-np.asarray(scores, np.float64), kind="stable") if valid[i]]
    kept = []
    for i in order:
        if not any(iou[i, j] > iou_threshold and (classes is None or classes[i] == classes[j])
                   for j in kept):
            kept.append(int(i))
    return kept


def bilinear(feature, y, x):
    """detectron2 / caffe2 RoIAlign bilinear read of feature (C, H, W) at (y, x); 0 outside [-1, H]."""
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return ((1 - ly) * (1 - lx) * feature[:, y_low, x_low] + (1 - ly) * lx * feature[:, y_low, x_high]
            + ly * (1 - lx) * feature[:, y_high, x_low] + ly * lx * feature[:, y_high, x_high])


def roi_align(feature, roi, output_size, scale, sampling_ratio, aligned):
    """RoIAlign of one roi (4,) on one feature (C, H, W) -> (C, out, out), detectron2 semantics."""
    feature = np.asarray(feature, np.float64)
    offset = 0.5 if aligned else 0.0
    x0, y0, x1, y1 = [float(v) * scale - offset for v in roi]
    roi_w, roi_h = x1 - x0, y1 - y0
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_w, bin_h = roi_w / output_size, roi_h / output_size
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / output_size))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / output_size))
    count = max(grid_h * grid_w, 1)
    out = np.zeros((feature.shape[0], output_size, output_size))
    for py in range(output_size):
        for px in range(output_size):
            acc = np.zeros(feature.shape[0])
            for iy in range(grid_h):
                y = y0 + py * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x0 + px * bin_w + (ix + 0.5) * bin_w / grid_w
                    acc += bilinear(feature, y, x)
            out[:, py, px] = acc / count
    return out


def fpn_level(boxes, canonical_size=224, canonical_level=4, min_level=2, max_level=5):
    size = np.sqrt(box_area(boxes))
    return np.clip(np.floor(canonical_level + np.log2(size / canonical_size + 1e-8)), min_level, max_level).astype(int)


def centermask_level(boxes, image_area, min_level=3, max_level=5):
    area = np.maximum(box_area(boxes), 1e-6)
    return np.clip(np.ceil(max_level - np.log2(image_area / area)), min_level, max_level).astype(int)


def multilevel_roi_align(features, rois, levels, output_size, scales, sampling_ratio, aligned):
    """features: list of (B, C, Hi, Wi); rois (B, R, 4); levels (B, R) index into features."""
    batch, num_rois = rois.shape[:2]
    out = []
    for b in range(batch):
        for r in range(num_rois):
            lvl = int(levels[b, r])
            out.append(roi_align(features[lvl][b], rois[b, r], output_size, scales[lvl], sampling_ratio, aligned))
    return np.stack(out)


def match(iou, gt_valid, thresholds, allow_low_quality_matches):
    """detectron2 Matcher on one image: iou (G, N), gt_valid (G,) -> (matched_idx, labels)."""
    iou = np.asarray(iou, np.float64)[np.asarray(gt_valid, bool)]
    valid_ids = np.flatnonzero(gt_valid)
    num = iou.shape[1]
    if len(valid_ids) == 0:
        return np.zeros(num, int), np.zeros(num, int)
    best = iou.max(0)
    matched = valid_ids[iou.argmax(0)]
    labels = np.where(best >= thresholds[1], 1, np.where(best >= thresholds[0], -1, 0))
    if allow_low_quality_matches:
        for row in iou:
            if row.max() > 0:
                labels[row == row.max()] = 1
    return matched, labels


def anchors_detectron2(feature_shape, stride, sizes, ratios, offset):
    """Loop-by-loop DefaultAnchorGenerator for one level: (h * w * A, 4)."""
    out = []
    for row in range(feature_shape[0]):
        for col in range(feature_shape[1]):
            cx, cy = col * stride + offset * stride, row * stride + offset * stride
            for size in sizes:
                for ratio in ratios:
                    w = math.sqrt(size * size / ratio)
                    h = ratio * w
                    out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return np.asarray(out)


def mask_target(crop, gt_box, roi, size):
    """One RoI's (size, size) target from a gt crop (M, M) over gt_box, loop by loop."""
    crop = np.asarray(crop, np.float64)
    m = crop.shape[0]
    out = np.zeros((size, size))

    def axis(value, start, end):
        u = (value - start) / max(end - start, 1e-6) * m
        if u < 0 or u > m:
            return None
        c = min(max(u - 0.5, 0.0), m - 1.0)
        low = int(np.floor(c))
        return low, min(low + 1, m - 1), c - low

    for i in range(size):
        y = roi[1] + (i + 0.5) / size * (roi[3] - roi[1])
        ay = axis(y, gt_box[1], gt_box[3])
        for j in range(size):
            x = roi[0] + (j + 0.5) / size * (roi[2] - roi[0])
            ax = axis(x, gt_box[0], gt_box[2])
            if ay is None or ax is None:
                continue
            (y0, y1, fy), (x0, x1, fx) = ay, ax
            out[i, j] = ((1 - fy) * (1 - fx) * crop[y0, x0] + (1 - fy) * fx * crop[y0, x1]
                         + fy * (1 - fx) * crop[y1, x0] + fy * fx * crop[y1, x1])
    return (out >= 0.5).astype(np.float32)


def paste_mask(mask, box, height, width, threshold=0.5):
    """detectron2 paste: every image pixel centre mapped into the mask, zero padding, bilinear."""
    mask = np.asarray(mask, np.float64)
    s = mask.shape[0]
    out = np.zeros((height, width), np.uint8)
    padded = np.pad(mask, 1)
    for y in range(height):
        cy = (y + 0.5 - box[1]) / (box[3] - box[1]) * s - 0.5
        for x in range(width):
            cx = (x + 0.5 - box[0]) / (box[2] - box[0]) * s - 0.5
            if cy <= -1 or cy >= s or cx <= -1 or cx >= s:
                continue
            y0, x0 = int(np.floor(cy)), int(np.floor(cx))
            fy, fx = cy - y0, cx - x0
            v = ((1 - fy) * (1 - fx) * padded[y0 + 1, x0 + 1] + (1 - fy) * fx * padded[y0 + 1, x0 + 2]
                 + fy * (1 - fx) * padded[y0 + 2, x0 + 1] + fy * fx * padded[y0 + 2, x0 + 2])
            out[y, x] = v >= threshold
    return out
