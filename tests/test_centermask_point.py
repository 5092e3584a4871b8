"""CenterMask with point representation end to end on a tiny config: inference decoding by hand,
losses at init and without gt, GRAPH vs PYNATIVE, overfitting one image, config errors."""
import math

import mindspore as ms
import mindspore.nn as nn
import numpy as np
import pytest

from mindseg.config import load_config
from mindseg.engine.train_step import TrainStep
from mindseg.models import build_model
from mindseg.models.centermask_point.inference import point_inference
from test_centermask import RECTS, tiny_batch

# Adam steps for the one-image overfit: 60 left the losses at 0.23x their start on one 2-core
# Xeon (0.2x is asserted), so the margin covers how much the CPU's float sums vary between machines
STEPS_TO_OVERFIT = 100
TINY = ["model.num_classes=5", "data.canvas=[128,128]", "data.max_instances=4",
        "model.centermask_point.head_channels=32", "model.centermask_point.shape_size=8",
        "model.centermask_point.max_detections=10"]


def tiny_net(overrides=()):
    ms.set_seed(0)
    return build_model(load_config("config/shapes/centermask_point_shapes.yml", TINY + list(overrides)))


def losses_of(net, batch):
    net.set_train(True)
    return dict(zip(net.loss_names, (float(x) for x in net(*batch))))


def test_inference_decodes_peaks_boxes_and_masks_by_hand(mode):
    """8x8 map (stride 4), K 3, S 2, R 4: a peak of class 2 at (x 5, y 3) with offset (0.25, 0.5)
    and size (4, 2) is the box (13, 10, 29, 18); its brighter-than-others neighbour is no peak; a
    class-0 peak at (0, 0) is clipped to the image; a class-1 peak under 0.05 is not valid."""
    heat = np.full((1, 3, 8, 8), -10.0, np.float32)
    heat[0, 2, 3, 5], heat[0, 2, 3, 6], heat[0, 0, 0, 0], heat[0, 1, 7, 7] = 2.0, 1.0, -2.0, -3.5
    offset, size = np.zeros((1, 2, 8, 8), np.float32), np.zeros((1, 2, 8, 8), np.float32)
    offset[0, :, 3, 5], size[0, :, 3, 5], size[0, :, 0, 0] = (0.25, 0.5), (4, 2), (2, 2)
    shape = np.zeros((1, 4, 8, 8), np.float32)
    shape[0, :, 3, 5] = (5, 5, -5, -5)  # top row of the 2x2 local shape on
    shape[0, :, 0, 0] = 5
    saliency = np.full((1, 3, 8, 8), 5.0, np.float32)
    saliency[0, 0] = -5.0  # class 0 has no saliency: its mask stays empty
    heads = tuple(ms.Tensor(x) for x in (heat, offset, size, shape, saliency))
    run = ms.jit(point_inference, static_argnames=("stride", "max_detections", "score_thresh", "resolution")) \
        if mode == ms.GRAPH_MODE else point_inference
    boxes, scores, classes, valid, masks = (o.asnumpy()[0] for o in run(
        heads, ms.Tensor(np.array([[32.0, 32.0]], np.float32)), stride=4, max_detections=4, score_thresh=0.05,
        resolution=4))
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    np.testing.assert_allclose(scores[:3], [sigmoid(2.0), sigmoid(-2.0), sigmoid(-3.5)], rtol=1e-5)
    assert classes[:3].tolist() == [2, 0, 1] and valid.tolist() == [True, True, False, False]
    np.testing.assert_allclose(boxes[0], [13, 10, 29, 18], atol=1e-5)
    np.testing.assert_allclose(boxes[1], [0, 0, 4, 4], atol=1e-5)
    # rows of the 2x2 shape resized to 4 rows (half-pixel): 5, 2.5, -2.5, -5, times sigmoid(5)
    rows = np.array([sigmoid(v) * sigmoid(5) for v in (5, 2.5, -2.5, -5)])
    np.testing.assert_allclose(masks[0], np.repeat(rows[:, None], 4, 1), rtol=1e-5)
    assert masks[1].max() < 0.4  # class 0's saliency is off


def test_losses_at_init_by_hand():
    """Offset and size heads start near 0 and the mask at sigmoid(0)^2 = 0.25: for one box
    (10, 10, 40, 24) -> map (2.5, 2.5, 10, 6), centre (6.25, 4.25), size (7.5, 3.5), the offset
    loss is 0.25, the size loss 0.1 x 5.5 and the mask BCE against an all-ones box -log(0.25)."""
    net = tiny_net()
    batch = tiny_batch()
    boxes = np.zeros((2, 4, 4), np.float32)
    boxes[0, 0] = (10, 10, 40, 24)
    valid = np.zeros((2, 4), bool)
    valid[0, 0] = True
    masks = np.ones((2, 4, 56, 56), np.uint8)
    batch[2], batch[4], batch[6] = ms.Tensor(boxes), ms.Tensor(valid), ms.Tensor(masks)
    losses = losses_of(net, batch)
    assert abs(losses["loss_offset"] - 0.25) < 1e-2
    assert abs(losses["loss_size"] - 0.55) < 1e-2
    assert abs(losses["loss_mask"] - math.log(4)) < 1e-2
    # bias -2.19: about 0.1 everywhere; the focal loss is dominated by the 5 x 32 x 32 negatives
    assert 5 * 32 * 32 * 0.01 * -math.log(0.9) * 0.5 < losses["loss_heatmap"] < 5 * 32 * 32 * 0.02


def test_no_gt_gives_exact_zero_offset_size_and_mask_losses_and_finite_gradients():
    net = tiny_net()
    batch = tiny_batch(with_gt=(False, False))
    losses = losses_of(net, batch)
    assert losses["loss_offset"] == 0.0 and losses["loss_size"] == 0.0 and losses["loss_mask"] == 0.0
    assert losses["loss_heatmap"] > 0
    params = net.trainable_params()
    grads = ms.grad(lambda *x: sum(net(*x)), None, params)(*batch)
    assert all(np.isfinite(g.asnumpy()).all() for g in grads)
    shape_head = [g for p, g in zip(params, grads) if p.name.startswith("heads.shape")]
    assert shape_head and all(np.abs(g.asnumpy()).max() == 0 for g in shape_head)


def test_train_losses_and_inference_agree_across_modes():
    net = tiny_net()
    batch = tiny_batch()
    outputs = {}
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        try:
            losses = losses_of(net, batch)
            net.set_train(False)
            outputs[mode] = (losses, [o.asnumpy() for o in net(*batch[:2])])
        finally:
            ms.set_context(mode=ms.PYNATIVE_MODE)
    (loss_a, out_a), (loss_b, out_b) = outputs[ms.PYNATIVE_MODE], outputs[ms.GRAPH_MODE]
    for name in loss_a:
        assert abs(loss_a[name] - loss_b[name]) <= 1e-4 * max(1.0, abs(loss_a[name])), (name, loss_a, loss_b)
    assert [o.shape for o in out_a] == [(2, 10, 4), (2, 10), (2, 10), (2, 10), (2, 10, 28, 28)]
    for a, b in zip(out_a, out_b):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_overfits_one_image():
    """Adam on one image (a rectangle and an ellipse): the losses fall by a clear factor and the
    top detections are the two objects with their classes."""
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = tiny_net()
        single = [x[:1] for x in tiny_batch()]
        net.set_train(True)
        step = TrainStep(net, nn.Adam(net.trainable_params(), learning_rate=2e-3), jit=True)
        first = [float(x) for x in step(*single)[1]]
        for _ in range(STEPS_TO_OVERFIT):
            _, losses, _ = step(*single)
        last = [float(x) for x in losses]
        net.set_train(False)
        boxes, scores, classes, valid, _ = (o.asnumpy()[0] for o in net(*single[:2]))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    named_first, named_last = dict(zip(net.loss_names, first)), dict(zip(net.loss_names, last))
    assert sum(last) < 0.2 * sum(first), (named_first, named_last)
    assert named_last["loss_mask"] < 0.5 * named_first["loss_mask"], (named_first, named_last)
    expected = {label for *_, label, _ in RECTS[0]}
    assert set(classes[:2].tolist()) == expected, (classes, scores, boxes)


def test_build_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="model.backbone.name"):
        tiny_net(["model.backbone.name=resnet50"])
    with pytest.raises(ValueError, match="model.backbone.norm"):
        tiny_net(["model.backbone.norm=batch"])
