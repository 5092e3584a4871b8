"""Matcher and balanced sampler against tests/np_reference.py and hand tables, in both modes."""
import numpy as np

import mindspore as ms
from mindspore import Tensor

import np_reference as ref
from mindseg.models import matcher


def run(fn, *args):
    if ms.get_context("mode") == ms.GRAPH_MODE:
        fn = ms.jit(fn)
    out = fn(*[Tensor(a) for a in args])
    return tuple(o.asnumpy() for o in out) if isinstance(out, tuple) else out.asnumpy()


def rpn_match(iou, valid):
    return matcher.match(iou, valid, thresholds=(0.3, 0.7), allow_low_quality_matches=True)


def roi_match(iou, valid):
    return matcher.match(iou, valid, thresholds=(0.5, 0.5), allow_low_quality_matches=False)


def test_hand_table(mode):
    iou = np.array([[[0.9, 0.5, 0.1, 0.2, 0.0],
                     [0.1, 0.6, 0.0, 0.2, 0.0],
                     [0.8, 0.9, 0.9, 0.9, 0.9]]], np.float32)  # gt 2 is padding
    valid = np.array([[True, True, False]])
    idx, labels = run(rpn_match, iou, valid)
    # anchor 1: best 0.6 (gt 1) would be ignored, but it is gt 1's best -> 1; anchor 3: tie at
    # 0.2 -> the first gt (0), below 0.3 -> 0; the padded gt's 0.9s never count.
    np.testing.assert_array_equal(idx, [[0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(labels, [[1, 1, 0, 0, 0]])
    idx, labels = run(roi_match, iou, valid)
    np.testing.assert_array_equal(labels, [[1, 1, 0, 0, 0]])
    iou[0, 1, 1] = 0.4
    _, labels = run(roi_match, iou, valid)
    np.testing.assert_array_equal(labels, [[1, 1, 0, 0, 0]])  # 0.5 >= 0.5 from gt 0
    iou[0, 0, 1] = 0.45
    _, labels = run(rpn_match, iou, valid)
    np.testing.assert_array_equal(labels, [[1, 1, 0, 0, 0]])  # 0.45 ignore -> gt 1's best -> 1
    _, labels = run(roi_match, iou, valid)
    np.testing.assert_array_equal(labels, [[1, 0, 0, 0, 0]])


def test_low_quality_ties_and_zero(mode):
    iou = np.array([[[0.4, 0.4, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    idx, labels = run(rpn_match, iou, np.array([[True, True]]))
    np.testing.assert_array_equal(labels, [[1, 1, 0, 0]])  # gt 1 overlaps nothing: no match


def test_no_valid_gt_is_background(mode):
    iou = np.full((1, 2, 3), 0.9, np.float32)
    _, labels = run(rpn_match, iou, np.zeros((1, 2), bool))
    np.testing.assert_array_equal(labels, np.zeros((1, 3)))


def test_random_against_reference(mode):
    rng = np.random.default_rng(0)
    for seed in range(4):
        iou = (rng.random((3, 6, 40)) * rng.random((3, 6, 1))).astype(np.float32)
        iou[iou < 0.15] = 0
        valid = rng.random((3, 6)) < 0.7
        valid[0] = False
        for fn, thr, low in [(rpn_match, (0.3, 0.7), True), (roi_match, (0.5, 0.5), False)]:
            idx, labels = run(fn, iou, valid)
            for b in range(3):
                ref_idx, ref_labels = ref.match(iou[b], valid[b], thr, low)
                np.testing.assert_array_equal(labels[b], ref_labels)
                if valid[b].any():
                    np.testing.assert_array_equal(idx[b], ref_idx)


def sample(labels, noise):
    return matcher.sample_balanced(labels, 8, 0.25, noise=noise)


def test_sampler_hand_case(mode):
    labels = np.array([[1, 1, 1, 0, 0, -1, 0, 0, 0, 0, 0, 0],
                       [1, -1, -1, -1, -1, -1, 0, 0, -1, -1, -1, -1]], np.int32)
    noise = np.linspace(0, 0.99, 12, dtype=np.float32)[None].repeat(2, 0)
    idx, valid, is_fg = run(sample, labels, noise)
    # image 0: 2 fg of 3 (highest noise: 2, 1), then 6 bg by noise: 11, 10, 9, 8, 7, 6
    np.testing.assert_array_equal(idx[0], [2, 1, 11, 10, 9, 8, 7, 6])
    np.testing.assert_array_equal(is_fg[0], [1, 1, 0, 0, 0, 0, 0, 0])
    assert valid[0].all()
    # image 1: 1 fg, then its 2 bg; 5 empty slots
    np.testing.assert_array_equal(idx[1][:3], [0, 7, 6])
    np.testing.assert_array_equal(valid[1], [1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(is_fg[1], [1, 0, 0, 0, 0, 0, 0, 0])


def test_sampler_counts_and_randomness(mode):
    rng = np.random.default_rng(1)
    labels = rng.choice([-1, 0, 1], size=(3, 500), p=[0.2, 0.75, 0.05]).astype(np.int32)
    labels[2, :] = np.where(rng.random(500) < 0.01, 1, -1)

    def draw(lab):
        return matcher.sample_balanced(lab, 64, 0.5)

    first = run(draw, labels)
    second = run(draw, labels)
    for idx, valid, is_fg in (first, second):
        for b in range(3):
            picked, fg = idx[b][valid[b]], is_fg[b][valid[b]]
            assert len(set(picked.tolist())) == len(picked)
            np.testing.assert_array_equal(labels[b][picked], np.where(fg, 1, 0))
            n_fg, n_bg = (labels[b] == 1).sum(), (labels[b] == 0).sum()
            assert fg.sum() == min(n_fg, 32)
            assert valid[b].sum() == min(64, fg.sum() + n_bg)
    assert not np.array_equal(first[0], second[0])  # fresh noise each call


def test_matcher_object_binds_its_settings(mode):
    """``Matcher`` (what the RPN takes) is ``match`` with its thresholds, also inside a jitted graph."""
    rng = np.random.default_rng(5)
    iou = rng.random((2, 3, 7)).astype(np.float32)
    valid = np.array([[True, True, False], [True, False, False]])
    bound = matcher.Matcher((0.4, 0.6), allow_low_quality_matches=False)

    def by_object(i, v):
        return bound(i, v)

    def by_function(i, v):
        return matcher.match(i, v, (0.4, 0.6), False)
    for got, want in zip(run(by_object, iou, valid), run(by_function, iou, valid)):
        np.testing.assert_array_equal(got, want)
