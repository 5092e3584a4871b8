"""Greedy NMS against tests/np_reference.greedy_nms on random boxes and a hand case, both modes."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

import np_reference as ref
from mindseg.models.layers import nms


@pytest.fixture(params=[(ms.PYNATIVE_MODE, "native"), (ms.GRAPH_MODE, "native"),
                        (ms.PYNATIVE_MODE, "matrix"), (ms.GRAPH_MODE, "matrix")],
                ids=["pynative-native", "graph-native", "pynative-matrix", "graph-matrix"])
def mode(request):
    global IMPL
    ms.set_context(mode=request.param[0])
    IMPL = request.param[1]
    yield request.param
    ms.set_context(mode=ms.PYNATIVE_MODE)


IMPL = "native"


def run(fn, *args):
    if ms.get_context("mode") == ms.GRAPH_MODE:
        fn = ms.jit(fn)
    out = fn(*[Tensor(a) for a in args])
    return tuple(o.asnumpy() for o in out)


def nms_05_top4(boxes, scores, valid):
    return nms.batched_nms(boxes, scores, valid, 0.5, 4, impl=IMPL)


def nms_classes(boxes, scores, valid, classes):
    return nms.batched_nms(boxes, scores, valid, 0.5, 60, classes, impl=IMPL)


def test_hand_case(mode):
    boxes = np.array([[[0, 0, 10, 10],     # 0.9 kept
                       [1, 0, 11, 10],     # 0.8 IoU 9/11 with box 0 -> suppressed
                       [2, 0, 12, 10],     # 0.7 IoU 8/12 with 0 -> suppressed (chain through 1 is irrelevant)
                       [6, 0, 16, 10],     # 0.6 IoU 4/16 with 0 -> kept
                       [np.nan, 0, 5, 5],  # 0.95 but invalid (NaN) -> dropped, suppresses nothing
                       [7, 0, 17, 10]]], np.float32)  # 0.5 IoU 9/11 with 3 -> suppressed
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.95, 0.5]], np.float32)
    valid = np.array([[1, 1, 1, 1, 0, 1]], bool)
    keep_idx, keep_valid = run(nms_05_top4, boxes, scores, valid)
    np.testing.assert_array_equal(keep_valid, [[1, 1, 0, 0]])
    np.testing.assert_array_equal(keep_idx[keep_valid], [0, 3])
    np.testing.assert_array_equal(keep_idx[~keep_valid], [0, 0])


def test_chain_needs_greedy_order(mode):
    # A suppresses B, B would suppress C: greedy keeps A and C (a one-pass "any higher box" rule drops C)
    boxes = np.array([[[0, 0, 10, 10], [2, 0, 12, 10], [4, 0, 14, 10]]], np.float32)  # IoU 2/3, 2/3, 3/7
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    keep_idx, keep_valid = run(nms_05_top4, boxes, scores, np.ones((1, 3), bool))
    np.testing.assert_array_equal(keep_idx[keep_valid], [0, 2])
    assert keep_valid.shape == (1, 4)


@pytest.mark.parametrize("seed", range(4))
def test_random_against_reference(mode, seed):
    rng = np.random.default_rng(seed)
    batch, num = 2, 150
    centre = rng.random((batch, num, 2)) * 120
    size = rng.random((batch, num, 2)) * 50 + 5
    boxes = np.concatenate([centre - size / 2, centre + size / 2], -1).astype(np.float32)
    scores = rng.random((batch, num)).astype(np.float32)
    valid = rng.random((batch, num)) < 0.9
    classes = rng.integers(0, 3, (batch, num)).astype(np.int32)
    keep_idx, keep_valid = run(nms_classes, boxes, scores, valid, classes)
    plain_idx, plain_valid = run(nms_05_top4, boxes, scores, valid)
    for b in range(batch):
        expected = ref.greedy_nms(boxes[b], scores[b], valid[b], 0.5, classes[b])[:60]
        np.testing.assert_array_equal(keep_idx[b][keep_valid[b]], expected)
        expected = ref.greedy_nms(boxes[b], scores[b], valid[b], 0.5)[:4]
        np.testing.assert_array_equal(plain_idx[b][plain_valid[b]], expected)


def test_native_past_the_device_limit_runs_the_matrix_form(mode, monkeypatch):
    """On a device whose NMSWithMask takes fewer boxes than given (Ascend: 2864), batched_nms
    runs the matrix form: the same boxes as the native kernel and the reference."""
    rng = np.random.default_rng(3)
    centre = rng.random((2, 40, 2)) * 60
    size = rng.random((2, 40, 2)) * 30 + 5
    boxes = np.concatenate([centre - size / 2, centre + size / 2], -1).astype(np.float32)
    scores = rng.random((2, 40)).astype(np.float32)
    valid = rng.random((2, 40)) < 0.9
    classes = rng.integers(0, 3, (2, 40)).astype(np.int32)
    expected = run(nms_classes, boxes, scores, valid, classes)
    monkeypatch.setattr(nms, "NATIVE_MAX_BOXES", {"CPU": 39})
    monkeypatch.setattr(nms, "_native_keep", keep_nothing)  # were the native form used, all would go
    limited = run(nms_classes, boxes, scores, valid, classes)
    for got, want in zip(limited, expected):
        np.testing.assert_array_equal(got, want)
    for b in range(2):
        np.testing.assert_array_equal(limited[0][b][limited[1][b]],
                                      ref.greedy_nms(boxes[b], scores[b], valid[b], 0.5, classes[b])[:60])


def keep_nothing(sorted_boxes, sorted_classes, iou_threshold):
    return ms.ops.zeros(sorted_boxes.shape[:2], ms.bool_)


def grouped(boxes1, scores1, valid1, boxes2, scores2, valid2):
    return nms.grouped_nms([boxes1, boxes2], [scores1, scores2], [valid1, valid2], 0.5, 30, impl=IMPL)


def test_grouped_equals_classwise(mode):
    rng = np.random.default_rng(7)
    centre = rng.random((2, 60, 2)) * 80
    boxes = np.concatenate([centre - 12, centre + 12], -1).astype(np.float32)
    scores = rng.random((2, 60)).astype(np.float32)
    valid = rng.random((2, 60)) < 0.9
    keep_idx, keep_valid = run(grouped, boxes[:, :25], scores[:, :25], valid[:, :25],
                               boxes[:, 25:], scores[:, 25:], valid[:, 25:])
    groups = np.array([0] * 25 + [1] * 35)
    for b in range(2):
        expected = ref.greedy_nms(boxes[b], scores[b], valid[b], 0.5, groups)[:30]
        np.testing.assert_array_equal(keep_idx[b][keep_valid[b]], expected)
