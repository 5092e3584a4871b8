"""LR schedule, optimizer groups, train step (SGD maths, overflow skip, mixed precision),
runtime detection and the trainer's outputs, on the toy network of tests/toy.py."""
import dataclasses
import os

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn, ops

from mindseg.engine.lr_schedule import LRSettings, build_lr_schedule, schedule_length
from mindseg.engine.precision import apply_mixed_precision
from mindseg.engine.train_step import LossScaleSettings, TrainStep, build_optimizer, param_groups
from mindseg.runtime import detect_launcher, init_runtime
from toy import ToyNet, ToySource, toy_config, toy_dataset


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def test_lr_schedule_hand_computed():
    # peak = 0.02 * 4 / 16 = 0.005; warmup over 4 steps from 0.001x; x0.1 at 6 and at 8
    settings = LRSettings(base_lr=0.02, reference_batch=16, warmup_iters=4, warmup_factor=0.001,
                          steps=(6, 8), gamma=0.1)
    lr = build_lr_schedule(settings, total_batch=4, max_steps=10)
    expected = [0.005 * 0.001, 0.005 * 0.25075, 0.005 * 0.5005, 0.005 * 0.75025, 0.005, 0.005,
                0.0005, 0.0005, 0.00005, 0.00005]
    assert lr.dtype == np.float32 and lr.shape == (10,)
    np.testing.assert_allclose(lr, expected, rtol=1e-6)


def test_lr_decay_inside_warmup_multiplies():
    settings = LRSettings(base_lr=0.01, reference_batch=16, warmup_iters=4, warmup_factor=0.0,
                          steps=(2,), gamma=0.5)
    lr = build_lr_schedule(settings, total_batch=16, max_steps=5)
    np.testing.assert_allclose(lr, [0.0, 0.0025, 0.5 * 0.005, 0.5 * 0.0075, 0.005], rtol=1e-6)


def test_cosine_lr_schedule_hand_computed():
    # peak 0.01; warmup over 2 steps from 0.5x; cosine (1 + cos(pi i / 4)) / 2 = 1, .8536, .5, .1464
    settings = LRSettings(base_lr=0.01, reference_batch=16, warmup_iters=2, warmup_factor=0.5,
                          steps=(1,), gamma=0.1, schedule="cosine")
    lr = build_lr_schedule(settings, total_batch=16, max_steps=4)
    np.testing.assert_allclose(lr, [0.005, 0.01 * 0.75 * 0.853553, 0.005, 0.01 * 0.146447],
                               rtol=1e-5)


def test_lr_settings_from_config():
    cfg = toy_config(["train.lr_schedule=cosine", "train.gamma=0.5", "train.warmup_factor=0.25"])
    assert LRSettings.from_config(cfg.train) == LRSettings(
        base_lr=0.01, reference_batch=2, warmup_iters=2, warmup_factor=0.25, steps=(6,), gamma=0.5,
        schedule="cosine")


def test_lr_schedule_rejects_bad_input():
    constant = LRSettings(base_lr=0.01, reference_batch=16)
    with pytest.raises(ValueError, match="lr_schedule"):
        build_lr_schedule(dataclasses.replace(constant, schedule="poly"), 2, 10)
    with pytest.raises(ValueError, match="increasing"):
        build_lr_schedule(dataclasses.replace(constant, steps=(8, 4)), 2, 10)
    with pytest.raises(ValueError, match="max_steps"):
        build_lr_schedule(constant, 2, 0)


def test_schedule_length_prefers_max_steps():
    assert schedule_length(epochs=12, max_steps=100, steps_per_epoch=7) == 100
    assert schedule_length(epochs=12, max_steps=0, steps_per_epoch=7) == 84
    with pytest.raises(ValueError):
        schedule_length(epochs=0, max_steps=0, steps_per_epoch=7)


def test_param_groups_put_norms_and_biases_apart():
    groups = param_groups(ToyNet(), weight_decay=1e-4, weight_decay_norm=0.0, weight_decay_bias=2e-4)
    by_decay = {g["weight_decay"]: sorted(p.name for p in g["params"]) for g in groups}
    assert by_decay[1e-4] == ["box_fc.weight", "cls_fc.weight", "conv.weight", "conv2.weight"]
    assert by_decay[0.0] == ["norm.beta", "norm.gamma"]
    assert by_decay[2e-4] == ["box_fc.bias", "cls_fc.bias", "conv2.bias"]


class LinearNet(nn.Cell):
    """y = W x + b with two named losses whose gradients are easy to write down."""
    loss_names = ("loss_fit", "loss_small")

    def __init__(self, weight, bias, loss_gain=1.0):
        super().__init__()
        self.fc = nn.Dense(3, 2, weight_init=ms.Tensor(weight), bias_init=ms.Tensor(bias))
        self.loss_gain = loss_gain

    def construct(self, x, y):
        pred = self.fc(x)
        return ops.mean((pred - y) ** 2) * self.loss_gain, 0.5 * ops.mean(pred) * self.loss_gain


def _linear_case():
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((2, 3)).astype(np.float32)
    bias = rng.standard_normal(2).astype(np.float32)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y = rng.standard_normal((4, 2)).astype(np.float32)
    return weight, bias, x, y


def _numpy_grads(weight, bias, x, y):
    pred = x @ weight.T + bias
    dpred = 2 * (pred - y) / pred.size + 0.5 / pred.size
    return dpred.T @ x, dpred.sum(0)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("loss_scale", [None, 1024.0])
def test_train_step_is_momentum_sgd_with_weight_decay(mode, loss_scale):
    loss_scaling = LossScaleSettings(loss_scale) if loss_scale else None
    weight, bias, x, y = _linear_case()
    net = LinearNet(weight, bias)
    lr = np.array([0.1, 0.05], np.float32)
    opt = build_optimizer(net, lr, momentum=0.9, weight_decay=0.01, weight_decay_bias=0.0)
    step = TrainStep(net, opt, loss_scaling=loss_scaling, jit=mode == "graph")
    w, b = weight.astype(np.float64), bias.astype(np.float64)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for i in range(2):
        gw, gb = _numpy_grads(w, b, x, y)
        vw = 0.9 * vw + gw + 0.01 * w
        vb = 0.9 * vb + gb
        w, b = w - lr[i] * vw, b - lr[i] * vb
        total, losses, finite = step(ms.Tensor(x), ms.Tensor(y))
        assert bool(finite)
        assert float(total) == pytest.approx(float(losses[0]) + float(losses[1]), rel=1e-6)
    np.testing.assert_allclose(net.fc.weight.asnumpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.fc.bias.asnumpy(), b, rtol=1e-5, atol=1e-6)
    assert step.step_index == 2


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_train_step_is_adam_with_weight_decay(mode):
    weight, bias, x, y = _linear_case()
    net = LinearNet(weight, bias)
    lr = np.array([0.1, 0.05, 0.02], np.float32)
    opt = build_optimizer(net, lr, weight_decay=0.01, weight_decay_bias=0.0, name="adam")
    step = TrainStep(net, opt, jit=mode == "graph")
    w, b = weight.astype(np.float64), bias.astype(np.float64)
    moments = {name: [0.0, 0.0] for name in ("w", "b")}
    for i in range(3):
        gw, gb = _numpy_grads(w, b, x, y)
        new = {}
        for name, value, grad in (("w", w, gw + 0.01 * w), ("b", b, gb)):
            m, v = moments[name]
            m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad ** 2
            moments[name] = [m, v]
            m_hat, v_hat = m / (1 - 0.9 ** (i + 1)), v / (1 - 0.999 ** (i + 1))
            new[name] = value - lr[i] * m_hat / (np.sqrt(v_hat) + 1e-8)
        if i == 0:  # by hand: Adam's first step moves every weight by lr against its gradient's sign
            np.testing.assert_allclose(new["w"], w - lr[0] * np.sign(gw + 0.01 * w), atol=1e-6)
        w, b = new["w"], new["b"]
        assert bool(step(ms.Tensor(x), ms.Tensor(y))[2])
    np.testing.assert_allclose(net.fc.weight.asnumpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.fc.bias.asnumpy(), b, rtol=1e-5, atol=1e-6)
    assert step.step_index == 3
    with pytest.raises(ValueError, match="train.optimizer: 'lamb' is not one of"):
        build_optimizer(net, lr, name="lamb")


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_overflow_skips_update_and_lowers_scale(mode):
    weight, bias, x, y = _linear_case()
    net = LinearNet(weight, bias, loss_gain=1e30)  # x loss scale 1e10 overflows float32
    opt = build_optimizer(net, np.full(3, 0.1, np.float32))
    step = TrainStep(net, opt, loss_scaling=LossScaleSettings(1e10), jit=mode == "graph")
    _, _, finite = step(ms.Tensor(x), ms.Tensor(y))
    assert not bool(finite)
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), weight)
    np.testing.assert_array_equal(net.fc.bias.asnumpy(), bias)
    moments = [p.asnumpy() for p in opt.moments]
    assert all(np.all(m == 0) for m in moments)
    assert step.loss_scale == pytest.approx(5e9)
    assert step.step_index == 1  # the skipped step still moves the lr schedule on
    net.loss_gain = 1.0
    step_after = TrainStep(net, opt, loss_scaling=LossScaleSettings(step.loss_scale))
    _, _, finite = step_after(ms.Tensor(x), ms.Tensor(y))
    assert bool(finite) and not np.array_equal(net.fc.weight.asnumpy(), weight)


def _toy_batch():
    src = ToySource(2)
    items = [src[i] for i in range(2)]
    return [ms.Tensor(np.stack([item[j] for item in items])) for j in (0, 1, 4, 5, 6, 7, 8)]


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_non_finite_step_is_skipped_without_loss_scaling(mode):
    weight, bias, x, y = _linear_case()
    net = LinearNet(weight, bias, loss_gain=float("inf"))  # a diverged step: inf / nan grads
    opt = build_optimizer(net, np.full(2, 0.1, np.float32))
    step = TrainStep(net, opt, jit=mode == "graph")
    _, _, finite = step(ms.Tensor(x), ms.Tensor(y))
    assert not bool(finite)
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), weight)
    assert all(np.all(m.asnumpy() == 0) for m in opt.moments)
    assert step.step_index == 1


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_clip_grad_norm_bounds_the_update(mode):
    weight, bias, x, y = _linear_case()
    gw, gb = _numpy_grads(weight.astype(np.float64), bias.astype(np.float64), x, y)
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    clip = norm / 4
    net = LinearNet(weight, bias)
    opt = build_optimizer(net, np.full(1, 1.0, np.float32), momentum=0.0, weight_decay=0.0)
    step = TrainStep(net, opt, clip_grad_norm=clip, jit=mode == "graph")
    step(ms.Tensor(x), ms.Tensor(y))
    # plain SGD with lr 1: the update is the clipped gradient, the original direction at norm/4
    np.testing.assert_allclose(weight - net.fc.weight.asnumpy(), gw / 4, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bias - net.fc.bias.asnumpy(), gb / 4, rtol=1e-4, atol=1e-6)


def test_global_norm_hand_computed_and_overflow():
    from mindseg.engine.train_step import global_norm
    grads = (ms.Tensor([3.0, 0.0], ms.float32), ms.Tensor([[4.0]], ms.float32),
             ms.Tensor([12.0], ms.float16))
    assert float(global_norm(grads)) == pytest.approx(13.0)
    for bad in (np.inf, np.nan):
        norm = float(global_norm(grads + (ms.Tensor([bad, 1.0], ms.float32),)))
        assert not np.isfinite(norm)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_clip_above_the_norm_leaves_the_gradient(mode):
    weight, bias, x, y = _linear_case()
    gw, gb = _numpy_grads(weight.astype(np.float64), bias.astype(np.float64), x, y)
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    net = LinearNet(weight, bias)
    opt = build_optimizer(net, np.full(1, 1.0, np.float32), momentum=0.0, weight_decay=0.0)
    TrainStep(net, opt, clip_grad_norm=norm * 2, jit=mode == "graph")(ms.Tensor(x), ms.Tensor(y))
    np.testing.assert_allclose(weight - net.fc.weight.asnumpy(), gw, rtol=1e-4, atol=1e-6)


def test_mixed_precision_o1_runs_convs_in_float16():
    inputs = _toy_batch()
    ms.set_seed(0)
    ref_net = ToyNet()
    ref_net.set_train(True)
    ref = [float(v) for v in ref_net(*inputs)]
    ms.set_seed(0)
    mixed = apply_mixed_precision(ToyNet(), "O1")
    mixed.set_train(True)
    out = [float(v) for v in mixed(*inputs)]
    assert mixed.loss_names == ToyNet.loss_names
    diffs = np.abs(np.array(out) - np.array(ref))
    assert np.all(diffs < 1e-2) and diffs.max() > 0  # float16 rounding, nothing else
    opt = build_optimizer(mixed, np.full(2, 0.01, np.float32))
    total, _, finite = TrainStep(mixed, opt, loss_scaling=LossScaleSettings(65536.0))(*inputs)
    assert bool(finite) and float(total) == pytest.approx(sum(out), rel=1e-6)
    assert not os.path.exists("rewritten_network")
    for level in ("O7", "auto", "O3"):
        with pytest.raises(ValueError, match="amp_level"):
            apply_mixed_precision(ToyNet(), level)


def test_detect_launcher_from_environment():
    assert detect_launcher({}) == ("none", 1)
    assert detect_launcher({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "4",
                            "OMPI_COMM_WORLD_SIZE": "4"}) == ("msrun", 4)
    assert detect_launcher({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}) == ("mpirun", 2)
    assert detect_launcher({"RANK_SIZE": "8", "RANK_ID": "3"}) == ("rank_table", 8)
    assert detect_launcher({"RANK_SIZE": "1"}) == ("none", 1)


def test_init_runtime_sets_mode_and_seeds_identically():
    cfg = toy_config(["mode=graph", "seed=7"])
    info = init_runtime(cfg, env={})
    assert (info.rank, info.world, info.is_main, info.launcher) == (0, 1, True, "none")
    assert ms.get_context("mode") == ms.GRAPH_MODE
    first = (np.random.rand(3), ToyNet().conv.weight.asnumpy())
    init_runtime(toy_config(["seed=7"]), env={})
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
    second = (np.random.rand(3), ToyNet().conv.weight.asnumpy())
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    with pytest.raises(ValueError, match="mode"):
        init_runtime(toy_config(["mode=eager"]), env={})


def test_trainer_logs_checkpoints_and_summary(tmp_path):
    from mindseg.engine.trainer import train
    out = tmp_path / "run"
    cfg = toy_config([f"output_dir={out}", "train.max_steps=6", "train.ckpt_interval=2",
                      "train.keep_ckpt_max=2", "train.log_interval=3"])
    runtime = init_runtime(cfg, env={})
    net = ToyNet()
    before = net.conv.weight.asnumpy().copy()
    summary = train(cfg, net, toy_dataset(2, num_images=8), runtime)
    assert summary["steps_run"] == 6 and summary["total_steps"] == 6
    assert summary["skipped_steps"] == 0
    assert set(summary["losses"]) == {"total", "loss_cls", "loss_box"}
    assert not np.array_equal(before, net.conv.weight.asnumpy())
    ckpts = sorted(os.listdir(out / "checkpoints"))
    assert ckpts == ["ckpt_00000004.ckpt", "ckpt_00000006.ckpt", "latest"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "ckpt_00000006.ckpt"
    log = (out / "train.log").read_text()
    assert "step 3/6" in log and "step 6/6" in log and "img/s" in log and "eta" in log
    assert "loss_cls" in log and "lr 0.01" in log
    assert "max_steps: 6" in (out / "config.yml").read_text()
    # train_curves.png, redrawn at each checkpoint, from the logged window means
    import json
    import cv2
    curves = json.loads((out / "train_curves.json").read_text())
    assert curves["step"] == [3, 6] and set(curves) == {"step", "total", "loss_cls", "loss_box"}
    assert f"total {curves['total'][-1]:.4f}" in log
    picture = cv2.imread(str(out / "train_curves.png"))
    assert picture is not None and picture.shape == (720, 960, 3)
