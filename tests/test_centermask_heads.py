"""SAG-Mask and MaskIoU heads: attention by hand, layer layout, losses and the MaskIoU target
against NumPy references and hand cases."""
import numpy as np

from mindspore import Tensor

from mindseg.models.roi_heads.maskiou_head import (MaskIoUHead, gt_mask_areas, mask_scores, maskiou_loss,
                                                   maskiou_targets)
from mindseg.models.layers.gather import select_class
from mindseg.models.losses import mask_bce_loss
from mindseg.models.roi_heads.mask_head import MaskHead, SpatialAttention


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bce_np(logits, targets):
    return np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))


def maskiou_targets_np(pred_logits, targets, rois, gt_areas):
    out = []
    for logit, target, roi, gt_area in zip(pred_logits, targets, rois, gt_areas):
        pred = logit > 0
        target = target >= 0.5
        roi_area = (roi[2] - roi[0]) * (roi[3] - roi[1])
        inside = target.mean() * roi_area
        ratio = max(min(inside / gt_area, 1.0), 1e-10) if gt_area > 0 else 1e-10
        full = target.sum() / ratio
        overlap = (pred & target).sum()
        out.append(overlap / max(pred.sum() + full - overlap, 1.0))
    return np.array(out, np.float32)


def _conv_params(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


# ----------------------------------------------------------------------------------- SAG-Mask

def test_spatial_attention_by_hand():
    """Only the centre taps set: scale = sigmoid(mean_c(x) - 2 max_c(x)) per position."""
    attention = SpatialAttention()
    weight = np.zeros((1, 2, 3, 3), np.float32)
    weight[0, 0, 1, 1], weight[0, 1, 1, 1] = 1.0, -2.0
    attention.conv.weight.set_data(Tensor(weight))
    x = np.random.RandomState(0).randn(2, 5, 4, 3).astype(np.float32)
    expected = x * sigmoid(x.mean(1, keepdims=True) - 2 * x.max(1, keepdims=True))
    np.testing.assert_allclose(attention(Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-6)



def test_spatial_attention_gradient_is_the_argmax_gradient_after_a_relu():
    """The channel max's gradient goes to the argmax channel (centermask2's torch.max); mindseg's
    ReduceMax splits it among tied channels, which after the head's ReLU are zeros the ReLU stops:
    the gradient through ReLU + attention equals the NumPy argmax reference, ties included."""
    import mindspore as ms
    attention = SpatialAttention()
    weight = np.zeros((1, 2, 3, 3), np.float32)
    weight[0, 0, 1, 1], weight[0, 1, 1, 1] = 1.0, -2.0  # s = sigmoid(mean_c - 2 max_c) per position
    attention.conv.weight.set_data(Tensor(weight))
    rng = np.random.RandomState(3)
    z = rng.randn(2, 4, 3, 3).astype(np.float32)
    z[0, :, 0, 0] = -np.abs(z[0, :, 0, 0])  # every channel below 0: a four-way tie at 0 after the ReLU
    z[1, :, 2, 1] = -1.0
    g = rng.randn(2, 4, 3, 3).astype(np.float32)

    grad = ms.grad(lambda t: (attention(ms.ops.relu(t)) * Tensor(g)).sum())(Tensor(z)).asnumpy()

    x = np.maximum(z, 0)
    channels = x.shape[1]
    s = sigmoid(x.mean(1, keepdims=True) - 2 * x.max(1, keepdims=True))
    through_s = (g * x).sum(1, keepdims=True) * s * (1 - s)
    argmax = np.eye(channels, dtype=np.float32)[x.argmax(1)].transpose(0, 3, 1, 2)
    expected = (g * s + through_s * (1.0 / channels - 2.0 * argmax)) * (z > 0)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    assert np.all(grad[0, :, 0, 0] == 0) and np.abs(grad).max() > 0.1

def test_sag_mask_head_layout_and_attention_placement():
    head = MaskHead(in_channels=16, num_classes=3, conv_dims=8, num_convs=2, spatial_attention=True)
    expected = (_conv_params(16, 8, 3) + _conv_params(8, 8, 3) + _conv_params(2, 1, 3, bias=False)
                + _conv_params(8, 8, 2) + _conv_params(8, 3, 1))
    assert sum(p.size for p in head.trainable_params()) == expected
    # A zero attention conv gives sigmoid(0) = 0.5 everywhere: the head equals the plain stack
    # with the last conv's output halved before the deconv.
    head.spatial_attention.conv.weight.set_data(Tensor(np.zeros((1, 2, 3, 3), np.float32)))
    x = Tensor(np.random.RandomState(1).randn(3, 16, 14, 14).astype(np.float32))
    logits = head(x)
    assert logits.shape == (3, 3, 28, 28)
    manual = head.predictor(head.deconv(head.convs(x) * 0.5).clip(0, None))
    np.testing.assert_allclose(logits.asnumpy(), manual.asnumpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(logits.asnumpy()).max() > 0


def test_sag_mask_loss_matches_numpy_and_is_zero_without_positives():
    rng = np.random.RandomState(2)
    logits = rng.randn(5, 3, 28, 28).astype(np.float32)
    classes = np.array([2, 0, 1, 1, 0], np.int32)
    positive = np.array([True, False, True, True, False])
    targets = (rng.rand(5, 28, 28) > 0.5).astype(np.float32)
    class_logits = select_class(Tensor(logits), Tensor(classes))
    got = mask_bce_loss(class_logits, Tensor(positive), Tensor(targets)).asnumpy()
    picked = logits[np.arange(5), classes]
    expected = bce_np(picked[positive], targets[positive]).mean()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    none = mask_bce_loss(class_logits, Tensor(np.zeros(5, bool)), Tensor(targets))
    assert none.asnumpy() == 0.0


# ------------------------------------------------------------------------------------ MaskIoU

def test_maskiou_head_layout_and_mask_pooling():
    head = MaskIoUHead(in_channels=8, num_classes=3, conv_dims=4, num_convs=2, fc_dim=16)
    expected = (_conv_params(9, 4, 3) + _conv_params(4, 4, 3) + (4 * 49 * 16 + 16) + (16 * 16 + 16)
                + (16 * 3 + 3))
    assert sum(p.size for p in head.trainable_params()) == expected
    assert head.convs[2].stride == (2, 2) and head.convs[0].stride == (1, 1)
    rng = np.random.RandomState(3)
    features = Tensor(rng.randn(2, 8, 14, 14).astype(np.float32))
    mask = rng.rand(2, 28, 28).astype(np.float32)
    # Changing a non-maximal pixel of a 2x2 cell leaves the 2x2 max-pool, hence the output, unchanged.
    same_max = mask.copy()
    cell = mask[:, 4:6, 6:8]
    low = np.unravel_index(np.argmin(cell[0]), (2, 2))
    same_max[0, 4 + low[0], 6 + low[1]] = cell[0].min() * 0.5
    out = head(features, Tensor(mask)).asnumpy()
    assert out.shape == (2, 3)
    np.testing.assert_allclose(head(features, Tensor(same_max)).asnumpy(), out, rtol=1e-6)
    raised = mask.copy()
    raised[0, 4:6, 6:8] = 5.0
    assert np.abs(head(features, Tensor(raised)).asnumpy()[0] - out[0]).max() > 1e-6


def test_gt_mask_areas_by_hand():
    crops = np.zeros((1, 2, 4, 4), np.uint8)
    crops[0, 0, :2, :3] = 1                      # 6 of 16 cells
    boxes = np.array([[[0, 0, 10, 8], [5, 5, 5, 9]]], np.float32)
    np.testing.assert_allclose(gt_mask_areas(Tensor(crops), Tensor(boxes)).asnumpy(), [[30.0, 0.0]])


def test_maskiou_targets_by_hand():
    """Case 0: RoI (0, 0, 28, 28), one pixel per cell; the gt (a full box 14..42 x 0..28, area 784)
    is half inside, target = columns 14..27 (392 cells), ratio 0.5, full gt = 784 cells. Prediction
    = columns 7..20 (392), overlap columns 14..20 (196): IoU 196 / (392 + 784 - 196) = 0.2 (1/3
    without the correction). Case 1: empty target -> 0. Case 2: RoI (0, 0, 56, 56), 2 px per cell;
    gt 28x28 px fully inside (14x14 cells, ratio 1), predicted exactly -> 1."""
    logits = np.full((3, 28, 28), -1.0, np.float32)
    targets = np.zeros((3, 28, 28), np.float32)
    targets[0, :, 14:] = 1
    logits[0, :, 7:21] = 1
    logits[1, :5, :5] = 1
    targets[2, :14, :14] = 1
    logits[2, :14, :14] = 1
    rois = np.array([[0, 0, 28, 28], [0, 0, 28, 28], [0, 0, 56, 56]], np.float32)
    gt_areas = np.array([784.0, 100.0, 784.0], np.float32)
    got = maskiou_targets(Tensor(logits), Tensor(targets), Tensor(rois), Tensor(gt_areas)).asnumpy()
    np.testing.assert_allclose(got, [0.2, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(maskiou_targets_np(logits, targets, rois, gt_areas), [0.2, 0.0, 1.0], rtol=1e-6)


def test_maskiou_targets_match_numpy_on_random_cases():
    rng = np.random.RandomState(4)
    logits = rng.randn(20, 28, 28).astype(np.float32)
    targets = rng.rand(20, 28, 28).astype(np.float32)
    xy = rng.uniform(0, 100, size=(20, 2))
    rois = np.concatenate([xy, xy + rng.uniform(5, 80, size=(20, 2))], axis=1).astype(np.float32)
    roi_area = (rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1])
    gt_areas = (roi_area * rng.uniform(0.2, 2.0, size=20)).astype(np.float32)
    got = maskiou_targets(Tensor(logits), Tensor(targets), Tensor(rois), Tensor(gt_areas)).asnumpy()
    np.testing.assert_allclose(got, maskiou_targets_np(logits, targets, rois, gt_areas), rtol=1e-5, atol=1e-6)


def test_maskiou_loss_by_hand_and_empty():
    pred = np.array([[0.1, 0.9], [0.3, 0.2], [0.5, 0.4], [0.7, 0.6]], np.float32)
    classes = np.array([1, 0, 1, 0], np.int32)
    target = np.array([0.5, 0.0, 0.8, 0.4], np.float32)
    positive = np.array([True, True, False, True])
    # Selected: rows 0 (0.9 vs 0.5) and 3 (0.7 vs 0.4); row 1 has target 0, row 2 is negative.
    expected = (0.5 * 0.4 ** 2 + 0.5 * 0.3 ** 2) / 2
    got = maskiou_loss(Tensor(pred), Tensor(classes), Tensor(target), Tensor(positive)).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    weighted = maskiou_loss(Tensor(pred), Tensor(classes), Tensor(target), Tensor(positive), loss_weight=2.0)
    np.testing.assert_allclose(weighted.asnumpy(), 2 * expected, rtol=1e-6)
    empty = maskiou_loss(Tensor(pred), Tensor(classes), Tensor(np.zeros(4, np.float32)), Tensor(positive))
    assert empty.asnumpy() == 0.0


def test_mask_scores_by_hand():
    pred = np.array([[[0.2, 0.9], [0.6, 0.1]]], np.float32)
    got = mask_scores(Tensor(pred), Tensor(np.array([[1, 0]], np.int32)), Tensor(np.array([[0.5, 0.8]], np.float32)))
    np.testing.assert_allclose(got.asnumpy(), [[0.45, 0.48]], rtol=1e-6)
