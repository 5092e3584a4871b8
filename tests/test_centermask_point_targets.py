"""CenterMask (point representation) targets, mask assembly and losses against
tests/np_reference_centermask_point.py and hand-computed cases, in both modes."""
import math

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

import np_reference_centermask_point as ref
from mindseg.models.centermask_point import losses, masks
from mindseg.models.centermask_point.targets import centernet_targets, gaussian_radius

STRIDE, CANVAS, K = 4, (128, 128), 3
OUT = (CANVAS[0] // STRIDE, CANVAS[1] // STRIDE)


def call(fn, *args, **kwargs):
    """fn on Tensors, jitted in GRAPH mode; outputs as numpy."""
    def run(*tensors):
        return fn(*tensors, **kwargs)
    runner = ms.jit(run) if ms.get_context("mode") == ms.GRAPH_MODE else run
    out = runner(*[Tensor(a) for a in args])
    return tuple(o.asnumpy() for o in out) if isinstance(out, tuple) else out.asnumpy()


def targets(boxes, labels, valid):
    boxes = np.asarray(boxes, np.float32).reshape(1, -1, 4)
    return call(centernet_targets, boxes, np.asarray(labels, np.int32).reshape(1, -1),
                np.asarray(valid, bool).reshape(1, -1), num_classes=K, output_shape=OUT, stride=STRIDE)


def test_gaussian_radius_by_hand_and_against_reference(mode):
    # h 4, w 8, min_overlap 0.7: the three roots are 11.51, 22.28 and 1.471 (CornerNet's case 3 wins)
    got = call(gaussian_radius, np.array([4.0, 10.0, 20.0], np.float32), np.array([8.0, 7.0, 2.0], np.float32))
    np.testing.assert_allclose(got[0], (-16.8 + math.sqrt(16.8 ** 2 + 4 * 2.8 * 9.6)) / 2, rtol=1e-5)
    np.testing.assert_allclose(got, [ref.gaussian_radius(h, w) for h, w in [(4, 8), (10, 7), (20, 2)]], rtol=1e-5)


def test_one_object_by_hand(mode):
    # box /4 = [2, 2, 10, 6]: centre (6, 4) exactly, size (8, 4), radius floor(1.471) = 1, sigma 0.5
    heatmap, index, offset, size, valid = targets([[8, 8, 40, 24], [0, 0, 0, 0]], [1, 0], [True, False])
    assert valid.tolist() == [[True, False]]
    assert index[0, 0] == 4 * OUT[1] + 6 and index[0, 1] == 0
    np.testing.assert_allclose(offset[0], [[0, 0], [0, 0]])
    np.testing.assert_allclose(size[0], [[8, 4], [0, 0]])
    expected = np.zeros(OUT)
    expected[3:6, 5:8] = [[math.exp(-4), math.exp(-2), math.exp(-4)],
                          [math.exp(-2), 1.0, math.exp(-2)],
                          [math.exp(-4), math.exp(-2), math.exp(-4)]]
    np.testing.assert_allclose(heatmap[0, 1], expected, atol=1e-6)
    assert heatmap[0, 0].max() == 0 and heatmap[0, 2].max() == 0
    assert (heatmap[0, 1] == 1).sum() == 1  # exactly one positive


def test_two_overlapping_objects_take_the_max_per_class(mode):
    # same class, centres (6, 4) and (7, 4): both peaks are 1, their neighbours the larger value;
    # a third overlapping object of another class goes to its own channel
    boxes = [[8, 8, 40, 24], [12, 8, 44, 24], [8, 8, 40, 24]]
    heatmap, index, offset, size, valid = targets(boxes, [1, 1, 2], [True] * 3)
    assert index[0].tolist() == [4 * OUT[1] + 6, 4 * OUT[1] + 7, 4 * OUT[1] + 6]
    row = heatmap[0, 1, 4, 4:10]
    np.testing.assert_allclose(row, [0, math.exp(-2), 1, 1, math.exp(-2), 0], atol=1e-6)
    np.testing.assert_allclose(heatmap[0, 1, 3, 6:8], [math.exp(-2), math.exp(-2)], atol=1e-6)
    assert (heatmap[0, 1] == 1).sum() == 2 and (heatmap[0, 2] == 1).sum() == 1
    np.testing.assert_allclose(heatmap[0, 2], ref.centernet_targets(
        np.array(boxes[:1]), [2], [True], K, OUT, STRIDE)[0][2], atol=1e-6)


def test_object_at_the_border_is_clipped(mode):
    # x 120..140 on a 128 canvas -> [30, 32] on the map: centre x 31 (the last column), offset 0,
    # width 2; h 20 -> radius floor(1.055) = 1; the Gaussian window is cut at the border
    heatmap, index, offset, size, valid = targets([[120, 40, 140, 120]], [0], [True])
    assert index[0, 0] == 20 * OUT[1] + 31
    np.testing.assert_allclose(offset[0, 0], [0, 0])
    np.testing.assert_allclose(size[0, 0], [2, 20])
    np.testing.assert_allclose(heatmap[0, 0, 20, 29:], [0, math.exp(-2), 1.0], atol=1e-6)
    np.testing.assert_allclose(heatmap[0, 0, 19, 30:], [math.exp(-4), math.exp(-2)], atol=1e-6)


def test_empty_image_has_no_targets(mode):
    heatmap, index, offset, size, valid = targets(np.zeros((2, 4)), [0, 0], [False, False])
    assert heatmap.max() == 0 and not valid.any() and index.max() == 0
    assert offset.max() == 0 and size.max() == 0


def test_random_targets_against_reference(mode):
    rng = np.random.default_rng(0)
    xy = rng.random((2, 6, 2)) * 120
    boxes = np.concatenate([xy, xy + rng.random((2, 6, 2)) * 60 + 1], -1).astype(np.float32)
    labels = rng.integers(0, K, (2, 6)).astype(np.int32)
    valid = rng.random((2, 6)) < 0.8
    got = call(centernet_targets, boxes, labels, valid, num_classes=K, output_shape=OUT, stride=STRIDE)
    for b in range(2):
        expected = ref.centernet_targets(boxes[b], labels[b], valid[b], K, OUT, STRIDE)
        np.testing.assert_allclose(got[0][b], expected[0], atol=1e-5)
        np.testing.assert_array_equal(got[1][b], expected[1])
        np.testing.assert_allclose(got[2][b], expected[2], atol=1e-5)
        np.testing.assert_allclose(got[3][b], expected[3], atol=1e-4)
        np.testing.assert_array_equal(got[4][b], expected[4])


def test_saliency_crop_and_local_shape_against_reference(mode):
    rng = np.random.default_rng(1)
    saliency = rng.standard_normal((2, K, 16, 16)).astype(np.float32)
    shape_logits = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)  # S = 8
    classes = rng.integers(0, K, (2, 3)).astype(np.int32)
    index = rng.integers(0, 256, (2, 3)).astype(np.int32)
    xy = rng.random((2, 3, 2)) * 50
    boxes = np.concatenate([xy, xy + rng.random((2, 3, 2)) * 20 + 2], -1).astype(np.float32)
    shapes, crops = call(masks.assemble_masks, shape_logits, saliency, index, classes, boxes, stride=STRIDE,
                         resolution=6)
    for b in range(2):
        for n in range(3):
            np.testing.assert_allclose(crops[b, n], ref.crop_saliency(saliency[b, classes[b, n]], boxes[b, n],
                                                                      STRIDE, 6), atol=1e-5)
            vector = shape_logits[b].reshape(64, -1)[:, index[b, n]].reshape(8, 8)
            np.testing.assert_allclose(shapes[b, n], ref.resize_shape(vector, 6), atol=1e-5)
    same, _ = call(masks.assemble_masks, shape_logits, saliency, index, classes, boxes, stride=STRIDE,
                   resolution=8)
    np.testing.assert_array_equal(same[0, 0], shape_logits[0].reshape(64, -1)[:, index[0, 0]].reshape(8, 8))


def test_saliency_crop_of_a_ramp_by_hand(mode):
    # map value = x index; the box [8, 0, 24, 8] covers map columns 2..6: bin centres at 3 and 5
    # (map units), i.e. pixel-centre coordinates 2.5 and 4.5
    ramp = np.tile(np.arange(16, dtype=np.float32), (16, 1)).reshape(1, 1, 16, 16)
    crop = call(masks.crop_saliency, ramp, np.zeros((1, 1), np.int32), np.array([[[8, 0, 24, 8]]], np.float32),
                stride=STRIDE, resolution=2)
    np.testing.assert_allclose(crop[0, 0], [[2.5, 4.5], [2.5, 4.5]], atol=1e-6)


def test_saliency_crop_matches_grid_sample_and_its_gradients():
    """crop_saliency samples with bilinear weight matrices (grid_sample's backward is not
    documented on Ascend): the values and the gradients w.r.t. the map and the boxes are
    grid_sample's (align_corners=False, border padding), boxes partly outside the map included."""
    rng = np.random.default_rng(4)
    saliency = ms.Tensor(rng.standard_normal((1, 2, 12, 10)).astype(np.float32))
    classes = ms.Tensor(np.array([[0, 1, 1]], np.int32))
    xy = rng.random((1, 3, 2)) * 60 - 10
    boxes = ms.Tensor(np.concatenate([xy, xy + rng.random((1, 3, 2)) * 30 + 4], -1).astype(np.float32))
    weight = ms.Tensor(rng.standard_normal((1, 3, 5, 5)).astype(np.float32))

    def by_grid_sample(saliency, boxes):
        maps = ms.ops.gather(saliency.reshape(2, 12, 10), classes.reshape(-1), 0)
        cell = (ms.Tensor(np.arange(5, dtype=np.float32)) + 0.5) / 5
        scaled = boxes.reshape(3, 4) / STRIDE
        xs = scaled[:, 0:1] + cell.reshape(1, -1) * (scaled[:, 2:3] - scaled[:, 0:1])
        ys = scaled[:, 1:2] + cell.reshape(1, -1) * (scaled[:, 3:4] - scaled[:, 1:2])
        gx = ms.ops.broadcast_to((2 * xs / 10 - 1).reshape(3, 1, 5), (3, 5, 5))
        gy = ms.ops.broadcast_to((2 * ys / 12 - 1).reshape(3, 5, 1), (3, 5, 5))
        crops = ms.ops.grid_sample(maps.reshape(3, 1, 12, 10), ms.ops.stack([gx, gy], -1), mode="bilinear",
                                   padding_mode="border", align_corners=False)
        return (crops.reshape(1, 3, 5, 5) * weight).sum()

    def by_crop(saliency, boxes):
        return (masks.crop_saliency(saliency, classes, boxes, STRIDE, 5) * weight).sum()

    want = ms.value_and_grad(by_grid_sample, (0, 1))(saliency, boxes)
    got = ms.value_and_grad(by_crop, (0, 1))(saliency, boxes)
    np.testing.assert_allclose(got[0].asnumpy(), want[0].asnumpy(), rtol=1e-5, atol=1e-5)
    for g, w in zip(got[1], want[1]):
        assert np.abs(w.asnumpy()).max() > 0.1
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-5)


def loss_terms(heat_logits, gt_heat, pred_map, index, target, shape_logits, saliency_logits, gt_masks, valid):
    norm = losses.num_objects(valid)
    return (losses.heatmap_focal_loss(heat_logits, gt_heat, norm),
            losses.center_l1_loss(pred_map, index, target, valid, norm),
            losses.mask_bce_loss(shape_logits, saliency_logits, gt_masks, valid, norm))


def test_losses_by_hand(mode):
    # heatmap: one positive at p = 0.5 -> -log(0.5) * 0.25; one negative with y 0.5, p 0.5 ->
    # -log(0.5) * 0.25 * 0.5^4; others at logit -20 (p clamped to 1e-4)
    heat_logits = np.full((1, 1, 1, 4), -20.0, np.float32)
    heat_logits[0, 0, 0, :2] = 0
    gt_heat = np.array([[[[1.0, 0.5, 0.0, 0.0]]]], np.float32)
    pred_map = np.array([[[[1.0, 2.0, 3.0, 4.0]], [[0.0, 0.0, 0.0, 8.0]]]], np.float32)
    index = np.array([[3, 0]], np.int32)
    target = np.array([[[2.0, 5.0], [9.0, 9.0]]], np.float32)  # second object padded
    valid = np.array([[True, False]])
    gt_masks = np.array([[[[1, 0]], [[1, 1]]]], np.float32)  # R x R = 1 x 2
    zeros = np.zeros((1, 2, 1, 2), np.float32)
    heat, l1, bce = call(loss_terms, heat_logits, gt_heat, pred_map, index, target, zeros, zeros, gt_masks, valid)
    clamp_term = 2 * -math.log(1 - 1e-4) * 1e-8
    np.testing.assert_allclose(heat, math.log(2) * 0.25 * (1 + 0.5 ** 4) + clamp_term, rtol=1e-5)
    np.testing.assert_allclose(l1, (abs(4 - 2) + abs(8 - 5)) / 2, rtol=1e-6)
    np.testing.assert_allclose(bce, (-math.log(0.25) - math.log(0.75)) / 2, rtol=1e-5)
    np.testing.assert_allclose(heat, ref.heatmap_focal_loss(heat_logits, gt_heat, 1), rtol=1e-5)


def test_losses_of_random_batches_against_reference(mode):
    rng = np.random.default_rng(2)
    heat_logits = rng.standard_normal((2, K, 8, 8)).astype(np.float32)
    gt_heat = np.where(rng.random((2, K, 8, 8)) < 0.05, 1.0, rng.random((2, K, 8, 8)) * 0.9).astype(np.float32)
    pred_map = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    index = rng.integers(0, 64, (2, 4)).astype(np.int32)
    target = rng.random((2, 4, 2)).astype(np.float32)
    valid = np.array([[True, True, False, True], [False, True, False, False]])
    shape_logits = rng.standard_normal((2, 4, 5, 5)).astype(np.float32) * 3
    saliency_logits = rng.standard_normal((2, 4, 5, 5)).astype(np.float32) * 3
    gt_masks = (rng.random((2, 4, 5, 5)) < 0.5).astype(np.float32)
    heat, l1, bce = call(loss_terms, heat_logits, gt_heat, pred_map, index, target, shape_logits,
                         saliency_logits, gt_masks, valid)
    np.testing.assert_allclose(heat, ref.heatmap_focal_loss(heat_logits, gt_heat, 4), rtol=1e-4)
    np.testing.assert_allclose(l1, ref.center_l1_loss(pred_map, index, target, valid), rtol=1e-5)
    np.testing.assert_allclose(bce, ref.mask_bce_loss(shape_logits, saliency_logits, gt_masks, valid), rtol=1e-4)


def test_empty_image_gives_exact_zero_offset_size_and_mask_losses(mode):
    rng = np.random.default_rng(3)
    heat_logits = rng.standard_normal((1, K, 8, 8)).astype(np.float32)
    heat, l1, bce = call(loss_terms, heat_logits, np.zeros((1, K, 8, 8), np.float32),
                         rng.standard_normal((1, 2, 8, 8)).astype(np.float32), np.zeros((1, 2), np.int32),
                         np.zeros((1, 2, 2), np.float32), rng.standard_normal((1, 2, 4, 4)).astype(np.float32),
                         rng.standard_normal((1, 2, 4, 4)).astype(np.float32), np.ones((1, 2, 4, 4), np.float32),
                         np.zeros((1, 2), bool))
    assert l1 == 0.0 and bce == 0.0
    # the heatmap loss is the negatives' sum (normaliser 1), as CenterNet's num_pos == 0 branch
    np.testing.assert_allclose(heat, ref.heatmap_focal_loss(heat_logits, np.zeros_like(heat_logits), 0), rtol=1e-4)
    assert heat > 0
