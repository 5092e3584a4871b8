"""RoIPooler and level rules against tests/np_reference.py, a hand-computed 2x2 case and the
level tables, in both modes.

Speed at Mask R-CNN sizes (B=1, R=512, C=256, canvas 800x1216, P2-P5, aligned), measured on the
shared 2-core machine under load 4-6 with ``MINDSEG_BENCH=1 pytest tests/test_poolers.py -k speed -s``
(see the geometry report for the table): the gather pooler pools all four levels in one pass in
about the time ops.ROIAlign needs for one level; GRAPH mode is 3-5x faster than PYNATIVE.
"""
import os
import time


import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

import np_reference as ref
from mindseg.models.layers.poolers import RoIPooler, centermask_level, fpn_level


def test_fpn_level_table():
    sides = [10, 111, 112, 223, 224, 447, 448, 1000]
    boxes = np.array([[0, 0, s, s] for s in sides], np.float32)
    expected = [2, 2, 3, 3, 4, 4, 5, 5]
    np.testing.assert_array_equal(fpn_level(Tensor(boxes)).asnumpy(), expected)
    np.testing.assert_array_equal(ref.fpn_level(boxes), expected)


def test_centermask_level_table():
    image_area = np.float32(800 * 1000)
    # ratio A_img / A_roi: 1 -> ceil(5) = 5; 4 -> 3; 4.1 -> ceil(2.96) = 3; 16 -> 1 -> 3; 3 -> ceil(3.42) = 4
    areas = [800 * 1000, 200 * 1000, 800 * 1000 / 4.1, 50 * 1000, 800 * 1000 / 3]
    boxes = np.array([[0, 0, a / 1000, 1000] for a in areas], np.float32)
    got = centermask_level(Tensor(boxes), Tensor(image_area)).asnumpy()
    np.testing.assert_array_equal(got, [5, 3, 3, 3, 4])
    np.testing.assert_array_equal(ref.centermask_level(boxes, image_area), [5, 3, 3, 3, 4])


def single_level(boxes, min_level, max_level):
    return fpn_level(boxes, min_level=min_level, max_level=max_level) * 0 + min_level


def test_hand_2x2(mode):
    # feature 1 x 3 x 3 = [[0, 1, 2], [3, 4, 5], [6, 7, 8]] (value = 3 y + x), scale 1
    feature = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    roi = np.array([[[0.5, 0.5, 2.5, 2.5]]], np.float32)
    # aligned: box [0, 2] in pixel-centre units, one sample per bin at 0.5 and 1.5 on each axis
    # -> 3 y + x = 2, 3, 5, 6 (bilinear is exact on a linear map)
    pool = RoIPooler(2, [1.0], 1, True, level_fn=single_level)
    got = pool((Tensor(feature),), Tensor(roi)).asnumpy()
    np.testing.assert_allclose(got[0, 0], [[2.0, 3.0], [5.0, 6.0]], atol=1e-6)
    # not aligned: box [0.5, 2.5], sample centres 1.0, 2.0 -> values 4, 5, 7, 8
    pool = RoIPooler(2, [1.0], 1, False, level_fn=single_level)
    got = pool((Tensor(feature),), Tensor(roi)).asnumpy()
    np.testing.assert_allclose(got[0, 0], [[4.0, 5.0], [7.0, 8.0]], atol=1e-6)
    np.testing.assert_allclose(ref.roi_align(feature[0], roi[0, 0], 2, 1.0, 1, False)[0], got[0, 0])
    # samples at x = 2.7 (past the last centre: clamps to column 2) and x = 3.7 (> W = 3: reads 0)
    far = np.array([[[2.7, 0.5, 4.7, 2.5]]], np.float32)
    pool = RoIPooler(2, [1.0], 1, True, level_fn=single_level)
    got = pool((Tensor(feature),), Tensor(far)).asnumpy()
    np.testing.assert_allclose(got[0, 0], [[3 * 0.5 + 2, 0.0], [3 * 1.5 + 2, 0.0]], atol=1e-5)


@pytest.mark.parametrize("sampling_ratio,aligned", [(2, True), (2, False), (0, True), (0, False)])
def test_multilevel_against_reference(mode, sampling_ratio, aligned):
    rng = np.random.default_rng(sampling_ratio + int(aligned))
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    features = [rng.standard_normal((2, 3, int(64 * s), int(96 * s))).astype(np.float32) for s in scales]
    size = np.exp(rng.uniform(np.log(4), np.log(500), (2, 9, 1)))
    ratio = np.exp(rng.uniform(np.log(0.5), np.log(2), (2, 9, 1)))
    centre = rng.random((2, 9, 2)) * np.array([96, 64]) * 1.2 - 5
    half = np.concatenate([size / np.sqrt(ratio), size * np.sqrt(ratio)], -1) / 2
    rois = np.concatenate([centre - half, centre + half], -1).astype(np.float32)
    rois[0, 0] = [10, 10, 10, 30]  # empty width
    levels = ref.fpn_level(rois) - 2
    on_level = (rois[..., 2:] - rois[..., :2]) * np.take([1 / 4, 1 / 8, 1 / 16, 1 / 32], levels)[..., None]
    assert np.ceil(on_level / 5).max() <= 8  # within the adaptive cap: exact
    pool = RoIPooler(5, scales, sampling_ratio, aligned, adaptive_max_samples=8)
    call = ms.jit(pool.construct) if mode == ms.GRAPH_MODE else pool
    got = call(tuple(Tensor(f) for f in features), Tensor(rois)).asnumpy()
    expected = ref.multilevel_roi_align(features, rois, levels, 5, scales, sampling_ratio, aligned)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_adaptive_cap_changes_only_large_rois():
    rng = np.random.default_rng(5)
    feature = rng.standard_normal((1, 2, 16, 16)).astype(np.float32)
    rois = np.array([[[0, 0, 9, 9], [0, 0, 15, 5]]], np.float32)  # 9/4 -> 3 samples per bin, 15/4 -> 4
    capped = RoIPooler(4, [1.0], 0, True, level_fn=single_level, adaptive_max_samples=2)
    got = capped((Tensor(feature),), Tensor(rois)).asnumpy()
    # capped at 2: equals the fixed 2-sample RoIAlign, not the adaptive one
    np.testing.assert_allclose(got[0], ref.roi_align(feature[0], rois[0, 0], 4, 1.0, 2, True), atol=1e-5)
    assert np.abs(got[0] - ref.roi_align(feature[0], rois[0, 0], 4, 1.0, 0, True)).max() > 1e-3


def coarse_rule(boxes, min_level, max_level):
    return fpn_level(boxes, canonical_size=20, min_level=min_level, max_level=max_level)


def test_gradient_matches_reference_adjoint(mode):
    # pooling is linear in the features: <d pool / d f, g> summed equals <pool(f), g> per RoI sums
    rng = np.random.default_rng(6)
    features = (Tensor(rng.standard_normal((1, 2, 8, 8)).astype(np.float32)),
                Tensor(rng.standard_normal((1, 2, 4, 4)).astype(np.float32)))
    rois = Tensor(np.array([[[1, 2, 20, 14], [3, 3, 30, 31], [0, 0, 5, 5]]], np.float32))
    pool = RoIPooler(3, [1 / 4, 1 / 8], 2, True, level_fn=coarse_rule)
    upstream = Tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32))

    def loss(f0, f1):
        return (pool((f0, f1), rois) * upstream).sum()

    grad_fn = ms.grad(loss, grad_position=(0, 1))
    if mode == ms.GRAPH_MODE:
        grad_fn = ms.jit(grad_fn)
    grads = grad_fn(*features)
    # linear map: loss(f) = <grad, f>
    total = sum(float((g * f).sum().asnumpy()) for g, f in zip(grads, features))
    assert total == pytest.approx(float(loss(*features).asnumpy()), rel=1e-4)
    # finite difference on one entry of the coarse level
    bump = np.zeros((1, 2, 4, 4), np.float32)
    bump[0, 1, 2, 3] = 1.0
    shifted = float(loss(features[0], features[1] + Tensor(bump)).asnumpy())
    assert shifted - float(loss(*features).asnumpy()) == pytest.approx(float(grads[1].asnumpy()[0, 1, 2, 3]), abs=1e-3)


def test_chunked_taps_give_the_unchunked_pool_and_gradient(monkeypatch, mode):
    # a small transient budget makes _WeightedRows walk the 16 taps of each bin in chunks of 4;
    # the pooled values and the feature gradient must be those of the one-pass walk (in GRAPH
    # mode the chunks are chained by ops.depend, which must not change what they add up to)
    from mindseg.models.layers import poolers
    rng = np.random.default_rng(7)
    features = (Tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32)),
                Tensor(rng.standard_normal((1, 3, 4, 4)).astype(np.float32)))
    rois = Tensor(np.array([[[1, 2, 20, 14], [3, 3, 30, 31], [0, 0, 5, 5]]], np.float32))
    upstream = Tensor(rng.standard_normal((3, 3, 2, 2)).astype(np.float32))

    def pool_and_grad():
        pool = RoIPooler(2, [1 / 4, 1 / 8], 2, True, level_fn=coarse_rule)

        def loss(f0, f1):
            return (pool((f0, f1), rois) * upstream).sum()
        grads = ms.grad(loss, grad_position=(0, 1))(*features)
        return pool(features, rois).asnumpy(), [g.asnumpy() for g in grads]

    whole, whole_grads = pool_and_grad()
    assert RoIPooler(2, [1 / 4, 1 / 8], 2, True).weighted_rows._chunk(
        ms.ops.zeros((12, 16), ms.int32), ms.ops.zeros((80, 3))) == 16
    monkeypatch.setattr(poolers, "_CHUNK_FLOATS", 4 * 12 * 3)
    assert RoIPooler(2, [1 / 4, 1 / 8], 2, True).weighted_rows._chunk(
        ms.ops.zeros((12, 16), ms.int32), ms.ops.zeros((80, 3))) == 4
    chunked, chunked_grads = pool_and_grad()
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    for got, want in zip(chunked_grads, whole_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_centermask_rule_with_level_arg():
    rng = np.random.default_rng(8)
    scales = [1 / 8, 1 / 16, 1 / 32]
    features = [rng.standard_normal((2, 2, int(64 * s), int(64 * s))).astype(np.float32) for s in scales]
    rois = np.array([[[0, 0, 60, 60], [0, 0, 10, 10]], [[0, 0, 60, 60], [5, 5, 25, 25]]], np.float32)
    image_area = np.array([64 * 64, 32 * 32], np.float32)
    pool = RoIPooler(4, scales, 2, True, level_fn=centermask_level)
    got = pool(tuple(Tensor(f) for f in features), Tensor(rois), Tensor(image_area)).asnumpy()
    levels = ref.centermask_level(rois, image_area[:, None]) - 3
    np.testing.assert_array_equal(levels, [[2, 0], [2, 1]])
    expected = ref.multilevel_roi_align(features, rois, levels, 4, scales, 2, True)
    np.testing.assert_allclose(got, expected, atol=2e-5)


@pytest.mark.skipif(not os.environ.get("MINDSEG_BENCH"), reason="benchmark: set MINDSEG_BENCH=1")
def test_speed_against_roialign():
    from mindspore import ops

    rng = np.random.default_rng(0)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    features = tuple(Tensor(rng.standard_normal((1, 256, int(800 * s), int(1216 * s))).astype(np.float32))
                     for s in scales)
    size = np.exp(rng.uniform(np.log(16), np.log(600), (1, 512, 1)))
    centre = rng.random((1, 512, 2)) * np.array([1216, 800])
    rois = Tensor(np.concatenate([centre - size / 2, centre + size / 2], -1).astype(np.float32))

    def best_of(fn, n=2):
        times = []
        for _ in range(n):
            start = time.time()
            fn().asnumpy()
            times.append(time.time() - start)
        return min(times)

    pool = RoIPooler(7, scales, 2, True)
    pooled = best_of(lambda: pool(features, rois))
    roialign = ops.ROIAlign(7, 7, 0.25, 2, 0)
    rois5 = ops.concat((ops.zeros((512, 1), ms.float32), rois.reshape(512, 4)), 1)
    one_level = best_of(lambda: roialign(features[0], rois5))
    print(f"RoIPooler 4 levels {pooled:.3f} s, ops.ROIAlign P2 only {one_level:.3f} s")
    assert pooled < one_level
