"""RoI heads: sampling hand case, box and mask losses against NumPy, exact zeros without fg, the mask
branch (fg slots, targets, loss, inference) and the one-hot class selection."""
import mindspore as ms
import numpy as np

from mindseg.models.layers.gather import select_class
from mindseg.models.losses import mask_bce_loss
from mindseg.models.box_ops import BoxCoder
from mindseg.models.roi_heads.box_head import BoxHead, BoxHeadSettings, box_head_losses
from mindseg.models.roi_heads.mask_head import MaskHead, fg_slots, mask_branch_inference, mask_branch_loss
from mindseg.models.roi_heads.sampling import SamplingSettings, label_and_sample_proposals

T = ms.Tensor


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_sampling_appends_gt_and_labels_classes():
    proposals = np.array([[[0, 0, 10, 10], [40, 40, 50, 50], [0, 0, 9, 10]]], np.float32)
    gt_boxes = np.array([[[0, 0, 10, 10], [0, 0, 0, 0]]], np.float32)
    rois, valid, is_fg, classes, gt_idx = label_and_sample_proposals(
        T(proposals), T(np.array([[True, True, False]])), T(gt_boxes), T(np.array([[3, 0]], np.int32)),
        T(np.array([[True, False]])), SamplingSettings(num_classes=4, batch_size_per_image=4, positive_fraction=0.5))
    rois, valid, is_fg, classes = rois.asnumpy()[0], valid.asnumpy()[0], is_fg.asnumpy()[0], classes.asnumpy()[0]
    # fg: proposal 0 and the appended gt (2 slots), bg: proposal 1; the invalid proposal 2 and the
    # padded gt are never drawn
    assert is_fg.tolist() == [True, True, False, False] and valid.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(rois[:2], [[0, 0, 10, 10]] * 2)
    np.testing.assert_array_equal(rois[2], [40, 40, 50, 50])
    assert classes[:3].tolist() == [3, 3, 4]
    assert gt_idx.asnumpy()[0, :2].tolist() == [0, 0]


def test_box_losses_match_numpy():
    rng = np.random.default_rng(0)
    num_classes, rois_per_image = 3, 4
    cls_logits = rng.normal(size=(4, 4)).astype(np.float32)
    box_deltas = rng.normal(size=(4, 12)).astype(np.float32)
    rois = np.array([[[0, 0, 10, 10], [5, 5, 25, 15], [0, 0, 4, 4], [0, 0, 0, 0]]], np.float32)
    gt = np.array([[[1, 0, 11, 12], [4, 5, 24, 20], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    valid = np.array([[True, True, True, False]])
    gt_classes = np.array([[2, 0, 3, 3]], np.int32)
    loss_cls, loss_reg = box_head_losses(T(cls_logits), T(box_deltas), T(rois), T(valid), T(gt_classes), T(gt),
                                         BoxHeadSettings(BoxCoder((10.0, 10.0, 5.0, 5.0))))
    log_p = _log_softmax(cls_logits)
    expected_cls = -(log_p[0, 2] + log_p[1, 0] + log_p[2, 3]) / 3
    expected_reg = 0.0
    for i, c in [(0, 2), (1, 0)]:
        r, g = rois[0, i], gt[0, i]
        rw, rh, gw, gh = r[2] - r[0], r[3] - r[1], g[2] - g[0], g[3] - g[1]
        target = [10 * ((g[0] + gw / 2) - (r[0] + rw / 2)) / rw, 10 * ((g[1] + gh / 2) - (r[1] + rh / 2)) / rh,
                  5 * np.log(gw / rw), 5 * np.log(gh / rh)]
        expected_reg += np.abs(box_deltas[i, 4 * c:4 * c + 4] - target).sum()
    np.testing.assert_allclose(float(loss_cls), expected_cls, rtol=1e-5)
    np.testing.assert_allclose(float(loss_reg), expected_reg / 3, rtol=1e-5)
    assert num_classes * 4 == box_deltas.shape[1] and rois.shape[1] == rois_per_image


def test_no_fg_gives_exact_zero_regression_and_mask_loss_and_finite_grads():
    cls_logits = T(np.zeros((2, 3), np.float32))
    box_deltas = T(np.full((2, 8), 1e8, np.float32))
    rois = T(np.array([[[0, 0, 0, 0], [3, 3, 3, 3]]], np.float32))  # degenerate
    gt = T(np.zeros((1, 2, 4), np.float32))

    def losses(deltas, mask_logits):
        _, loss_reg = box_head_losses(cls_logits, deltas, rois, T(np.array([[True, True]])),
                                      T(np.array([[2, 2]], np.int32)), gt, BoxHeadSettings())
        loss_mask = mask_bce_loss(select_class(mask_logits, T(np.array([0, 1], np.int32))),
                                  T(np.array([False, False])), T(np.zeros((2, 4, 4), np.float32)))
        return loss_reg, loss_mask

    mask_logits = T(np.full((2, 2, 4, 4), 50.0, np.float32))
    loss_reg, loss_mask = losses(box_deltas, mask_logits)
    grads = ms.grad(lambda d, m: losses(d, m)[0] + losses(d, m)[1], (0, 1))(box_deltas, mask_logits)
    assert float(loss_reg) == 0.0 and float(loss_mask) == 0.0
    assert all(np.isfinite(g.asnumpy()).all() and not g.asnumpy().any() for g in grads)


def test_mask_loss_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 2, 4, 4)).astype(np.float32)
    targets = (rng.random((3, 4, 4)) > 0.5).astype(np.float32)
    classes = np.array([1, 0, 1], np.int32)
    is_fg = np.array([True, True, False])
    chosen = logits[np.arange(3), classes]
    loss = mask_bce_loss(T(np.ascontiguousarray(chosen)), T(is_fg), T(targets))
    bce = np.maximum(chosen, 0) - chosen * targets + np.log1p(np.exp(-np.abs(chosen)))
    np.testing.assert_allclose(float(loss), bce[:2].mean(), rtol=1e-5)


def test_select_class_rows():
    """One helper for class scores (N, K), class deltas (N, K, 4) and class masks (N, K, r, r)."""
    classes = T(np.array([2, 0], np.int32))
    scores = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(select_class(T(scores), classes).asnumpy(), [scores[0, 2], scores[1, 0]])
    deltas = np.arange(2 * 12, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(select_class(T(deltas), classes).asnumpy(), [deltas[0, 2], deltas[1, 0]])
    masks = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(select_class(T(masks), T(np.array([1, 2], np.int32))).asnumpy(),
                                  [masks[0, 1], masks[1, 2]])
    grad = ms.grad(lambda m: select_class(m, classes).sum())(T(masks)).asnumpy()
    assert grad[0, 2].all() and grad[1, 0].all() and grad.sum() == 2 * 4


def test_mask_branch_loss_on_fg_slots_and_inference():
    """Two images, R = 3 sampled slots, F = 2 fg slots; an fg RoI on its gt box reads the whole crop
    as target; slots past F and non-fg slots never enter the loss."""
    rng = np.random.default_rng(3)
    gt_boxes = np.array([[[0, 0, 8, 8], [8, 8, 16, 16]], [[4, 0, 12, 8], [0, 0, 0, 0]]], np.float32)
    gt_masks = np.zeros((2, 2, 4, 4), np.uint8)
    gt_masks[0, 1] = 1
    gt_masks[1, 0, :, :2] = 1
    rois = np.array([[[8, 8, 16, 16], [0, 0, 8, 8], [0, 0, 1, 1]], [[4, 0, 12, 8], [0, 0, 2, 2], [1, 1, 3, 3]]],
                    np.float32)
    roi_gt_idx = np.array([[1, 0, 0], [0, 0, 0]], np.int32)
    roi_gt_classes = np.array([[2, 1, 3], [0, 3, 3]], np.int32)  # 3 = background
    roi_is_fg = np.array([[True, True, False], [True, False, False]])
    fg_rois, fg_gt_idx, fg_classes, fg = fg_slots(2, *(T(x) for x in (rois, roi_gt_idx, roi_gt_classes, roi_is_fg)))
    assert fg_rois.shape == (2, 2, 4) and fg_classes.shape == (4,)
    logits = rng.normal(size=(4, 3, 4, 4)).astype(np.float32)
    loss, class_logits, targets = mask_branch_loss(T(logits), fg_rois, fg_gt_idx, fg_classes, fg, T(gt_masks),
                                                   T(gt_boxes))
    expected_targets = np.stack([np.ones((4, 4)), np.zeros((4, 4)), (np.arange(4) < 2) * np.ones((4, 1)),
                                 np.zeros((4, 4))])
    np.testing.assert_array_equal(targets.asnumpy()[:3], expected_targets[:3])
    chosen = logits[np.arange(4), np.minimum([2, 1, 0, 3], 2)]
    np.testing.assert_array_equal(class_logits.asnumpy(), chosen)
    bce = np.maximum(chosen, 0) - chosen * expected_targets + np.log1p(np.exp(-np.abs(chosen)))
    np.testing.assert_allclose(float(loss), bce[:3].mean(), rtol=1e-5)

    classes = np.array([[1, 0], [2, 2]], np.int32)
    probs = mask_branch_inference(T(logits), T(classes)).asnumpy()
    assert probs.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(probs.reshape(4, 4, 4), 1 / (1 + np.exp(-logits[np.arange(4), classes.reshape(-1)])),
                               rtol=1e-6)


def test_spatial_attention_is_a_switch_of_the_one_mask_head():
    plain = MaskHead(in_channels=4, num_classes=3, conv_dims=8, num_convs=2)
    sag = MaskHead(in_channels=4, num_classes=3, conv_dims=8, num_convs=2, spatial_attention=True)
    plain_names = [p.name for p in plain.trainable_params()]
    sag_names = [p.name for p in sag.trainable_params()]
    assert sorted(set(sag_names) - set(plain_names)) == ["spatial_attention.conv.weight"]
    assert set(plain_names) < set(sag_names)


def test_head_output_shapes_and_resolution():
    box_head = BoxHead(in_channels=4, resolution=7, fc_dim=16, num_classes=3)
    cls_logits, deltas = box_head(T(np.zeros((5, 4, 7, 7), np.float32)))
    assert cls_logits.shape == (5, 4) and deltas.shape == (5, 12)
    np.testing.assert_array_equal(cls_logits.asnumpy(), np.zeros((5, 4)))  # zero input, zero bias
    mask_head = MaskHead(in_channels=4, num_classes=3, conv_dims=8, num_convs=2)
    assert mask_head(T(np.zeros((5, 4, 14, 14), np.float32))).shape == (5, 3, 28, 28)


def _conv3x3_same(x, weight, bias):
    """NumPy 3x3 convolution, zero padding 1: x (N, C, H, W), weight (O, C, 3, 3)."""
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, weight.shape[0], h, w), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nchw,oc->nohw", padded[:, :, dy:dy + h, dx:dx + w], weight[:, :, dy, dx])
    return out + bias.reshape(1, -1, 1, 1)


def test_conv_fc_box_head_against_numpy():
    """num_conv 3x3 convs + ReLU before the FCs (detectron2's conv-FC head); 0 keeps the 2-FC
    head's parameters, so converted torchvision / detectron2 weights still load."""
    head = BoxHead(in_channels=4, resolution=7, fc_dim=16, num_classes=3, num_conv=2, conv_dim=6)
    names = [p.name for p in head.trainable_params()]
    assert names[:4] == ["convs.0.weight", "convs.0.bias", "convs.2.weight", "convs.2.bias"]
    assert head.fc1.weight.shape == (16, 6 * 7 * 7)
    plain = BoxHead(in_channels=4, resolution=7, fc_dim=16, num_classes=3)
    assert [p.name for p in plain.trainable_params()] == names[4:]
    rng = np.random.default_rng(0)
    for p in head.trainable_params():  # nonzero biases too, so that a missing bias would show
        p.set_data(T(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    x = rng.normal(0, 1, (3, 4, 7, 7)).astype(np.float32)
    cls_logits, deltas = head(T(x))
    w = {p.name: p.asnumpy().astype(np.float64) for p in head.trainable_params()}
    hidden = np.maximum(_conv3x3_same(x, w["convs.0.weight"], w["convs.0.bias"]), 0)
    hidden = np.maximum(_conv3x3_same(hidden, w["convs.2.weight"], w["convs.2.bias"]), 0)
    hidden = np.maximum(hidden.reshape(3, -1) @ w["fc1.weight"].T + w["fc1.bias"], 0)
    hidden = np.maximum(hidden @ w["fc2.weight"].T + w["fc2.bias"], 0)
    np.testing.assert_allclose(cls_logits.asnumpy(), hidden @ w["cls_score.weight"].T + w["cls_score.bias"],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(deltas.asnumpy(), hidden @ w["bbox_pred.weight"].T + w["bbox_pred.bias"],
                               rtol=1e-4, atol=1e-4)


def test_box_inference_drops_boxes_under_the_minimum_size_only_when_asked():
    """One RoI, two classes, zero deltas: class 0's box is the proposal (10 x 0.005 px on the
    image's top edge), class 1's the same. With min_box_size 0 (detectron2) both
    are detections; with 0.01 (torchvision's 1e-2) neither is; a 10 x 0.02 box passes 0.01."""
    from mindseg.models.roi_heads.box_head import box_head_inference
    cls_logits = T(np.array([[2.0, 1.0, -1.0]], np.float32))        # K = 2, background last
    deltas = T(np.zeros((1, 8), np.float32))
    image_size = T(np.array([[50.0, 50.0]], np.float32))
    valid = T(np.array([[True]]))

    def kept(height, min_box_size):
        proposals = T(np.array([[[5.0, 0.0, 15.0, height]]], np.float32))
        settings = BoxHeadSettings(score_thresh=0.05, detections_per_image=2, min_box_size=min_box_size)
        _, _, classes, keep = box_head_inference(cls_logits, deltas, proposals, valid, image_size, settings)
        return sorted(classes.asnumpy()[0][keep.asnumpy()[0]].tolist())

    assert kept(0.005, 0.0) == [0, 1]
    assert kept(0.005, 0.01) == []
    assert kept(0.02, 0.01) == [0, 1]
