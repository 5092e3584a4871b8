"""Mask targets from box-relative gt crops (device), mask pasting and RLE encoding (host).

Shape shorthand: B images, G padded gt, M gt crop size, R RoIs per image, D detections.
A gt crop (M, M) covers exactly its gt box: crop pixel k spans [k, k + 1) in crop units, with
u = (x - gx0) / (gx1 - gx0) * M.
"""
import mindspore as ms
import mindspore.numpy as mnp
import mindspore.ops as ops
import numpy as np


def _crop_axis(roi_start, roi_end, gt_start, gt_end, crop, size):
    """Bin-centre sample positions of a RoI axis in crop pixels -> (low, high, w_low, w_high),
    each (B, R, size); weights are 0 outside the crop ([0, crop] in crop units)."""
    cell = (mnp.arange(size, dtype=ms.float32) + 0.5).reshape(1, 1, size) / size
    pos = roi_start.expand_dims(-1) + cell * (roi_end - roi_start).expand_dims(-1)
    extent = ops.clamp(gt_end - gt_start, min=1e-6).expand_dims(-1)
    u = (pos - gt_start.expand_dims(-1)) / extent * crop
    inside = ops.logical_and(u >= 0, u <= crop).astype(ms.float32)
    centre = ops.clamp(u - 0.5, 0.0, crop - 1.0)
    low = ops.floor(centre)
    high = ops.clamp(low + 1, max=crop - 1.0)
    frac = centre - low
    return low.astype(ms.int32), high.astype(ms.int32), (1 - frac) * inside, frac * inside


def mask_targets_from_crops(gt_masks, gt_boxes, matched_idx, rois, size=28):
    """Binary mask targets of RoIs from the crops of their matched gts.

    gt_masks (B, G, M, M) uint8, gt_boxes (B, G, 4), matched_idx (B, R) int32, rois (B, R, 4)
    -> (B, R, size, size) float32 in {0, 1}: each RoI's size x size bin centres are read
    bilinearly from its gt crop (pixel centres at k + 0.5, clamped at the crop border, 0 outside
    the crop), then thresholded at 0.5. This is RoIAlign (aligned, one sample per bin) of the
    full-image gt bitmap, up to the crop's resolution.
    """
    batch, num_gt, crop = gt_masks.shape[0], gt_masks.shape[1], gt_masks.shape[2]
    num_rois = rois.shape[1]
    offsets = (mnp.arange(batch, dtype=ms.int32) * num_gt).reshape(batch, 1)
    flat_gt = (matched_idx.astype(ms.int32) + offsets).reshape(-1)
    boxes = ops.gather(gt_boxes.astype(ms.float32).reshape(batch * num_gt, 4), flat_gt, 0)
    boxes = boxes.reshape(batch, num_rois, 4)
    rois = rois.astype(ms.float32)
    y_low, y_high, wy_low, wy_high = _crop_axis(rois[..., 1], rois[..., 3], boxes[..., 1],
                                                boxes[..., 3], crop, size)
    x_low, x_high, wx_low, wx_high = _crop_axis(rois[..., 0], rois[..., 2], boxes[..., 0],
                                                boxes[..., 2], crop, size)
    table = gt_masks.astype(ms.float32).reshape(-1)
    base = (flat_gt * crop * crop).reshape(batch, num_rois, 1, 1)
    grid = (batch, num_rois, size, size)

    def read(rows, cols):
        index = base + ops.broadcast_to((rows * crop).expand_dims(-1), grid) + \
            ops.broadcast_to(cols.expand_dims(-2), grid)
        return ops.gather(table, index.reshape(-1), 0).reshape(grid)

    def weight(wy, wx):
        return ops.broadcast_to(wy.expand_dims(-1), grid) * ops.broadcast_to(wx.expand_dims(-2), grid)

    value = (weight(wy_low, wx_low) * read(y_low, x_low) + weight(wy_low, wx_high) * read(y_low, x_high)
             + weight(wy_high, wx_low) * read(y_high, x_low)
             + weight(wy_high, wx_high) * read(y_high, x_high))
    return ops.stop_gradient((value >= 0.5).astype(ms.float32))


def _paste_weights(start, end, mask_size, length):
    """(length, mask_size) bilinear weights of image pixel centres over a box axis, the mask
    cells spanning [start, end]; zero padding outside (grid_sample, align_corners=False)."""
    extent = max(end - start, 1e-6)
    centre = (np.arange(length) + 0.5 - start) / extent * mask_size - 0.5
    low = np.floor(centre).astype(np.int64)
    frac = centre - low
    weights = np.zeros((length, mask_size + 2))
    rows = np.arange(length)
    weights[rows, np.clip(low + 1, 0, mask_size + 1)] += 1 - frac
    weights[rows, np.clip(low + 2, 0, mask_size + 1)] += frac
    return weights[:, 1:-1]


def paste_masks(mask_probs, boxes, height, width, threshold=0.5):
    """Host side: mask_probs (D, Sh, Sw) in [0, 1], boxes (D, 4) in original image pixels ->
    uint8 (D, height, width): each mask bilinearly upsampled into its box (zero outside the
    Sh x Sw cells, as detectron2's paste_masks_in_image) and thresholded (>= threshold)."""
    mask_probs = np.asarray(mask_probs, np.float64)
    boxes = np.asarray(boxes, np.float64)
    if mask_probs.ndim != 3 or boxes.shape != (mask_probs.shape[0], 4):
        raise ValueError(f"mindseg/models/mask_ops.py: paste_masks needs (D, Sh, Sw) masks and "
                         f"(D, 4) boxes, got {mask_probs.shape} and {boxes.shape}")
    out = np.zeros((len(mask_probs), int(height), int(width)), np.uint8)
    rows, cols = mask_probs.shape[1:]
    for i, (mask, box) in enumerate(zip(mask_probs, boxes)):
        x0 = int(np.clip(np.floor(box[0]) - 1, 0, width))
        x1 = int(np.clip(np.ceil(box[2]) + 1, 0, width))
        y0 = int(np.clip(np.floor(box[1]) - 1, 0, height))
        y1 = int(np.clip(np.ceil(box[3]) + 1, 0, height))
        if x1 <= x0 or y1 <= y0:
            continue
        wy = _paste_weights(box[1] - y0, box[3] - y0, rows, y1 - y0)
        wx = _paste_weights(box[0] - x0, box[2] - x0, cols, x1 - x0)
        out[i, y0:y1, x0:x1] = (wy @ mask @ wx.T) >= threshold
    return out


def mask_to_rle(mask):
    """Host side: a binary (H, W) mask -> COCO compressed RLE {"size": [H, W], "counts": str}."""
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
