"""RPN: level shapes, prediction flattening order, losses against a NumPy reference, proposals."""
import mindspore as ms
import numpy as np
import pytest

from mindseg.models.anchors import AnchorGenerator
from mindseg.models.box_ops import BoxCoder
from mindseg.models.losses import smooth_l1
from mindseg.models.matcher import Matcher
from mindseg.models.necks.fpn import level_shapes
from mindseg.models.dense_heads.rpn import RPN, RPNHead, RPNSettings, RPNTrainSettings, rpn_losses

LOSS_PARTS = dict(anchor_matcher=Matcher((0.3, 0.7), True), box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)))


def test_level_shapes_hand_computed():
    assert level_shapes((800, 1344), (4, 8, 16, 32, 64)) == [(200, 336), (100, 168), (50, 84), (25, 42), (13, 21)]
    assert level_shapes((128, 96), (8, 16, 32, 64, 128)) == [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]


def test_head_flattens_row_col_anchor():
    head = RPNHead(in_channels=4, num_anchors=3)
    feature = ms.Tensor(np.random.default_rng(0).normal(size=(2, 4, 3, 5)).astype(np.float32))
    (logits,), (deltas,) = head((feature,))
    hidden = ms.ops.relu(head.conv(feature))
    raw_logits = head.objectness(hidden).asnumpy()
    raw_deltas = head.anchor_deltas(hidden).asnumpy()
    row, col, anchor = 2, 4, 1
    flat = (row * 5 + col) * 3 + anchor
    assert logits.shape == (2, 45) and deltas.shape == (2, 45, 4)
    np.testing.assert_allclose(logits.asnumpy()[1, flat], raw_logits[1, anchor, row, col], rtol=1e-6)
    np.testing.assert_allclose(deltas.asnumpy()[1, flat], raw_deltas[1, anchor * 4:anchor * 4 + 4, row, col],
                               rtol=1e-6)


def _bce(logit, label):
    return max(logit, 0) - logit * label + np.log1p(np.exp(-abs(logit)))


def _encode(ref, tgt):
    rw, rh = ref[2] - ref[0], ref[3] - ref[1]
    tw, th = tgt[2] - tgt[0], tgt[3] - tgt[1]
    return np.array([(tgt[0] + tw / 2 - ref[0] - rw / 2) / rw, (tgt[1] + th / 2 - ref[1] - rh / 2) / rh,
                     np.log(tw / rw), np.log(th / rh)])


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_losses_match_numpy_when_every_anchor_is_sampled(beta):
    # anchor 0 overlaps the gt at IoU 0.8 (fg), anchors 1 and 3 miss it (bg), anchor 2 is in the
    # ignore band (IoU 0.5); sampling 4 per image then takes every non-ignored anchor.
    anchors = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 5], [80, 0, 90, 10]], np.float32)
    gt = np.array([[[0, 0, 10, 8]], ], np.float32)
    logits = np.array([[1.5, -0.5, 3.0, 0.25]], np.float32)
    deltas = np.random.default_rng(0).normal(size=(1, 4, 4)).astype(np.float32)
    loss_cls, loss_loc = rpn_losses(ms.Tensor(logits), ms.Tensor(deltas), ms.Tensor(anchors), ms.Tensor(gt),
                                    ms.Tensor(np.ones((1, 1), bool)),
                                    RPNTrainSettings(batch_size_per_image=4, positive_fraction=0.5, smooth_l1_beta=beta,
                                                     **LOSS_PARTS))
    expected_cls = (_bce(1.5, 1) + _bce(-0.5, 0) + _bce(0.25, 0)) / 4
    diff = np.abs(deltas[0, 0] - _encode(anchors[0], gt[0, 0]))
    per = diff if beta == 0 else np.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)
    np.testing.assert_allclose(float(loss_cls), expected_cls, rtol=1e-5)
    np.testing.assert_allclose(float(loss_loc), per.sum() / 4, rtol=1e-5)


def test_no_gt_gives_zero_localization_loss():
    anchors = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    loss_cls, loss_loc = rpn_losses(
        ms.Tensor(np.zeros((1, 2), np.float32)), ms.Tensor(np.full((1, 2, 4), 1e6, np.float32)),
        ms.Tensor(anchors), ms.Tensor(np.zeros((1, 3, 4), np.float32)), ms.Tensor(np.zeros((1, 3), bool)),
        RPNTrainSettings(batch_size_per_image=2, positive_fraction=0.5, **LOSS_PARTS))
    assert float(loss_loc) == 0.0
    np.testing.assert_allclose(float(loss_cls), np.log(2.0), rtol=1e-5)


def test_smooth_l1_hand_values():
    diff = ms.Tensor(np.array([-2.0, 0.2, 1.0], np.float32))
    np.testing.assert_allclose(smooth_l1(diff, 0.0).asnumpy(), [2.0, 0.2, 1.0])
    np.testing.assert_allclose(smooth_l1(diff, 0.5).asnumpy(), [1.75, 0.04, 0.75], rtol=1e-6)


def test_proposals_recover_a_confident_anchor():
    """A single very confident anchor with zero deltas comes out as the first proposal, clipped."""
    rpn = RPN(in_channels=4, canvas=(64, 64), strides=(16, 32), anchor_generator=AnchorGenerator((32, 64), (1.0,)),
              test=RPNSettings(pre_nms_topk=10, post_nms_topk=5, box_coder=LOSS_PARTS["box_coder"]))
    rpn.set_train(False)
    logits = [ms.Tensor(np.full((1, 16), -5.0, np.float32)), ms.Tensor(np.full((1, 4), -5.0, np.float32))]
    logits[0][0, 5] = 4.0
    deltas = [ms.Tensor(np.zeros((1, 16, 4), np.float32)), ms.Tensor(np.zeros((1, 4, 4), np.float32))]
    proposals, valid = rpn.find_top_proposals(logits, deltas, ms.Tensor(np.array([[40.0, 64.0]], np.float32)))
    anchor = rpn.level_anchors[0].asnumpy()[5]
    np.testing.assert_allclose(proposals.asnumpy()[0, 0], np.minimum(np.maximum(anchor, 0), [64, 40, 64, 40]))
    assert valid.shape == (1, 5) and valid.asnumpy()[0, 0]
    assert np.isfinite(proposals.asnumpy()).all()
