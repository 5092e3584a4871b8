"""Anchors of a static canvas, computed once in NumPy and turned into constants by the caller
(the feature sizes come from ``necks.fpn.level_shapes``).

Order follows detectron2's DefaultAnchorGenerator: per level, (row, col, anchor) with each cell's
anchors consecutive, and within a cell sizes outer, aspect ratios inner. The anchor for size s and
ratio r (= h / w) has w = sqrt(s^2 / r), h = r * w, centred on (col * stride + offset * stride,
row * stride + offset * stride).
"""
import math
from dataclasses import dataclass

import numpy as np


def _per_level(values, num_levels, name):
    """A list with one list per level, from a flat list (one value per level) or a list of lists."""
    values = list(values)
    if values and not isinstance(values[0], (list, tuple)):
        if name == "aspect_ratios":
            return [values] * num_levels
        values = [[v] for v in values]
    if len(values) == 1 and num_levels > 1:
        values = values * num_levels
    if len(values) != num_levels:
        raise ValueError(f"mindseg/models/anchors.py: {name} has {len(values)} entries for "
                         f"{num_levels} feature levels")
    return [list(v) for v in values]


def cell_anchors(sizes, aspect_ratios, round_anchors=False):
    """(len(sizes) * len(aspect_ratios), 4) anchors centred on (0, 0), sizes outer, ratios inner.

    round_anchors rounds the corners to integers (half to even), as torchvision does.
    """
    anchors = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in aspect_ratios:
            width = math.sqrt(area / ratio)
            height = ratio * width
            anchors.append([-width / 2, -height / 2, width / 2, height / 2])
    anchors = np.asarray(anchors, dtype=np.float64)
    if round_anchors:
        anchors = np.round(anchors)
    return anchors


def generate_anchors(feature_shapes, strides, sizes, aspect_ratios, offset=0.0,
                     round_anchors=False):
    """Per-level anchors: list of float32 arrays (h * w * A, 4), xyxy in canvas pixels.

    feature_shapes: [(h, w)] per level; strides: [int] per level; sizes: one value or one list
    per level (detectron2's [[32], [64], ...] or [32, 64, ...]); aspect_ratios: one list for all
    levels or one list per level; offset: the cell-centre offset in strides (detectron2 0.0 or
    0.5; torchvision 0.0).
    """
    num_levels = len(feature_shapes)
    if len(strides) != num_levels:
        raise ValueError(f"mindseg/models/anchors.py: {len(strides)} strides for {num_levels} "
                         "feature levels")
    if not 0.0 <= offset < 1.0:
        raise ValueError(f"mindseg/models/anchors.py: offset must be in [0, 1), got {offset}")
    level_sizes = _per_level(sizes, num_levels, "sizes")
    level_ratios = _per_level(aspect_ratios, num_levels, "aspect_ratios")
    anchors = []
    for (height, width), stride, size, ratios in zip(feature_shapes, strides, level_sizes,
                                                     level_ratios):
        base = cell_anchors(size, ratios, round_anchors)
        shift_x = np.arange(int(width), dtype=np.float64) * stride + offset * stride
        shift_y = np.arange(int(height), dtype=np.float64) * stride + offset * stride
        grid_y, grid_x = np.meshgrid(shift_y, shift_x, indexing="ij")
        shifts = np.stack([grid_x, grid_y, grid_x, grid_y], axis=-1).reshape(-1, 1, 4)
        anchors.append((shifts + base[None]).reshape(-1, 4).astype(np.float32))
    return anchors


@dataclass(frozen=True)
class AnchorGenerator:
    """The anchors of a model: one size per level (detectron2's [[32], [64], ...] flattened), the
    aspect ratios of every cell, the cell-centre offset and torchvision's rounding."""
    sizes: tuple
    aspect_ratios: tuple
    offset: float = 0.0
    round_anchors: bool = False

    @property
    def num_cell_anchors(self):
        """Anchors per location (A): one per aspect ratio."""
        return len(self.aspect_ratios)

    def per_level(self, feature_shapes, strides):
        """float32 arrays (h * w * A, 4) per level, as :func:`generate_anchors`."""
        if len(self.sizes) != len(strides):
            raise ValueError(f"model.anchor.sizes: {len(self.sizes)} sizes for {len(strides)} levels "
                             f"(one per level, strides {list(strides)})")
        return generate_anchors(feature_shapes, list(strides), [[s] for s in self.sizes], list(self.aspect_ratios),
                                offset=self.offset, round_anchors=self.round_anchors)
