"""Mask targets from gt crops, mask pasting and RLE, against tests/np_reference.py and hand cases."""
import json

import numpy as np

import mindspore as ms
from mindspore import Tensor
from pycocotools import mask as mask_util

import np_reference as ref
from mindseg.models.mask_ops import mask_targets_from_crops, mask_to_rle, paste_masks


def targets(gt_masks, gt_boxes, matched_idx, rois):
    return mask_targets_from_crops(gt_masks, gt_boxes, matched_idx, rois, size=28)


def run_targets(*args):
    fn = ms.jit(targets) if ms.get_context("mode") == ms.GRAPH_MODE else targets
    return fn(*[Tensor(a) for a in args]).asnumpy()


def test_hand_cases(mode):
    crop = 56
    gt_masks = np.zeros((1, 3, crop, crop), np.uint8)
    gt_masks[0, 0] = 1                 # all ones
    gt_masks[0, 1, :, :crop // 2] = 1  # left half set
    gt_masks[0, 2] = 1
    gt_boxes = np.array([[[10, 20, 50, 100], [0, 0, 40, 40], [100, 100, 140, 160]]], np.float32)
    rois = np.array([[[10, 20, 50, 100],      # equal to gt 0 -> all ones
                      [20, 0, 40, 40],        # right half of gt 1 -> all zeros
                      [80, 70, 160, 190],     # twice gt 2, same centre -> ones in the central half
                      [10, 0, 50, 40]]], np.float32)  # gt 1 shifted right by a quarter
    matched = np.array([[0, 1, 2, 1]], np.int32)
    got = run_targets(gt_masks, gt_boxes, matched, rois)
    assert got.shape == (1, 4, 28, 28)
    np.testing.assert_array_equal(got[0, 0], np.ones((28, 28)))
    np.testing.assert_array_equal(got[0, 1], np.zeros((28, 28)))
    central = np.zeros((28, 28))
    central[7:21, 7:21] = 1
    np.testing.assert_array_equal(got[0, 2], central)
    left = np.zeros((28, 28))
    left[:, :7] = 1  # x in [10, 20) of the RoI [10, 50] is the set left half of [0, 40]
    np.testing.assert_array_equal(got[0, 3], left)


def test_random_against_reference(mode):
    rng = np.random.default_rng(0)
    batch, num_gt, crop, num_rois = 2, 3, 20, 5
    gt_masks = (rng.random((batch, num_gt, crop, crop)) < 0.5).astype(np.uint8)
    xy = rng.random((batch, num_gt, 2)) * 50
    gt_boxes = np.concatenate([xy, xy + rng.random((batch, num_gt, 2)) * 40 + 5], -1).astype(np.float32)
    matched = rng.integers(0, num_gt, (batch, num_rois)).astype(np.int32)
    picked = np.take_along_axis(gt_boxes, matched[..., None], 1)
    rois = (picked + rng.standard_normal((batch, num_rois, 4)) * 6).astype(np.float32)
    rois[..., 2:] = np.maximum(rois[..., 2:], rois[..., :2] + 1)
    got = run_targets(gt_masks, gt_boxes, matched, rois)
    for b in range(batch):
        for r in range(num_rois):
            expected = ref.mask_target(gt_masks[b, matched[b, r]], gt_boxes[b, matched[b, r]], rois[b, r], 28)
            # bilinear values within float noise of 0.5 may flip; allow a handful of pixels
            assert (got[b, r] != expected).sum() <= 2, (b, r)


def test_paste_hand_case():
    probs = np.zeros((2, 28, 28))
    probs[0] = 1.0
    probs[1, :, :14] = 1.0
    boxes = np.array([[2, 3, 12, 9], [0, 0, 20, 10]], np.float32)
    out = paste_masks(probs, boxes, 12, 16)
    assert out.dtype == np.uint8 and out.shape == (2, 12, 16)
    expected = np.zeros((12, 16), np.uint8)
    expected[3:9, 2:12] = 1  # pixels whose centres lie in the box (zero padding fades the rim)
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(out[1][:10].sum(0), [10] * 10 + [0] * 6)  # left half of a 20 px box


def test_paste_against_reference():
    rng = np.random.default_rng(1)
    probs = rng.random((3, 28, 28))
    boxes = np.array([[3.3, 4.7, 30.2, 21.9], [-5, -3, 12, 14], [20, 10, 47.5, 40]], np.float32)
    out = paste_masks(probs, boxes, 32, 40)
    for mask, box, got in zip(probs, boxes, out):
        np.testing.assert_array_equal(got, ref.paste_mask(mask, box, 32, 40))


def test_rle_roundtrip_json():
    mask = np.zeros((7, 9), np.uint8)
    mask[2:5, 3:8] = 1
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [7, 9]
    back = json.loads(json.dumps(rle))
    back["counts"] = back["counts"].encode("ascii")
    np.testing.assert_array_equal(mask_util.decode(back), mask)
