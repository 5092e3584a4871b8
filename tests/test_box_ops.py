"""Box geometry against tests/np_reference.py and hand-computed values, in both modes."""
import math

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

import np_reference as ref
from mindseg.models import box_ops


def run(fn, *args):
    """Call fn as a jitted function in GRAPH mode, directly in PYNATIVE."""
    if ms.get_context("mode") == ms.GRAPH_MODE:
        fn = ms.jit(fn)
    out = fn(*[Tensor(a) for a in args])
    return tuple(o.asnumpy() for o in out) if isinstance(out, tuple) else out.asnumpy()


def random_boxes(rng, shape, degenerate=0.0):
    xy = rng.random(shape + (2,)) * 100
    wh = rng.random(shape + (2,)) * 60 + 1
    boxes = np.concatenate([xy, xy + wh], -1)
    flip = rng.random(shape) < degenerate
    boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
    return boxes.astype(np.float32)


def test_iou_hand_case(mode):
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [3, 3, 3, 8]], np.float32)
    b = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 0, 0, 0]], np.float32)
    expected = np.array([[1.0, 0.0, 0.0], [25 / 175, 25 / 175, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(run(box_ops.pairwise_iou, a, b), expected, atol=1e-6)
    np.testing.assert_allclose(run(box_ops.box_area, a), [100, 100, 0])


def test_iou_matches_reference_with_batch_dims(mode):
    rng = np.random.default_rng(0)
    a = random_boxes(rng, (2, 7), degenerate=0.2)
    b = random_boxes(rng, (2, 9), degenerate=0.2)
    got = run(box_ops.pairwise_iou, a, b)
    assert got.shape == (2, 7, 9) and np.isfinite(got).all()
    for i in range(2):
        np.testing.assert_allclose(got[i], ref.pairwise_iou(a[i], b[i]), atol=1e-6)
    # broadcast of a shared set of boxes against a batch
    got = run(box_ops.pairwise_iou, a, b[0])
    np.testing.assert_allclose(got[1], ref.pairwise_iou(a[1], b[0]), atol=1e-6)


def test_encode_decode_hand_case(mode):
    ref_box = np.array([[0, 0, 10, 20]], np.float32)
    target = np.array([[5, 0, 25, 20]], np.float32)  # centre (15, 10) vs (5, 10), width 20 vs 10
    def encode(r, t):
        return box_ops.encode_boxes(r, t, (10.0, 10.0, 5.0, 5.0))

    def decode(r, d):
        return box_ops.decode_boxes(r, d, (10.0, 10.0, 5.0, 5.0))

    deltas = run(encode, ref_box, target)
    np.testing.assert_allclose(deltas, [[10 * 10 / 10, 0.0, 5 * math.log(2), 0.0]], atol=1e-5)
    back = run(decode, ref_box, deltas)
    np.testing.assert_allclose(back, target, atol=1e-4)


def test_encode_decode_reference_and_clamp(mode):
    rng = np.random.default_rng(1)
    anchors = random_boxes(rng, (3, 11))
    targets = random_boxes(rng, (3, 11))
    deltas = run(box_ops.encode_boxes, anchors, targets)
    np.testing.assert_allclose(deltas, ref.encode_boxes(anchors, targets), rtol=1e-4, atol=1e-4)
    wild = rng.standard_normal((3, 11, 4)).astype(np.float32) * 3
    wild[0, 0, 2] = 50.0  # far beyond the clamp: must stay finite and equal the clamped reference
    decoded = run(box_ops.decode_boxes, anchors, wild)
    np.testing.assert_allclose(decoded, ref.decode_boxes(anchors, wild), rtol=1e-4, atol=1e-2)
    assert decoded[0, 0, 2] - decoded[0, 0, 0] == pytest.approx(
        (anchors[0, 0, 2] - anchors[0, 0, 0]) * 1000 / 16, rel=1e-4)


def test_decode_class_specific_broadcast(mode):
    rng = np.random.default_rng(2)
    proposals = random_boxes(rng, (2, 5))
    deltas = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)
    def decode(p, d):
        return box_ops.decode_boxes(p.expand_dims(2), d)

    got = run(decode, proposals, deltas)
    np.testing.assert_allclose(got, ref.decode_boxes(proposals[:, :, None], deltas), rtol=1e-4, atol=1e-3)


def test_clip_and_nonempty(mode):
    boxes = np.array([[[-5, -5, 50, 50], [90, 10, 120, 30]], [[10, 10, 10.5, 40], [0, 0, 5, 5]]], np.float32)
    size = np.array([[40, 100], [30, 8]], np.float32)
    clipped = run(box_ops.clip_boxes, boxes, size)
    np.testing.assert_allclose(clipped, [[[0, 0, 50, 40], [90, 10, 100, 30]], [[8, 10, 8, 30], [0, 0, 5, 5]]])
    def keep_fn(b):
        return box_ops.nonempty(b, 1.0)

    keep = run(keep_fn, clipped)
    np.testing.assert_array_equal(keep, [[True, True], [False, True]])


def test_iou_native_equals_elementwise_at_canvas_scale():
    rng = np.random.default_rng(4)
    a = random_boxes(rng, (2, 40), degenerate=0.1) * 12 - 50  # coordinates up to ~1300, some < 1
    b = random_boxes(rng, (2, 300), degenerate=0.1) * 12 - 50
    native = box_ops.pairwise_iou(Tensor(a), Tensor(b)).asnumpy()
    plain = box_ops.pairwise_iou(Tensor(a), Tensor(b), impl="elementwise").asnumpy()
    np.testing.assert_allclose(native, plain, atol=2e-6)
    for i in range(2):
        np.testing.assert_allclose(native[i], ref.pairwise_iou(a[i], b[i]), atol=2e-6)


def test_box_coder_binds_weights_and_clamp(mode):
    """``BoxCoder`` (what the RPN takes) is encode_boxes / decode_boxes with its weights and dw/dh
    clamp, also inside a jitted graph."""
    coder = box_ops.BoxCoder((10.0, 10.0, 5.0, 5.0), scale_clamp=0.5)
    ref_boxes = np.array([[0, 0, 10, 20], [5, 5, 25, 15]], np.float32)
    deltas = np.array([[1.0, -2.0, 30.0, 0.1], [0.0, 0.0, -1.0, 40.0]], np.float32)

    def decode(r, d):
        return coder.decode(r, d)

    def encode(r, t):
        return coder.encode(r, t)

    def encode_by_function(r, t):
        return box_ops.encode_boxes(r, t, (10.0, 10.0, 5.0, 5.0))
    decoded = run(decode, ref_boxes, deltas)
    np.testing.assert_allclose(decoded, ref.decode_boxes(ref_boxes, deltas, (10.0, 10.0, 5.0, 5.0), 0.5),
                               rtol=1e-5, atol=1e-4)
    assert decoded[0, 2] - decoded[0, 0] == pytest.approx(10 * math.exp(0.5), rel=1e-5)  # clamped dw
    targets = np.array([[1, 2, 11, 18], [6, 4, 20, 18]], np.float32)
    np.testing.assert_allclose(run(encode, ref_boxes, targets), run(encode_by_function, ref_boxes, targets))
