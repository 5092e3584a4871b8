"""FCOS: locations, targets (hand tables + NumPy reference), losses (NumPy references), head
conventions and inference."""
import math

import numpy as np

import mindspore as ms
from mindspore import Tensor

import np_reference
from mindseg.models.dense_heads import fcos
from mindseg.models.dense_heads.fcos_targets import (INF, SIZE_RANGES, LocationMatcher, compute_locations, fcos_targets,
                                         location_levels, per_location)


# ------------------------------------------------------------------------------ NumPy references

def fcos_targets_np(locations, levels, gt_boxes, gt_labels, gt_valid, strides, num_classes,
                    size_ranges, radius):
    """Location by location, gt by gt, as the FCOS paper and centermask2 describe it."""
    batch, num_loc = gt_boxes.shape[0], locations.shape[0]
    labels = np.full((batch, num_loc), num_classes, np.int32)
    reg = np.zeros((batch, num_loc, 4), np.float32)
    ctr = np.zeros((batch, num_loc), np.float32)
    for b in range(batch):
        for i in range(num_loc):
            x, y = locations[i]
            stride = strides[levels[i]]
            lo, hi = size_ranges[levels[i]]
            best, best_area = None, math.inf
            for g in range(gt_boxes.shape[1]):
                if not gt_valid[b, g]:
                    continue
                x0, y0, x1, y1 = gt_boxes[b, g]
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                rx0, ry0 = max(cx - radius * stride, x0), max(cy - radius * stride, y0)
                rx1, ry1 = min(cx + radius * stride, x1), min(cy + radius * stride, y1)
                if min(x - rx0, y - ry0, rx1 - x, ry1 - y) <= 0:
                    continue
                if not lo <= max(x - x0, y - y0, x1 - x, y1 - y) <= hi:
                    continue
                area = (x1 - x0) * (y1 - y0)
                if area < best_area:
                    best, best_area = g, area
            if best is not None:
                x0, y0, x1, y1 = gt_boxes[b, best]
                l, t, r, bt = x - x0, y - y0, x1 - x, y1 - y
                labels[b, i] = gt_labels[b, best]
                reg[b, i] = (l, t, r, bt)
                ctr[b, i] = math.sqrt(min(l, r) / max(l, r) * min(t, bt) / max(t, bt))
    return labels, reg, ctr


def focal_np(logits, targets, alpha=0.25, gamma=2.0):
    prob = 1 / (1 + np.exp(-logits))
    bce = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    p_t = prob * targets + (1 - prob) * (1 - targets)
    return (alpha * targets + (1 - alpha) * (1 - targets)) * (1 - p_t) ** gamma * bce


def giou_ltrb_np(pred, target):
    """Boxes (-l, -t, r, b) around the origin; IoU smoothed (I + 1) / (U + 1) as centermask2."""
    def box(d):
        return -d[..., 0], -d[..., 1], d[..., 2], d[..., 3]
    px0, py0, px1, py1 = box(pred)
    tx0, ty0, tx1, ty1 = box(target)
    inter = (np.minimum(px1, tx1) - np.maximum(px0, tx0)) * (np.minimum(py1, ty1) - np.maximum(py0, ty0))
    union = (px1 - px0) * (py1 - py0) + (tx1 - tx0) * (ty1 - ty0) - inter
    hull = (np.maximum(px1, tx1) - np.minimum(px0, tx0)) * (np.maximum(py1, ty1) - np.minimum(py0, ty0)) + 1e-7
    return 1 - ((inter + 1) / (union + 1) - (hull - union) / hull)


def bce_np(logits, targets):
    return np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))


def fcos_losses_np(cls_logits, pred_ltrb, ctr_logits, labels, reg, ctr, loc_strides, num_classes):
    pos = labels != num_classes
    num_pos = max(pos.sum(), 1.0)
    onehot = np.eye(num_classes + 1)[labels][..., :num_classes]
    loss_cls = focal_np(cls_logits, onehot).sum() / num_pos
    strides = loc_strides[None, :, None]
    giou = giou_ltrb_np(pred_ltrb[pos] / strides.repeat(len(labels), 0)[pos],
                        reg[pos] / strides.repeat(len(labels), 0)[pos])
    loss_box = (giou * ctr[pos]).sum() / max(ctr[pos].sum(), 1e-6)
    loss_ctr = bce_np(ctr_logits[pos], ctr[pos]).sum() / num_pos
    return loss_cls, loss_box, loss_ctr


# --------------------------------------------------------------------------------- locations

def test_compute_locations_by_hand():
    locations = compute_locations([(2, 3), (1, 2)], [8, 16])
    expected = [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12], [8, 8], [24, 8]]
    np.testing.assert_array_equal(locations, np.array(expected, np.float32))
    np.testing.assert_array_equal(location_levels([(2, 3), (1, 2)]), [0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(per_location([0, 1, 1], [8, 16]), [8, 16, 16])


# ----------------------------------------------------------------------------------- targets

# Tiny pyramid: a 64x64 canvas, strides 8 and 16 (8x8 and 4x4 locations).
TINY_SHAPES = [(8, 8), (4, 4)]
TINY_STRIDES = [8, 16]
K = 3


def _tiny_targets(gt_boxes, gt_labels, size_ranges, valid=None):
    locations = compute_locations(TINY_SHAPES, TINY_STRIDES)
    levels = location_levels(TINY_SHAPES)
    gt_boxes = np.array(gt_boxes, np.float32)[None]
    gt_labels = np.array(gt_labels, np.int32)[None]
    gt_valid = np.ones(gt_labels.shape, bool) if valid is None else np.array(valid, bool)[None]
    got = fcos_targets(Tensor(locations), Tensor(levels), Tensor(gt_boxes), Tensor(gt_labels), Tensor(gt_valid),
                       LocationMatcher(TINY_STRIDES, K, size_ranges, center_radius=1.5))
    got = [g.asnumpy()[0] for g in got]
    ref = [r[0] for r in fcos_targets_np(locations, levels, gt_boxes, gt_labels, gt_valid, TINY_STRIDES,
                                         K, size_ranges, 1.5)]
    return locations, got, ref


def _index(locations, x, y, level):
    offset = 0 if level == 0 else 64
    hits = [i for i in range(offset, len(locations)) if tuple(locations[i]) == (x, y)]
    return hits[0]


def _check_table(locations, result, table):
    """table: {(x, y, level): (label, (l, t, r, b))}; every other location is background."""
    labels, reg, ctr = result
    expected_labels = np.full(len(locations), K)
    expected_reg = np.zeros((len(locations), 4), np.float32)
    for (x, y, level), (label, ltrb) in table.items():
        i = _index(locations, x, y, level)
        expected_labels[i] = label
        expected_reg[i] = ltrb
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(reg, expected_reg, atol=1e-5)
    l, t, r, b = expected_reg.T
    with np.errstate(invalid="ignore", divide="ignore"):
        expected_ctr = np.sqrt(np.minimum(l, r) / np.maximum(l, r) * np.minimum(t, b) / np.maximum(t, b))
    np.testing.assert_allclose(ctr, np.nan_to_num(expected_ctr), atol=1e-6)


def test_targets_one_gt_by_hand():
    """gt (8, 8, 40, 24), centre (24, 16). Stride 8, radius 12: centre region x in [12, 36],
    y in [8, 24] -> locations x in {20, 28}, y in {12, 20} (strictly inside), max(l,t,r,b) = 20.
    Stride 16, radius 24: region y in [8, 24] holds no location (y = 8 and 24 are on the edge)."""
    table = {(20, 12, 0): (2, (12, 4, 20, 12)), (28, 12, 0): (2, (20, 4, 12, 12)),
             (20, 20, 0): (2, (12, 12, 20, 4)), (28, 20, 0): (2, (20, 12, 12, 4))}
    locations, got, ref = _tiny_targets([[8, 8, 40, 24]], [2], [(0, 20), (20, INF)])
    _check_table(locations, got, table)
    _check_table(locations, ref, table)
    np.testing.assert_allclose(got[2][got[0] != K], math.sqrt(0.2), rtol=1e-6)
    # The range's upper end is inclusive: max 20 drops out of [0, 19.9].
    locations, got, ref = _tiny_targets([[8, 8, 40, 24]], [2], [(0, 19.9), (19.9, INF)])
    _check_table(locations, got, {})
    _check_table(locations, ref, {})


def test_targets_two_overlapping_gts_by_hand():
    """A = (8, 8, 40, 24) label 2 (area 512) inside B = (0, 0, 48, 40) label 0 (area 1920), ranges
    [0, 32], [32, inf]. Stride 8: B's centre region x in [12, 36], y in [8, 32] holds x {20, 28} x
    y {12, 20, 28}; A wins where both qualify (smaller area), B keeps y = 28. Stride 16: B's region
    is the whole box: x {8, 24, 40} x y {8, 24}, all with max >= 32 except (24, 24) (max 24)."""
    table = {(20, 12, 0): (2, (12, 4, 20, 12)), (28, 12, 0): (2, (20, 4, 12, 12)),
             (20, 20, 0): (2, (12, 12, 20, 4)), (28, 20, 0): (2, (20, 12, 12, 4)),
             (20, 28, 0): (0, (20, 28, 28, 12)), (28, 28, 0): (0, (28, 28, 20, 12)),
             (8, 8, 1): (0, (8, 8, 40, 32)), (24, 8, 1): (0, (24, 8, 24, 32)),
             (40, 8, 1): (0, (40, 8, 8, 32)), (8, 24, 1): (0, (8, 24, 40, 16)),
             (40, 24, 1): (0, (40, 24, 8, 16))}
    ranges = [(0, 32), (32, INF)]
    locations, got, ref = _tiny_targets([[8, 8, 40, 24], [0, 0, 48, 40]], [2, 0], ranges)
    _check_table(locations, got, table)
    _check_table(locations, ref, table)
    # Same gts in the other order: the result does not depend on the gt order.
    locations, swapped, _ = _tiny_targets([[0, 0, 48, 40], [8, 8, 40, 24]], [0, 2], ranges)
    _check_table(locations, swapped, table)
    # A padded (invalid) row is ignored even where it would win.
    locations, padded, _ = _tiny_targets([[8, 8, 40, 24], [0, 0, 48, 40], [16, 8, 32, 24]], [2, 0, 1],
                                         ranges, valid=[True, True, False])
    _check_table(locations, padded, table)


def test_targets_match_numpy_reference_on_random_boxes():
    rng = np.random.RandomState(0)
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    strides = [8, 16, 32, 64, 128]
    locations = compute_locations(shapes, strides)
    levels = location_levels(shapes)
    sizes = rng.uniform(6, 127, size=(3, 7, 2))
    corners = rng.uniform(0, 1, size=(3, 7, 2)) * (128 - sizes)
    gt_boxes = np.concatenate([corners, corners + sizes], axis=-1).astype(np.float32)
    gt_labels = rng.randint(0, 5, size=(3, 7)).astype(np.int32)
    gt_valid = rng.rand(3, 7) > 0.25
    gt_valid[2] = False
    got = fcos_targets(Tensor(locations), Tensor(levels), Tensor(gt_boxes), Tensor(gt_labels), Tensor(gt_valid),
                       LocationMatcher(tuple(strides), 5))
    ref = fcos_targets_np(locations, levels, gt_boxes, gt_labels, gt_valid, strides, 5, SIZE_RANGES, 1.5)
    np.testing.assert_array_equal(got[0].asnumpy(), ref[0])
    np.testing.assert_allclose(got[1].asnumpy(), ref[1], atol=1e-4)
    np.testing.assert_allclose(got[2].asnumpy(), ref[2], atol=1e-5)
    assert (ref[0][:2] != 5).sum() > 20, "the random case should have positives"
    assert (got[0].asnumpy()[2] == 5).all()


# ------------------------------------------------------------------------------------ losses

def test_sigmoid_focal_loss_matches_numpy_and_a_hand_value():
    logits = np.array([[-3.0, 0.0, 2.0], [1.5, -0.5, 4.0]], np.float32)
    targets = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], np.float32)
    got = fcos.sigmoid_focal_loss(Tensor(logits), Tensor(targets)).asnumpy()
    np.testing.assert_allclose(got, focal_np(logits, targets), rtol=1e-5, atol=1e-7)
    # logit 0, target 1: p = 0.5, 0.25 * 0.5^2 * log 2
    assert abs(got[0, 1] - 0.25 * 0.25 * math.log(2)) < 1e-6


def test_ltrb_giou_loss_matches_numpy_and_the_box_giou_on_large_boxes():
    rng = np.random.RandomState(1)
    pred = rng.uniform(0.1, 10, size=(50, 4)).astype(np.float32)
    target = rng.uniform(0.1, 10, size=(50, 4)).astype(np.float32)
    got = fcos.ltrb_giou_loss(Tensor(pred), Tensor(target)).asnumpy()
    np.testing.assert_allclose(got, giou_ltrb_np(pred, target), rtol=1e-5, atol=1e-6)
    assert abs(fcos.ltrb_giou_loss(Tensor([[1.0, 2, 3, 4]]), Tensor([[1.0, 2, 3, 4]])).asnumpy()[0]) < 1e-6
    # Without the +1 smoothing this is 1 - GIoU of the boxes (-l, -t, r, b): large boxes agree.
    big_pred, big_target = pred * 1000, target * 1000
    as_boxes = lambda d: np.stack([-d[:, 0], -d[:, 1], d[:, 2], d[:, 3]], axis=1)
    shared = np_reference.giou_loss(as_boxes(big_pred), as_boxes(big_target))
    np.testing.assert_allclose(fcos.ltrb_giou_loss(Tensor(big_pred), Tensor(big_target)).asnumpy(), shared,
                               atol=1e-4)


def _loss_inputs(rng, labels):
    batch, num_loc = labels.shape
    cls_logits = rng.randn(batch, num_loc, K).astype(np.float32)
    pred_ltrb = rng.uniform(1, 60, size=(batch, num_loc, 4)).astype(np.float32)
    ctr_logits = rng.randn(batch, num_loc).astype(np.float32)
    reg = np.where((labels != K)[..., None], rng.uniform(1, 60, size=(batch, num_loc, 4)), 0).astype(np.float32)
    l, t, r, b = np.moveaxis(np.where(reg > 0, reg, 1), -1, 0)
    ctr = np.where(labels != K, np.sqrt(np.minimum(l, r) / np.maximum(l, r) * np.minimum(t, b)
                                        / np.maximum(t, b)), 0).astype(np.float32)
    return cls_logits, pred_ltrb, ctr_logits, reg, ctr


def test_fcos_losses_match_numpy_reference():
    rng = np.random.RandomState(2)
    labels = rng.choice([0, 1, 2, K, K, K], size=(2, 40)).astype(np.int32)
    cls_logits, pred_ltrb, ctr_logits, reg, ctr = _loss_inputs(rng, labels)
    loc_strides = np.repeat(np.array([8, 16], np.float32), 20)
    targets = (Tensor(labels), Tensor(reg), Tensor(ctr))
    got = fcos.fcos_losses(Tensor(cls_logits), Tensor(pred_ltrb), Tensor(ctr_logits), targets, Tensor(loc_strides),
                           fcos.FCOSTrainSettings())
    ref = fcos_losses_np(cls_logits, pred_ltrb, ctr_logits, labels, reg, ctr, loc_strides, K)
    np.testing.assert_allclose([g.asnumpy() for g in got], ref, rtol=1e-5)
    # The distributed hook: halving the averaged counts doubles the normalised losses.
    halved = fcos.fcos_losses(Tensor(cls_logits), Tensor(pred_ltrb), Tensor(ctr_logits), targets, Tensor(loc_strides),
                              fcos.FCOSTrainSettings(), reduce_mean=lambda v: v / 2)
    np.testing.assert_allclose([h.asnumpy() for h in halved], 2 * np.array(ref), rtol=1e-5)


def test_fcos_losses_with_no_gt_are_finite_with_zero_box_and_centerness_loss():
    rng = np.random.RandomState(3)
    labels = np.full((2, 30), K, np.int32)
    cls_logits, pred_ltrb, ctr_logits, reg, ctr = _loss_inputs(rng, labels)
    got = fcos.fcos_losses(Tensor(cls_logits), Tensor(pred_ltrb), Tensor(ctr_logits),
                           (Tensor(labels), Tensor(reg), Tensor(ctr)), Tensor(np.full(30, 8, np.float32)),
                           fcos.FCOSTrainSettings())
    loss_cls, loss_box, loss_ctr = [g.asnumpy() for g in got]
    assert loss_box == 0.0 and loss_ctr == 0.0
    np.testing.assert_allclose(loss_cls, focal_np(cls_logits, np.zeros_like(cls_logits)).sum(), rtol=1e-5)


def test_fcos_losses_gradients_are_finite_without_gt():
    rng = np.random.RandomState(4)
    labels = np.full((1, 12), K, np.int32)
    cls_logits, pred_ltrb, ctr_logits, reg, ctr = _loss_inputs(rng, labels)
    pred_ltrb[0, :3] = 0.0

    def total(cls, ltrb, ctr_logit):
        losses = fcos.fcos_losses(cls, ltrb, ctr_logit, (Tensor(labels), Tensor(reg), Tensor(ctr)),
                                  Tensor(np.full(12, 8, np.float32)), fcos.FCOSTrainSettings())
        return losses[0] + losses[1] + losses[2]

    grads = ms.grad(total, grad_position=(0, 1, 2))(Tensor(cls_logits), Tensor(pred_ltrb), Tensor(ctr_logits))
    assert all(np.isfinite(g.asnumpy()).all() for g in grads)
    assert np.abs(grads[1].asnumpy()).max() == 0.0 and np.abs(grads[0].asnumpy()).max() > 0


# -------------------------------------------------------------------------------------- head

def test_head_conventions():
    """Class bias -log(99) (prior 0.01); box = ReLU(scale * x) * stride; Lite tower count."""
    head = fcos.FCOSHead(in_channels=32, num_classes=K, strides=(8, 16), num_convs=2)
    assert len(head.cls_tower) == 6 and len(head.bbox_tower) == 6
    np.testing.assert_allclose(head.cls_logits.bias.asnumpy(), -math.log(99), rtol=1e-6)
    assert abs(float(head.cls_tower[0].weight.asnumpy().std()) - 0.01) < 0.002
    head.bbox_pred.weight.set_data(Tensor(np.zeros(head.bbox_pred.weight.shape, np.float32)))
    head.bbox_pred.bias.set_data(Tensor(np.array([1.0, -1.0, 0.5, 2.0], np.float32)))
    head.scales[1].scale.set_data(Tensor(np.array([3.0], np.float32)))
    features = [Tensor(np.random.RandomState(0).randn(2, 32, 4, 4).astype(np.float32)),
                Tensor(np.random.RandomState(1).randn(2, 32, 2, 2).astype(np.float32))]
    cls_logits, pred_ltrb, ctr_logits = head(features)
    assert cls_logits.shape == (2, 20, K) and ctr_logits.shape == (2, 20)
    ltrb = pred_ltrb.asnumpy()
    np.testing.assert_allclose(ltrb[:, :16], np.broadcast_to([8.0, 0.0, 4.0, 16.0], (2, 16, 4)), rtol=1e-6)
    np.testing.assert_allclose(ltrb[:, 16:], np.broadcast_to([48.0, 0.0, 24.0, 96.0], (2, 4, 4)), rtol=1e-6)
    prob = 1 / (1 + np.exp(-cls_logits.asnumpy()))
    assert abs(prob.mean() - 0.01) < 0.002
    # Flattening is row-major per level: location (row 1, col 2) of a 4x4 level is index 6.
    bare_head = fcos.FCOSHead(in_channels=32, num_classes=K, strides=(8,), num_convs=0)
    centre_tap = np.zeros(bare_head.cls_logits.weight.shape, np.float32)
    centre_tap[:, :, 1, 1] = 0.01
    bare_head.cls_logits.weight.set_data(Tensor(centre_tap))
    probe = np.zeros((1, 32, 4, 4), np.float32)
    probe[0, :, 1, 2] = 50.0
    logits = bare_head([Tensor(probe)])[0].asnumpy()[0]
    expected = np.full((16, K), -math.log(99), np.float32)
    expected[6] += 16.0
    np.testing.assert_allclose(logits, expected, rtol=1e-5)

# --------------------------------------------------------------------------------- inference

def inference_np(cls_logits, pred_ltrb, ctr_logits, locations, level_sizes, image_hw, score_thresh,
                 pre_nms_topk, nms_thresh, max_detections):
    """One image: per-level threshold and top-k, decode, clip, greedy class-wise NMS."""
    prob = 1 / (1 + np.exp(-cls_logits))
    ctr = 1 / (1 + np.exp(-ctr_logits))
    cands = []
    start = 0
    for size in level_sizes:
        level = []
        for i in range(start, start + size):
            for k in range(prob.shape[1]):
                if prob[i, k] > score_thresh:
                    x, y = locations[i]
                    l, t, r, b = pred_ltrb[i]
                    box = np.clip([x - l, y - t, x + r, y + b], 0, [image_hw[1], image_hw[0]] * 2)
                    level.append((prob[i, k] * ctr[i], k, box))
        level.sort(key=lambda c: -c[0])
        cands += level[:pre_nms_topk]
        start += size
    cands.sort(key=lambda c: -c[0])
    kept = []
    for score, k, box in cands:
        if all(kk != k or box_iou_np(box, bb) <= nms_thresh for _, kk, bb in kept):
            kept.append((score, k, box))
    kept = kept[:max_detections]
    return (np.sqrt([c[0] for c in kept]), np.array([c[1] for c in kept]),
            np.array([c[2] for c in kept]).reshape(-1, 4))


def box_iou_np(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _logit(p):
    return math.log(p / (1 - p))


def _inference_case():
    """Level 0 (stride 8, 2x2 locations), level 1 (stride 16, 1x1), 3 classes."""
    shapes, strides = [(2, 2), (1, 1)], [8, 16]
    locations = compute_locations(shapes, strides)   # (4,4) (12,4) (4,12) (12,12) | (8,8)
    cls = np.full((1, 5, K), _logit(0.01), np.float32)
    ctr = np.full((1, 5), _logit(0.5), np.float32)
    ltrb = np.full((1, 5, 4), 4.0, np.float32)
    cls[0, 0, 1] = _logit(0.9)      # box (0, 0, 8, 8), score sqrt(0.45)
    cls[0, 1, 1] = _logit(0.8)      # box (8, 0, 16, 8): IoU 0 with the first, kept
    ltrb[0, 1] = (6, 4, 4, 4)       # -> (6, 0, 16, 8): IoU 2/18 with (0,0,8,8) -> kept
    cls[0, 3, 1] = _logit(0.6)
    ltrb[0, 3] = (11, 11, 4, 4)     # -> (1, 1, 16, 16) clipped to the 14x15 image: (1, 1, 15, 14)
    cls[0, 4, 1] = _logit(0.7)
    ltrb[0, 4] = (8, 8, 8, 8)       # -> (0, 0, 16, 16) -> clipped (0, 0, 15, 14): IoU with the last > 0.6
    cls[0, 4, 2] = _logit(0.5)      # same box, another class: kept
    cls[0, 2, 0] = _logit(0.04)     # below the 0.05 threshold
    return locations, cls, ltrb, ctr


def test_candidates_threshold_decode_clip_and_score():
    locations, cls, ltrb, ctr = _inference_case()
    boxes, scores, classes, valid = fcos.fcos_candidates(
        Tensor(cls), Tensor(ltrb), Tensor(ctr), Tensor(locations), [4, 1],
        Tensor(np.array([[14.0, 15.0]], np.float32)), fcos.FCOSSettings(score_thresh=0.05, pre_nms_topk=1000))
    assert boxes.shape == (1, 12 + 3, 4)
    valid = valid.asnumpy()[0]
    order = np.argsort(-scores.asnumpy()[0][valid])
    np.testing.assert_allclose(scores.asnumpy()[0][valid][order], np.sqrt([0.45, 0.4, 0.35, 0.3, 0.25]),
                               rtol=1e-5)
    np.testing.assert_array_equal(classes.asnumpy()[0][valid][order], [1, 1, 1, 1, 2])
    np.testing.assert_allclose(boxes.asnumpy()[0][valid][order],
                               [[0, 0, 8, 8], [6, 0, 15, 8], [0, 0, 15, 14], [1, 1, 15, 14], [0, 0, 15, 14]],
                               atol=1e-4)


def test_candidates_keep_the_top_k_per_level():
    locations, cls, ltrb, ctr = _inference_case()
    _, scores, _, valid = fcos.fcos_candidates(Tensor(cls), Tensor(ltrb), Tensor(ctr), Tensor(locations), [4, 1],
                                               Tensor(np.array([[64.0, 64.0]], np.float32)),
                                               fcos.FCOSSettings(pre_nms_topk=2))
    assert scores.shape == (1, 4)
    np.testing.assert_allclose(np.sort(scores.asnumpy()[0][valid.asnumpy()[0]]),
                               np.sqrt([0.25, 0.35, 0.4, 0.45]), rtol=1e-5)


def test_inference_class_wise_nms_and_max_detections():
    locations, cls, ltrb, ctr = _inference_case()
    boxes, scores, classes, valid = fcos.fcos_inference(
        Tensor(cls), Tensor(ltrb), Tensor(ctr), Tensor(locations), [4, 1],
        Tensor(np.array([[14.0, 15.0]], np.float32)), fcos.FCOSSettings(nms_thresh=0.6, post_nms_topk=4))
    # (1, 1, 15, 14) class 1 (score sqrt .3) overlaps (0, 0, 15, 14) class 1 (sqrt .35) at IoU 0.89.
    np.testing.assert_array_equal(valid.asnumpy()[0], [True, True, True, True])
    np.testing.assert_allclose(scores.asnumpy()[0], np.sqrt([0.45, 0.4, 0.35, 0.25]), rtol=1e-5)
    np.testing.assert_array_equal(classes.asnumpy()[0], [1, 1, 1, 2])
    np.testing.assert_allclose(boxes.asnumpy()[0, 2], [0, 0, 15, 14], atol=1e-4)
    boxes, scores, classes, valid = fcos.fcos_inference(
        Tensor(cls), Tensor(ltrb), Tensor(ctr), Tensor(locations), [4, 1],
        Tensor(np.array([[14.0, 15.0]], np.float32)), fcos.FCOSSettings(post_nms_topk=6))
    np.testing.assert_array_equal(valid.asnumpy()[0], [True] * 4 + [False] * 2)
    assert np.abs(boxes.asnumpy()[0, 4:]).max() == 0 and np.abs(scores.asnumpy()[0, 4:]).max() == 0


def test_inference_matches_numpy_reference_on_random_heads():
    rng = np.random.RandomState(5)
    shapes, strides = [(6, 8), (3, 4), (2, 2)], [8, 16, 32]
    locations = compute_locations(shapes, strides)
    num_loc = len(locations)
    cls = rng.uniform(-6, 1, size=(2, num_loc, K)).astype(np.float32)
    ctr = rng.randn(2, num_loc).astype(np.float32)
    ltrb = rng.uniform(2, 30, size=(2, num_loc, 4)).astype(np.float32)
    image_size = np.array([[44.0, 60.0], [48.0, 64.0]], np.float32)
    got = fcos.fcos_inference(Tensor(cls), Tensor(ltrb), Tensor(ctr), Tensor(locations), [48, 12, 4],
                              Tensor(image_size), fcos.FCOSSettings(score_thresh=0.05, pre_nms_topk=20, nms_thresh=0.6,
                                                                    post_nms_topk=15))
    boxes, scores, classes, valid = [g.asnumpy() for g in got]
    for b in range(2):
        ref_scores, ref_classes, ref_boxes = inference_np(cls[b], ltrb[b], ctr[b], locations, [48, 12, 4],
                                                          image_size[b], 0.05, 20, 0.6, 15)
        count = len(ref_scores)
        assert valid[b].sum() == count and valid[b, :count].all()
        np.testing.assert_allclose(scores[b, :count], ref_scores, rtol=1e-5)
        np.testing.assert_array_equal(classes[b, :count], ref_classes)
        np.testing.assert_allclose(boxes[b, :count], ref_boxes, atol=1e-4)
    assert valid.sum() >= 20


def test_inference_without_clipping_suppresses_and_returns_the_unclipped_boxes():
    """centermask2 (``model.fcos.clip_before_nms: false``) runs NMS on unclipped FCOS boxes."""
    locations, cls, ltrb, ctr = _inference_case()
    ltrb[0, 3] = (11, 11, 40, 4)    # -> (1, 1, 52, 16): IoU 0.28 with (0, 0, 16, 16), 0.87 once both are clipped
    inputs = (Tensor(cls), Tensor(ltrb), Tensor(ctr), Tensor(locations), [4, 1],
              Tensor(np.array([[14.0, 15.0]], np.float32)))
    _, _, _, clipped_valid = fcos.fcos_inference(*inputs, fcos.FCOSSettings(post_nms_topk=6))
    boxes, scores, classes, valid = fcos.fcos_inference(*inputs, fcos.FCOSSettings(post_nms_topk=6, clip=False))
    np.testing.assert_array_equal(clipped_valid.asnumpy()[0], [True] * 4 + [False] * 2)
    np.testing.assert_array_equal(valid.asnumpy()[0], [True] * 5 + [False])
    np.testing.assert_allclose(scores.asnumpy()[0, :5], np.sqrt([0.45, 0.4, 0.35, 0.3, 0.25]), rtol=1e-5)
    np.testing.assert_array_equal(classes.asnumpy()[0, :5], [1, 1, 1, 1, 2])
    np.testing.assert_allclose(boxes.asnumpy()[0, :5], [[0, 0, 8, 8], [6, 0, 16, 8], [0, 0, 16, 16],
                                                        [1, 1, 52, 16], [0, 0, 16, 16]], atol=1e-4)


# ----------------------------------------------------------------------------- FCOS of a canvas

def test_fcos_object_targets_losses_and_detections_per_mode():
    """``FCOS`` (what CenterMask takes): the locations of its canvas, its LocationMatcher's targets
    in the losses (against the NumPy references), and the detections with the settings of the
    current mode (training: the mask proposals, more of them)."""
    size_ranges = ((0.0, 20.0), (20.0, INF))
    detector = fcos.FCOS(canvas=(64, 64), location_matcher=LocationMatcher(TINY_STRIDES, K, size_ranges, 1.5),
                         train=fcos.FCOSTrainSettings(score_thresh=0.05, pre_nms_topk=30, nms_thresh=0.6,
                                                      post_nms_topk=12, focal_alpha=0.5, focal_gamma=1.0),
                         test=fcos.FCOSSettings(score_thresh=0.05, pre_nms_topk=30, nms_thresh=0.6, post_nms_topk=5))
    locations, levels = compute_locations(TINY_SHAPES, TINY_STRIDES), location_levels(TINY_SHAPES)
    np.testing.assert_array_equal(detector.locations.asnumpy(), locations)
    assert detector.level_sizes == [64, 16]
    gt_boxes = np.array([[[8, 8, 40, 24], [0, 0, 60, 60]]], np.float32)
    gt_labels, gt_valid = np.array([[2, 0]], np.int32), np.ones((1, 2), bool)
    labels, reg, ctr = fcos_targets_np(locations, levels, gt_boxes, gt_labels, gt_valid, TINY_STRIDES, K,
                                       size_ranges, 1.5)
    assert (labels != K).sum() >= 2
    rng = np.random.RandomState(4)
    cls_logits, pred_ltrb, ctr_logits, _, _ = _loss_inputs(rng, labels)
    head = [Tensor(x) for x in (cls_logits, pred_ltrb, ctr_logits)]
    got = detector.losses(*head, Tensor(gt_boxes), Tensor(gt_labels), Tensor(gt_valid))
    want = fcos.fcos_losses(*head, (Tensor(labels), Tensor(reg), Tensor(ctr)),
                            Tensor(per_location(levels, TINY_STRIDES)),
                            fcos.FCOSTrainSettings(focal_alpha=0.5, focal_gamma=1.0))
    np.testing.assert_allclose([g.asnumpy() for g in got], [w.asnumpy() for w in want], rtol=1e-6)

    image_size = Tensor(np.array([[64.0, 64.0]], np.float32))
    detector.set_train(True)
    train_boxes, _, _, train_valid = detector.detections(*head, image_size)
    detector.set_train(False)
    test_boxes, _, _, test_valid = detector.detections(*head, image_size)
    assert train_boxes.shape == (1, 12, 4) and test_boxes.shape == (1, 5, 4)
    assert test_valid.asnumpy().all()
    np.testing.assert_array_equal(train_boxes.asnumpy()[0, :5], test_boxes.asnumpy()[0])
