"""Multi-level RoIAlign: one pooler for every model, with the RoI-to-level rule passed in.

Shape shorthand: B images, R RoIs per image, C channels, L pyramid levels, Hi Wi the size of
level i, T = sum_i Hi * Wi, out the output size, n samples per bin and axis.

The pooling is RoIAlign (detectron2 semantics) written as a gather: every RoI's bilinear sample
points are turned into (index, weight) pairs over all levels flattened into one (B * T, C)
table, and each output bin is a weighted sum of its 4 * n * n table rows. This is several times
faster on the CPU than ``ops.ROIAlign`` (which also handles one level per call); see the
measurements in ``tests/test_poolers.py``'s module docstring.
"""
import math

import mindspore as ms
import mindspore.numpy as mnp
import mindspore.nn as nn
import mindspore.ops as ops

# log2 on the CPU is not exact at powers of two (log2(4) = 1.9999999): a nudge of 1e-5 (a
# relative size change of 7e-6) makes exact ratios land where the formula puts them.
_TIE = 1e-5
# The transient (Q, chunk, C) buffer of gathered rows stays under this many floats (128 MB), or
# 4 taps' worth when Q * C is larger (1000 box RoIs of 256 channels: 200 MB).
_CHUNK_FLOATS = 2 ** 25


def fpn_level(boxes, canonical_size=224, canonical_level=4, min_level=2, max_level=5):
    """boxes (..., 4) -> int32 levels (...): floor(canonical_level + log2(sqrt(area) /
    canonical_size + 1e-8)) clamped to [min_level, max_level] (Mask R-CNN, detectron2)."""
    area = ops.relu(boxes[..., 2] - boxes[..., 0]) * ops.relu(boxes[..., 3] - boxes[..., 1])
    size = ops.sqrt(area)
    level = ops.floor(canonical_level + ops.log2(size / canonical_size + 1e-8) + _TIE)
    return ops.clamp(level, min_level, max_level).astype(ms.int32)


def centermask_level(boxes, image_area, min_level=3, max_level=5):
    """boxes (..., 4), image_area broadcastable to (...) -> int32 levels (...):
    ceil(max_level - log2(image_area / box_area)) clamped (CenterMask's ratio rule; the
    published rule writes 5 for max_level). Empty boxes go to min_level."""
    area = ops.relu(boxes[..., 2] - boxes[..., 0]) * ops.relu(boxes[..., 3] - boxes[..., 1])
    area = ops.clamp(area, min=1e-6)
    level = ops.ceil(max_level - ops.log2(image_area.astype(ms.float32) / area) - _TIE)
    return ops.clamp(level, min_level, max_level).astype(ms.int32)


def _axis_samples(start, length, size, out, num_samples, sampling_ratio, adaptive_max):
    """Sample positions along one axis and their bilinear (index, weight) pairs.

    start, length, size (B, R) float: RoI start and length in level pixels, level size.
    Returns index (B, R, out, 2 * n) int32 and weight (B, R, out, 2 * n) float32 (low / high
    neighbour of each of the n samples, already divided by the per-axis sample count).
    """
    batch, rois = start.shape
    bin_len = (length / out).reshape(batch, rois, 1, 1)
    if sampling_ratio > 0:
        count = ops.full_like(bin_len, float(sampling_ratio))
    else:
        count = ops.clamp(ops.ceil(bin_len), max=float(adaptive_max))
    slot = mnp.arange(num_samples, dtype=ms.float32).reshape(1, 1, 1, num_samples)
    cell = mnp.arange(out, dtype=ms.float32).reshape(1, 1, out, 1)
    safe_count = ops.clamp(count, min=1.0)
    pos = start.reshape(batch, rois, 1, 1) + cell * bin_len + (slot + 0.5) * bin_len / safe_count
    slot_weight = (slot < count).astype(ms.float32) / safe_count

    size = ops.broadcast_to(size.reshape(batch, rois, 1, 1), pos.shape)
    inside = ops.logical_and(pos >= -1.0, pos <= size).astype(ms.float32)
    pos = ops.relu(pos)
    low = ops.floor(pos)
    at_edge = low >= size - 1
    low = ops.where(at_edge, size - 1, low)
    high = ops.where(at_edge, low, low + 1)
    frac = ops.where(at_edge, ops.zeros_like(pos), pos - low)
    weight = inside * slot_weight
    index = ops.concat((low, high), -1).astype(ms.int32)
    weights = ops.concat(((1.0 - frac) * weight, frac * weight), -1)
    return index, weights


def _taps(array, start, chunk):
    """Columns start..start+chunk of a (Q, K) array; the array itself when that is all of it
    (on the CPU a full-width StridedSlice still copies, 7 ms for a mask pooler's 12544 x 16)."""
    if start == 0 and chunk >= array.shape[1]:
        return array
    return array[:, start:start + chunk]


class _WeightedRows(nn.Cell):
    """out[q] = sum_k weight[q, k] * table[index[q, k]]: (Q, K) x (B*T, C) -> (Q, C).

    Custom bprop so that the (Q, K, C) gathered rows are neither kept for the backward pass nor
    built whole: forward and backward walk K in chunks (at most 16, to bound graph size).
    Gradient only w.r.t. the table.

    Each chunk waits for the sum of the ones before it (``ops.depend``): the chunks are otherwise
    independent and GRAPH mode on the CPU runs their gathers together, all chunk buffers alive at
    once (Mask R-CNN R50-FPN inference at 800x1216: 2.85 GB peak RSS unchained, 2.28 GB chained).
    """

    @staticmethod
    def _chunk(index, table):
        taps = index.shape[1]
        chunk = _CHUNK_FLOATS // (index.shape[0] * table.shape[1] + 1)
        if chunk < 4:
            chunk = 4
        if chunk > taps:
            chunk = taps
        if chunk * 16 < taps:
            chunk = (taps + 15) // 16
        return chunk

    def construct(self, table, index, weight):
        chunk = self._chunk(index, table)
        total = None
        for start in range(0, index.shape[1], chunk):
            idx, wgt = _taps(index, start, chunk), _taps(weight, start, chunk)
            if total is not None:
                idx = ops.depend(idx, total)
            rows = ops.gather(table, idx.reshape(-1), 0).reshape(idx.shape + (table.shape[1],))
            part = ops.bmm(wgt.expand_dims(1), rows).squeeze(1)
            total = part if total is None else total + part
        return total

    def bprop(self, table, index, weight, out, dout):
        chunk = self._chunk(index, table)
        grad = ops.zeros_like(table)
        for start in range(0, index.shape[1], chunk):
            idx, wgt = _taps(index, start, chunk), _taps(weight, start, chunk)
            if start:
                wgt = ops.depend(wgt, grad)
            contrib = ops.bmm(wgt.expand_dims(2), dout.expand_dims(1))
            grad = grad + ops.unsorted_segment_sum(contrib.reshape(-1, table.shape[1]),
                                                   idx.reshape(-1), table.shape[0])
        return grad, ops.zeros_like(index), ops.zeros_like(weight)


class RoIPooler(nn.Cell):
    """RoIAlign of each RoI on the level its rule assigns.

    output_size: out; scales: 1 / stride per level, finest first (e.g. [1/4, 1/8, 1/16, 1/32]);
    sampling_ratio: samples per bin and axis, > 0 fixed (torchvision 2), 0 adaptive
    ceil(roi_size / out) per RoI and axis (detectron2), capped at ``adaptive_max_samples``
    (exact for RoIs up to adaptive_max_samples * out level pixels; larger ones get that many
    samples); aligned: shift by -0.5 px (detectron2 True, torchvision False; False also makes
    RoIs at least 1 px); level_fn: ``fpn_level`` or ``centermask_level`` (or any callable
    ``(boxes, [level_arg,] min_level=, max_level=)``).
    """

    def __init__(self, output_size, scales, sampling_ratio, aligned, level_fn=fpn_level,
                 adaptive_max_samples=2):
        super().__init__()
        levels = [-math.log2(s) for s in scales]
        if any(abs(v - round(v)) > 1e-6 for v in levels) or \
                [round(v) for v in levels] != list(range(round(levels[0]), round(levels[0]) + len(levels))):
            raise ValueError(f"mindseg/models/layers/poolers.py: scales must be 1/2^k for "
                             f"consecutive k, got {list(scales)}")
        if sampling_ratio < 0 or adaptive_max_samples < 1:
            raise ValueError(f"mindseg/models/layers/poolers.py: sampling_ratio must be >= 0 and "
                             f"adaptive_max_samples >= 1, got {sampling_ratio}, "
                             f"{adaptive_max_samples}")
        self.output_size = int(output_size)
        self.scales = [float(s) for s in scales]
        self.min_level = round(levels[0])
        self.max_level = round(levels[-1])
        self.sampling_ratio = int(sampling_ratio)
        self.adaptive_max = int(adaptive_max_samples)
        self.num_samples = self.sampling_ratio if self.sampling_ratio > 0 else self.adaptive_max
        self.offset = 0.5 if aligned else 0.0
        self.aligned = bool(aligned)
        self.level_fn = level_fn
        self.weighted_rows = _WeightedRows()

    def assign_levels(self, rois, level_arg=None):
        """rois (B, R, 4) -> (B, R) int32 level index, 0 for the finest pooled level."""
        if level_arg is None:
            level = self.level_fn(rois, min_level=self.min_level, max_level=self.max_level)
        else:
            if level_arg.ndim == 1:
                level_arg = level_arg.reshape(-1, 1)
            level = self.level_fn(rois, level_arg, min_level=self.min_level,
                                  max_level=self.max_level)
        return level - self.min_level

    def construct(self, features, rois, level_arg=None):
        """features: tuple of L (B, C, Hi, Wi); rois (B, R, 4) in image pixels;
        level_arg: what level_fn needs beyond the boxes (e.g. image area (B,)) ->
        (B * R, C, out, out)."""
        batch, num_rois = rois.shape[0], rois.shape[1]
        channels = features[0].shape[1]
        out = self.output_size
        rois = ops.stop_gradient(rois.astype(ms.float32))
        level = self.assign_levels(rois, level_arg)

        zeros = ops.zeros((batch, num_rois), ms.float32)
        scale, height, width, first_row = zeros, zeros, zeros, zeros
        tables = []
        total = 0
        for i, feature in enumerate(features):
            on_level = level == i
            scale = ops.where(on_level, zeros + self.scales[i], scale)
            height = ops.where(on_level, zeros + feature.shape[2], height)
            width = ops.where(on_level, zeros + feature.shape[3], width)
            first_row = ops.where(on_level, zeros + total, first_row)
            total += feature.shape[2] * feature.shape[3]
            tables.append(feature.transpose(0, 2, 3, 1).reshape(batch, -1, channels))
        table = ops.concat(tables, 1).reshape(batch * total, channels)

        x0 = rois[..., 0] * scale - self.offset
        y0 = rois[..., 1] * scale - self.offset
        roi_w = rois[..., 2] * scale - self.offset - x0
        roi_h = rois[..., 3] * scale - self.offset - y0
        if not self.aligned:
            roi_w = ops.clamp(roi_w, min=1.0)
            roi_h = ops.clamp(roi_h, min=1.0)
        y_index, y_weight = _axis_samples(y0, roi_h, height, out, self.num_samples,
                                          self.sampling_ratio, self.adaptive_max)
        x_index, x_weight = _axis_samples(x0, roi_w, width, out, self.num_samples,
                                          self.sampling_ratio, self.adaptive_max)
        taps = 2 * self.num_samples
        grid = (batch, num_rois, out, out, taps, taps)
        image_row = (mnp.arange(batch, dtype=ms.float32) * total).reshape(batch, 1) + first_row
        row_start = (image_row.reshape(batch, num_rois, 1, 1) + y_index.astype(ms.float32) * width.reshape(
            batch, num_rois, 1, 1)).astype(ms.int32)
        index = ops.broadcast_to(row_start.reshape(batch, num_rois, out, 1, taps, 1), grid) + \
            ops.broadcast_to(x_index.reshape(batch, num_rois, 1, out, 1, taps), grid)
        weight = ops.broadcast_to(y_weight.reshape(batch, num_rois, out, 1, taps, 1), grid) * \
            ops.broadcast_to(x_weight.reshape(batch, num_rois, 1, out, 1, taps), grid)
        index = ops.stop_gradient(index.reshape(-1, taps * taps))
        weight = ops.stop_gradient(weight.reshape(-1, taps * taps))
        pooled = self.weighted_rows(table, index, weight)
        return pooled.reshape(batch * num_rois, out, out, channels).transpose(0, 3, 1, 2)
