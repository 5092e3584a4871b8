"""FCOS locations and training targets (centermask2 / AdelaiDet conventions), static shapes.

Shape shorthand: B images, G padded gt, K classes, L = sum_i Hi*Wi locations of all levels, each
level flattened in row-major (y, x) order, levels concatenated from the finest (P3) up.

The targets are computed in the graph, not on the host: the canvas is fixed, so L and G are
static, and the (B, L, G) comparisons are a few tens of MB (L = 22400 at 800x1344, G = 100).
Keeping them in the graph keeps the model contract (gt tensors in, losses out) and spares the input
pipeline a per-level target layout that would change with every canvas.
"""
from dataclasses import dataclass

import numpy as np
import mindspore as ms
import mindspore.numpy as mnp
import mindspore.ops as ops

INF = 1e8
SIZE_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, INF))


def compute_locations(feature_shapes, strides):
    """Centres of the feature-map cells in image pixels: ``(x, y) = (j*s + s//2, i*s + s//2)``.

    feature_shapes: per level (Hi, Wi); strides: per level s. Returns float32 (L, 2).
    """
    if len(feature_shapes) != len(strides):
        raise ValueError(f"fcos_targets.py: {len(feature_shapes)} feature shapes but {len(strides)} strides")
    per_level = []
    for (height, width), stride in zip(feature_shapes, strides):
        ys, xs = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
        per_level.append(np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1) + stride // 2)
    return np.concatenate(per_level, axis=0).astype(np.float32)


def location_levels(feature_shapes):
    """Level index of each location: int32 (L,)."""
    return np.concatenate([np.full(h * w, i, np.int32) for i, (h, w) in enumerate(feature_shapes)])


def per_location(level_of_location, per_level_values):
    """Broadcast one value per level to every location: float32 (L,) (e.g. the stride)."""
    return np.asarray(per_level_values, np.float32)[np.asarray(level_of_location)]


def centerness_from_ltrb(ltrb):
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) for (..., 4) distances > 0."""
    left, top, right, bottom = ltrb[..., 0], ltrb[..., 1], ltrb[..., 2], ltrb[..., 3]
    horizontal = ops.minimum(left, right) / ops.maximum(ops.maximum(left, right), 1e-12)
    vertical = ops.minimum(top, bottom) / ops.maximum(ops.maximum(top, bottom), 1e-12)
    return ops.sqrt(ops.maximum(horizontal * vertical, 0.0))


@ms.jit_class
@dataclass(frozen=True)
class LocationMatcher:
    """How FCOS assigns locations to gt boxes (:func:`fcos_targets`): the levels' ``strides``,
    ``num_classes`` K (the background label), per level the (lo, hi) ``size_ranges`` on
    max(l, t, r, b), and the centre region's ``center_radius`` in strides. Calling it runs
    :func:`fcos_targets`; usable inside GRAPH-mode cells."""
    strides: tuple
    num_classes: int
    size_ranges: tuple = SIZE_RANGES
    center_radius: float = 1.5

    def __post_init__(self):
        if len(self.size_ranges) != len(self.strides):
            raise ValueError(f"fcos_targets.py: {len(self.size_ranges)} size ranges for {len(self.strides)} levels")

    def __call__(self, locations, level_of_location, gt_boxes, gt_labels, gt_valid):
        return fcos_targets(locations, level_of_location, gt_boxes, gt_labels, gt_valid, self)


def _candidates(locations, level_of_location, gt_boxes, gt_valid, matcher):
    """(B, L, G) bool: the location lies strictly inside the gt's centre region (the square of
    half-side ``center_radius * stride`` around the box centre, clipped to the box) and
    max(l, t, r, b) to the gt box is within its level's size range (both ends inclusive)."""
    def at_locations(per_level_values):
        table = mnp.array([float(v) for v in per_level_values], mnp.float32)
        return ops.gather(table, level_of_location, 0)[None, :, None]

    radius = at_locations([s * matcher.center_radius for s in matcher.strides])
    range_lo = at_locations([r[0] for r in matcher.size_ranges])
    range_hi = at_locations([r[1] for r in matcher.size_ranges])

    xs = locations[:, 0][None, :, None]
    ys = locations[:, 1][None, :, None]
    x0, y0 = gt_boxes[:, None, :, 0], gt_boxes[:, None, :, 1]
    x1, y1 = gt_boxes[:, None, :, 2], gt_boxes[:, None, :, 3]

    left, top, right, bottom = xs - x0, ys - y0, x1 - xs, y1 - ys
    max_dist = ops.maximum(ops.maximum(left, top), ops.maximum(right, bottom))
    in_size_range = ops.logical_and(max_dist >= range_lo, max_dist <= range_hi)

    center_x, center_y = (x0 + x1) / 2, (y0 + y1) / 2
    center_left = xs - ops.maximum(center_x - radius, x0)
    center_top = ys - ops.maximum(center_y - radius, y0)
    center_right = ops.minimum(center_x + radius, x1) - xs
    center_bottom = ops.minimum(center_y + radius, y1) - ys
    in_center = ops.minimum(ops.minimum(center_left, center_top),
                            ops.minimum(center_right, center_bottom)) > 0
    return ops.logical_and(ops.logical_and(in_center, in_size_range), gt_valid[:, None, :])


def fcos_targets(locations, level_of_location, gt_boxes, gt_labels, gt_valid, matcher):
    """Assign every location to at most one gt box, as centermask2's ``compute_targets_for_locations``.

    A location is a candidate for a gt when it lies strictly inside the gt's centre region and
    its distances to the box fit its level's size range (:func:`_candidates`). Of several
    candidates the smallest box area wins (the first one on a tie).

    Args:
        locations: float32 Tensor (L, 2) from :func:`compute_locations`.
        level_of_location: int32 Tensor (L,) from :func:`location_levels`.
        gt_boxes (B, G, 4) xyxy, gt_labels (B, G) int, gt_valid (B, G) bool (pass
            ``gt_valid & ~gt_crowd`` to leave crowd regions out).
        matcher: a :class:`LocationMatcher` (strides, K, size ranges, centre radius).

    Returns:
        labels int32 (B, L), K for background; reg_targets float32 (B, L, 4) ltrb in pixels, 0 for
        background; centerness_targets float32 (B, L), 0 for background.
    """
    gt_boxes = gt_boxes.astype(mnp.float32)
    candidate = _candidates(locations, level_of_location, gt_boxes, gt_valid, matcher)
    area = ((gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1]))[:, None, :]
    area = ops.where(candidate, ops.broadcast_to(area, candidate.shape), INF)
    best_gt = ops.argmin(area, axis=2)
    is_positive = ops.gather_elements(area, 2, best_gt[..., None])[..., 0] < INF

    one_hot = ops.one_hot(best_gt, gt_boxes.shape[1], mnp.array(1.0), mnp.array(0.0))
    matched_boxes = ops.bmm(one_hot, gt_boxes)
    matched_labels = ops.bmm(one_hot, gt_labels.astype(mnp.float32)[..., None])[..., 0]
    labels = ops.where(is_positive, ops.round(matched_labels).astype(mnp.int32), matcher.num_classes)

    loc_x, loc_y = locations[None, :, 0], locations[None, :, 1]
    reg_targets = ops.stack([loc_x - matched_boxes[..., 0], loc_y - matched_boxes[..., 1],
                             matched_boxes[..., 2] - loc_x, matched_boxes[..., 3] - loc_y], axis=-1)
    reg_targets = ops.where(is_positive[..., None], reg_targets, 0.0)
    centerness = ops.where(is_positive, centerness_from_ltrb(reg_targets), 0.0)
    return labels, reg_targets, centerness
