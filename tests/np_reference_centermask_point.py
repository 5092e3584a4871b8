"""NumPy references for CenterMask with point representation (targets, mask assembly, losses),
written loop by loop from CenterNet's definitions (``gaussian_radius``, ``draw_umich_gaussian``,
``FocalLoss``, ``RegL1Loss``) and the paper's mask assembly, independent of the MindSpore code."""
import math

import numpy as np


def gaussian_radius(height, width, min_overlap=0.7):
    a1, b1, c1 = 1.0, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4.0, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap, cx, cy, radius):
    """CenterNet's draw_umich_gaussian: a (2r+1)^2 window, sigma (2r+1)/6, max into heatmap."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    out_h, out_w = heatmap.shape
    for y in range(max(0, cy - radius), min(out_h, cy + radius + 1)):
        for x in range(max(0, cx - radius), min(out_w, cx + radius + 1)):
            value = math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))
            heatmap[y, x] = max(heatmap[y, x], value)


def centernet_targets(boxes, labels, valid, num_classes, output_shape, stride, min_overlap=0.7):
    """One image: boxes (G, 4) pixels -> heatmap (K, Ho, Wo), index (G,), offset (G, 2),
    size (G, 2), obj_valid (G,)."""
    out_h, out_w = output_shape
    num = len(boxes)
    heatmap = np.zeros((num_classes, out_h, out_w))
    index, offset, size = np.zeros(num, np.int64), np.zeros((num, 2)), np.zeros((num, 2))
    obj_valid = np.zeros(num, bool)
    for g in range(num):
        if not valid[g]:
            continue
        x0, y0, x1, y1 = (float(v) / stride for v in boxes[g])
        x0, x1 = min(max(x0, 0.0), out_w), min(max(x1, 0.0), out_w)
        y0, y1 = min(max(y0, 0.0), out_h), min(max(y1, 0.0), out_h)
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(math.floor(cx)), out_w - 1), min(int(math.floor(cy)), out_h - 1)
        radius = max(0, int(gaussian_radius(math.ceil(h), math.ceil(w), min_overlap)))
        draw_gaussian(heatmap[int(labels[g])], ix, iy, radius)
        index[g], offset[g], size[g], obj_valid[g] = iy * out_w + ix, (cx - ix, cy - iy), (w, h), True
    return heatmap, index, offset, size, obj_valid


def bilinear_border(feature, y, x):
    """feature (H, W) at continuous map coordinates (pixel i spans [i, i + 1)), clamped to the
    border pixel centres."""
    h, w = feature.shape
    cy, cx = min(max(y - 0.5, 0.0), h - 1.0), min(max(x - 0.5, 0.0), w - 1.0)
    y0, x0 = int(math.floor(cy)), int(math.floor(cx))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    fy, fx = cy - y0, cx - x0
    return ((1 - fy) * (1 - fx) * feature[y0, x0] + (1 - fy) * fx * feature[y0, x1]
            + fy * (1 - fx) * feature[y1, x0] + fy * fx * feature[y1, x1])


def crop_saliency(saliency, box, stride, resolution):
    """saliency (H, W) of one class, box (4,) pixels -> (R, R) read at the box's bin centres."""
    out = np.zeros((resolution, resolution))
    for i in range(resolution):
        y = (box[1] + (i + 0.5) / resolution * (box[3] - box[1])) / stride
        for j in range(resolution):
            x = (box[0] + (j + 0.5) / resolution * (box[2] - box[0])) / stride
            out[i, j] = bilinear_border(saliency, y, x)
    return out


def resize_shape(shape, resolution):
    """(S, S) -> (R, R) bilinear with half-pixel centres (edge-clamped)."""
    size = shape.shape[0]
    out = np.zeros((resolution, resolution))
    scale = size / resolution
    for i in range(resolution):
        for j in range(resolution):
            out[i, j] = bilinear_border(shape, (i + 0.5) * scale, (j + 0.5) * scale)
    return out


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def heatmap_focal_loss(logits, gt, num_objects, alpha=2.0, beta=4.0):
    total = 0.0
    for p_logit, y in zip(np.asarray(logits, np.float64).ravel(), np.asarray(gt, np.float64).ravel()):
        p = min(max(sigmoid(p_logit), 1e-4), 1 - 1e-4)
        if y == 1:
            total += math.log(p) * (1 - p) ** alpha
        else:
            total += math.log(1 - p) * p ** alpha * (1 - y) ** beta
    return -total / max(num_objects, 1)


def center_l1_loss(pred_map, index, target, obj_valid):
    """pred_map (B, 2, Ho, Wo), index (B, G), target (B, G, 2), obj_valid (B, G)."""
    total, count = 0.0, 0
    for b in range(pred_map.shape[0]):
        flat = pred_map[b].reshape(2, -1)
        for g in range(index.shape[1]):
            if obj_valid[b, g]:
                total += abs(flat[0, index[b, g]] - target[b, g, 0]) + abs(flat[1, index[b, g]] - target[b, g, 1])
                count += 1
    return total / (2 * max(count, 1))


def mask_bce_loss(shape_logits, saliency_logits, gt_masks, obj_valid):
    """Per object: mean over R x R of BCE(sigmoid(a) * sigmoid(b), t); summed / objects."""
    total, count = 0.0, 0
    for b in range(gt_masks.shape[0]):
        for g in range(gt_masks.shape[1]):
            if not obj_valid[b, g]:
                continue
            m = sigmoid(shape_logits[b, g]) * sigmoid(saliency_logits[b, g])
            t = gt_masks[b, g]
            total += float(np.mean(-(t * np.log(m) + (1 - t) * np.log(np.maximum(1 - m, 1e-7)))))
            count += 1
    return total / max(count, 1)
