"""Mixed precision (train.amp_level O1) on the real models, PYNATIVE and GRAPH: a step with an
injected float16 overflow is skipped and lowers the loss scale; the next step trains with finite
losses, changes the weights and keeps float32 master weights."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from mindseg.config import load_config
from mindseg.engine.precision import FLOAT16_LAYERS, apply_mixed_precision, float16_layers
from mindseg.engine.train_step import LossScaleSettings, TrainStep, build_optimizer
from mindseg.models import build_model
from test_centermask import TINY as CENTERMASK_TINY
from test_centermask import tiny_batch
from test_centermask_point import TINY as POINT_TINY
from toy import net_weights

MASK_RCNN_TINY = ["model.num_classes=5", "data.canvas=[128,128]", "data.max_instances=4",
                  "model.rpn.pre_nms_topk_train=200", "model.rpn.post_nms_topk_train=64",
                  "model.roi_heads.batch_size_per_image=64"]
# CenterMask (not Lite) has no shapes config: its real config at the tiny batch's size
MODELS = {
    "mask_rcnn": ("config/shapes/mask_rcnn_shapes.yml", MASK_RCNN_TINY),
    "centermask_lite": ("config/shapes/centermask_lite_shapes.yml", CENTERMASK_TINY),
    "centermask": ("config/centermask/centermask_V_39_eSE_FPN_ms_3x.yml", CENTERMASK_TINY),
    "centermask_point": ("config/shapes/centermask_point_shapes.yml", POINT_TINY),
}
OVERFLOW_SCALE = 2.0 ** 40  # finite in float32, beyond float16's 65504 in every scaled gradient
GOOD_SCALE = 128.0  # float16 holds it at init (CenterMask V-39 overflows at 1024)


def mixed_net(model):
    path, overrides = MODELS[model]
    ms.set_seed(0)
    net = apply_mixed_precision(build_model(load_config(path, overrides)), "O1")
    net.set_train(True)
    return net


def test_only_the_listed_layers_turn_float16():
    net = mixed_net("mask_rcnn")
    wrapped = float16_layers(net)
    bare = [name for name, cell in net.cells_and_names() if isinstance(cell, FLOAT16_LAYERS)]
    assert wrapped and len(bare) == len(wrapped)  # every conv / dense sits in exactly one wrapper
    assert not any(isinstance(cell, (nn.GroupNorm, nn.BatchNorm2d)) for cell in wrapped)
    names = {p.name for p in net.get_parameters()}
    plain = build_model(load_config(*MODELS["mask_rcnn"]))
    assert names == {p.name for p in plain.get_parameters()}  # checkpoints stay interchangeable


# CenterMask-Lite and the point-representation CenterMask in GRAPH, the mode of their shapes
# configs (tests/test_resume_models.py trains both mixed in PYNATIVE); Mask R-CNN in PYNATIVE
# (tests/test_resume_models.py trains it mixed in GRAPH, and the skip logic compiled here is the
# TrainStep's, the same for every model); CenterMask V-39 in PYNATIVE only: its layers are Lite's,
# and its GRAPH compile is a minute of CI
@pytest.mark.parametrize("model,mode", [("mask_rcnn", "pynative"),
                                        ("centermask_lite", "graph"), ("centermask", "pynative"),
                                        ("centermask_point", "graph")], indirect=["mode"])
def test_overflow_is_skipped_then_a_mixed_step_trains(model, mode):
    net = mixed_net(model)
    batch = tiny_batch()
    optimizer = build_optimizer(net, np.full(4, 0.01, np.float32))
    step = TrainStep(net, optimizer, loss_scaling=LossScaleSettings(OVERFLOW_SCALE), jit=mode == ms.GRAPH_MODE)
    before = net_weights(net)

    total, losses, finite = step(*batch)
    assert not bool(finite) and np.isfinite(float(total))
    assert step.loss_scale == OVERFLOW_SCALE / 2 and step.step_index == 1
    after_skip = net_weights(net)
    trainable = [p.name for p in net.trainable_params()]
    for name in trainable:
        np.testing.assert_array_equal(after_skip[name], before[name], err_msg=name)

    step.load_scaler_state({"loss_scale": GOOD_SCALE, "loss_scale_counter": 0})
    total, losses, finite = step(*batch)
    assert bool(finite) and step.loss_scale == GOOD_SCALE and step.step_index == 2
    values = [float(x) for x in losses]
    assert np.isfinite(values).all() and float(total) == pytest.approx(sum(values), rel=1e-5)
    trained = net_weights(net)
    changed = [n for n in trainable if not np.array_equal(trained[n], before[n])]
    assert len(changed) > 0.8 * len(trainable), (len(changed), len(trainable))
    assert all(p.dtype == ms.float32 for p in net.trainable_params())
    assert all(m.dtype == ms.float32 for m in optimizer.moments)
