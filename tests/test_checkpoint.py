"""Checkpoints: exact resume (N + N steps == 2N steps), rotation, and atomic writes that survive
a kill in the middle of a write."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import mindspore as ms

from mindseg.engine.checkpoint import (CheckpointManager, LATEST, load_train_state, read_latest,
                                       resolve_checkpoint, save_train_state)
from mindseg.engine.hooks import HookBase
from mindseg.engine.train_step import build_optimizer
from mindseg.engine.trainer import train
from mindseg.runtime import init_runtime, seed_everything
from toy import ToyNet, net_weights, toy_config, toy_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def pynative():
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


class StopAt(HookBase):
    """Ends the run after ``step`` steps, as a preempted job would."""

    def __init__(self, step):
        self.step = step

    def after_step(self, trainer):
        if trainer.step == self.step:
            trainer.request_stop(f"stopped at step {self.step}")


def _run(out, overrides, resume=None, stop_after=None, scramble=False):
    cfg = toy_config([f"output_dir={out}", "train.max_steps=12", "train.ckpt_interval=3",
                      "train.lr_steps=[8]", "train.log_interval=3"] + overrides)
    runtime = init_runtime(cfg, env={})
    net = ToyNet()
    if scramble:  # resumed weights must come from the checkpoint, not from the seed
        for param in net.get_parameters():
            param.set_data(ms.Tensor(np.full(param.shape, 0.123, np.float32)))
    dataset = toy_dataset(2, num_images=10, shuffle=True, seed=cfg.seed)
    summary = train(cfg, net, dataset, runtime, resume_ckpt=resume,
                    hooks=[StopAt(stop_after)] if stop_after else ())
    return net_weights(net), summary


@pytest.mark.parametrize("mode,mix", [("pynative", False), ("pynative", True), ("graph", False)])
def test_resume_equals_uninterrupted(tmp_path, mode, mix):
    overrides = [f"mode={mode}", f"train.mix={str(mix).lower()}"]
    full, full_summary = _run(tmp_path / "full", overrides)
    _, first = _run(tmp_path / "cut", overrides, stop_after=6)
    assert first["steps_run"] == 6 and first["last_checkpoint"].endswith("ckpt_00000006.ckpt")
    resumed, second = _run(tmp_path / "cut", overrides, resume=str(tmp_path / "cut" / "checkpoints"),
                           scramble=True)
    assert second["start_step"] == 6 and second["steps_run"] == 6
    assert set(resumed) == set(full)
    for name in full:
        np.testing.assert_allclose(resumed[name], full[name], rtol=0, atol=1e-6, err_msg=name)
    if mix:
        assert second["loss_scale"] == full_summary["loss_scale"]
    # the resumed run's train_curves.json continues the first part's: the whole run's history
    full_curves = json.loads((tmp_path / "full" / "train_curves.json").read_text())
    cut_curves = json.loads((tmp_path / "cut" / "train_curves.json").read_text())
    assert cut_curves["step"] == full_curves["step"] == [3, 6, 9, 12]
    assert set(cut_curves) == set(full_curves) == {"step", "total", "loss_cls", "loss_box"}
    for name in ("total", "loss_cls", "loss_box"):
        np.testing.assert_allclose(cut_curves[name], full_curves[name], rtol=1e-5, err_msg=name)
    seed_everything(0)
    assert not np.allclose(full["conv.weight"], ToyNet().conv.weight.asnumpy(), atol=1e-4)


def _small_state(value):
    seed_everything(0)
    net = ToyNet()
    for param in net.trainable_params():
        param.set_data(ms.Tensor(np.full(param.shape, value, np.float32)))
    opt = build_optimizer(net, np.full(10, 0.1, np.float32))
    return net, opt


def test_manager_keeps_newest_and_points_latest(tmp_path):
    net, opt = _small_state(1.0)
    manager = CheckpointManager(str(tmp_path), keep_max=2)
    for step in (2, 4, 6):
        net.conv.weight.set_data(ms.Tensor(np.full(net.conv.weight.shape, step, np.float32)))
        manager.save(net, opt, step, {"loss_scale": 512.0, "loss_scale_counter": 3})
    names = sorted(os.listdir(tmp_path))
    assert names == ["ckpt_00000004.ckpt", "ckpt_00000006.ckpt", LATEST]
    assert resolve_checkpoint(str(tmp_path)).endswith("ckpt_00000006.ckpt")
    fresh, fresh_opt = _small_state(0.0)
    extra = load_train_state(resolve_checkpoint(str(tmp_path)), fresh, fresh_opt)
    assert extra == {"step": 6, "loss_scale": 512.0, "loss_scale_counter": 3}
    assert np.all(fresh.conv.weight.asnumpy() == 6)
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_checkpoint(str(tmp_path / "nothing_here"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="latest"):
        resolve_checkpoint(str(tmp_path / "empty"))


def test_loads_when_free_memory_is_short_but_the_page_cache_can_give_it(tmp_path, monkeypatch):
    """MindSpore's size check compares a checkpoint with the free pages alone; with the page cache
    full (after heavy file I/O) a checkpoint far smaller than the available memory was refused.
    Here the machine reports one free page (4 KB) for a checkpoint of 8 KB."""
    from mindspore.train import serialization
    from mindseg.engine.checkpoint import _available_memory
    net, opt = _small_state(3.0)
    path = save_train_state(str(tmp_path / "c.ckpt"), net, opt, step=5)
    assert os.path.getsize(path) > os.sysconf("SC_PAGE_SIZE")
    real_sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_AVPHYS_PAGES" else real_sysconf(name))
    with open("/proc/meminfo", encoding="ascii") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    assert abs(_available_memory() - kib * 1024) < 2 ** 30  # within 1 GB of a moment ago
    fresh, fresh_opt = _small_state(0.0)
    assert load_train_state(path, fresh, fresh_opt) == {"step": 5}
    assert np.all(fresh.conv.weight.asnumpy() == 3.0)
    assert serialization._get_available_memory() == pytest.approx(_available_memory(), abs=2 ** 30)


def test_partial_write_leaves_previous_checkpoint(tmp_path):
    net, opt = _small_state(1.0)
    manager = CheckpointManager(str(tmp_path), keep_max=3)
    good = manager.save(net, opt, 5)
    with open(good, "rb") as f:
        blob = f.read()
    # what a write killed half way leaves: a truncated temporary file and a half-written pointer
    (tmp_path / ".tmp_999_ckpt_00000010.ckpt").write_bytes(blob[: len(blob) // 2])
    (tmp_path / f".tmp_{LATEST}.999").write_text("ckpt_000")
    assert read_latest(str(tmp_path)) == good
    fresh, fresh_opt = _small_state(0.0)
    assert load_train_state(read_latest(str(tmp_path)), fresh, fresh_opt)["step"] == 5
    assert np.all(fresh.conv.weight.asnumpy() == 1.0)
    CheckpointManager(str(tmp_path), keep_max=3)  # a restarted run cleans the leftovers
    assert sorted(os.listdir(tmp_path)) == ["ckpt_00000005.ckpt", LATEST]
    truncated = tmp_path / "broken.ckpt"
    truncated.write_bytes(blob[:100])
    with pytest.raises(ValueError, match="broken.ckpt"):
        load_train_state(str(truncated), fresh, fresh_opt)


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import mindseg
    import numpy as np
    import mindspore as ms
    from mindspore import nn
    from mindseg.engine.checkpoint import CheckpointManager
    from mindseg.engine.train_step import build_optimizer

    class Big(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(1500, 1500)

    net = Big()
    opt = build_optimizer(net, np.full(4, 0.1, np.float32))
    manager = CheckpointManager({directory!r}, keep_max=2)
    step = 1
    while True:
        net.fc.weight.set_data(ms.Tensor(np.full((1500, 1500), step, np.float32)))
        manager.save(net, opt, step)
        print("saved", step, flush=True)
        step += 1
""")


def test_sigkill_during_writes_keeps_latest_loadable(tmp_path):
    directory = str(tmp_path / "ckpt")
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=ROOT, directory=directory))
    env = dict(os.environ, GLOG_v="3")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        assert proc.stdout.readline().startswith("saved 1")
        time.sleep(0.7)  # each save of ~18 MB takes a fraction of a second: kill lands mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    latest = resolve_checkpoint(directory)
    step = int(os.path.basename(latest)[5:13])
    params = ms.load_checkpoint(latest)
    assert int(params["step"].asnumpy()) == step
    assert np.all(params["fc.weight"].asnumpy() == step)
    assert sorted(n for n in os.listdir(directory) if not n.startswith(".tmp_"))[-1] == LATEST



def _files(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def test_second_run_refuses_then_overwrite_moves_the_first_aside(tmp_path):
    """A second run into a folder with a first run's checkpoints stops before it writes anything;
    --overwrite moves the first run's files aside intact, then trains."""
    ckpts = tmp_path / "checkpoints"
    _run(tmp_path, ["train.keep_ckpt_max=2"])
    first = _files(ckpts)
    assert sorted(first) == ["ckpt_00000009.ckpt", "ckpt_00000012.ckpt", LATEST]
    with pytest.raises(ValueError) as info:
        _run(tmp_path, ["train.keep_ckpt_max=2", "train.max_steps=6"])
    message = str(info.value)
    assert str(ckpts) in message and "\n" not in message
    for choice in ("--resume_ckpt", "--output_dir", "--overwrite"):
        assert choice in message
    assert _files(ckpts) == first
    _, summary = _run(tmp_path, ["train.keep_ckpt_max=2", "train.max_steps=6",
                                 "train.overwrite=true"])
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("checkpoints.old-")]
    assert len(aside) == 1 and _files(aside[0]) == first
    assert sorted(os.listdir(ckpts)) == ["ckpt_00000003.ckpt", "ckpt_00000006.ckpt", LATEST]
    assert os.path.isfile(summary["last_checkpoint"])
    assert resolve_checkpoint(str(ckpts)) == summary["last_checkpoint"]


def test_resume_rotates_only_its_own_checkpoints(tmp_path):
    """Resuming into the same folder works; rotation deletes only what the resumed run wrote, and
    ``latest`` and the summary name files that exist."""
    ckpts = tmp_path / "checkpoints"
    _run(tmp_path, ["train.keep_ckpt_max=2"], stop_after=6)
    first = _files(ckpts)
    _, summary = _run(tmp_path, ["train.keep_ckpt_max=1"], resume=str(ckpts))
    assert summary["start_step"] == 6
    names = sorted(os.listdir(ckpts))
    assert names == ["ckpt_00000003.ckpt", "ckpt_00000006.ckpt", "ckpt_00000012.ckpt", LATEST]
    for name in ("ckpt_00000003.ckpt", "ckpt_00000006.ckpt"):
        assert (ckpts / name).read_bytes() == first[name]
    assert resolve_checkpoint(str(ckpts)) == summary["last_checkpoint"]
    assert os.path.isfile(summary["last_checkpoint"])


def test_resume_from_an_earlier_step_refuses_to_write_over_later_ones(tmp_path):
    ckpts = tmp_path / "checkpoints"
    _run(tmp_path, [], stop_after=9)
    before = _files(ckpts)
    with pytest.raises(ValueError, match="ckpt_00000009.ckpt") as info:
        _run(tmp_path, [], resume=str(ckpts / "ckpt_00000003.ckpt"))
    assert "--overwrite" in str(info.value) and _files(ckpts) == before
    (ckpts / LATEST).write_text("ckpt_00000009.ckpt\n")
    _, summary = _run(tmp_path, ["train.overwrite=true"], resume=str(ckpts / "ckpt_00000003.ckpt"))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("checkpoints.old-")]
    assert sorted(os.listdir(aside[0])) == ["ckpt_00000006.ckpt", "ckpt_00000009.ckpt", LATEST]
    assert resolve_checkpoint(str(aside[0])).endswith("ckpt_00000009.ckpt")
    for name in ("ckpt_00000006.ckpt", "ckpt_00000009.ckpt"):
        assert (aside[0] / name).read_bytes() == before[name]
    assert summary["start_step"] == 3 and resolve_checkpoint(str(ckpts)) == summary["last_checkpoint"]


def test_checkpoint_loading_counts_the_page_cache_from_the_first_load_on(tmp_path):
    """MindSpore's load_checkpoint refuses files larger than the free memory, leaving out the page
    cache; mindseg makes that check count MemAvailable when it loads a checkpoint, not when it is
    imported (a library import changes nothing of MindSpore's behaviour)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import numpy as np
        import mindspore as ms
        from mindspore.train import serialization
        from mindseg.engine import checkpoint
        original = serialization._get_available_memory
        print(getattr(original, "counts_page_cache", False))
        ms.save_checkpoint([{{"name": "w", "data": ms.Tensor(np.ones(3, np.float32))}}], {str(tmp_path / "w.ckpt")!r})
        checkpoint.load_checkpoint_file({str(tmp_path / "w.ckpt")!r})
        patched = serialization._get_available_memory
        print(getattr(patched, "counts_page_cache", False), patched() >= original())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, GLOG_v="3"))
    assert out.stdout.split() == ["False", "True", "True"], out.stderr[-2000:]


@pytest.mark.parametrize("config", ["shapes/mask_rcnn_shapes", "shapes/centermask_lite_shapes"])
def test_checkpoints_naming_the_heads_at_the_top_level_still_load(tmp_path, config):
    """A checkpoint that names the RoI-head parts ``box_head.*`` / ``mask_head.*`` /
    ``maskiou_head.*`` (weights and Adam moments) resumes with every value in place and
    fine-tunes from the same values as the same checkpoint with the grouped names."""
    from mindseg.engine.finetune import load_pretrained
    from mindseg.model_zoo import build_model, get_config
    cfg = get_config(config)

    def build():
        net = build_model(cfg, num_classes=3)
        return net, build_optimizer(net, np.full(2, 1e-3, np.float32), name="adam")

    ms.set_seed(0)
    net, opt = build()
    rng = np.random.default_rng(0)
    for param in list(net.get_parameters()) + list(opt.moment1):
        if param.dtype == ms.float32:
            param.set_data(ms.Tensor(rng.normal(size=param.shape).astype(np.float32)))
    grouped = str(tmp_path / "grouped.ckpt")
    save_train_state(grouped, net, opt, step=7)
    saved = ms.load_checkpoint(grouped)
    moved = {name: name.replace("roi_heads.", "") for name in saved}
    assert sum(old != new for old, new in moved.items()) > 20
    assert any(new.startswith("moment1.mask_head.") for new in moved.values())
    old = str(tmp_path / "top_level.ckpt")
    ms.save_checkpoint([{"name": moved[name], "data": value} for name, value in saved.items()], old)

    ms.set_seed(1)
    fresh, fresh_opt = build()
    assert load_train_state(old, fresh, fresh_opt)["step"] == 7
    want = {p.name: p.asnumpy() for p in list(net.get_parameters()) + list(opt.moment1)}
    got = {p.name: p.asnumpy() for p in list(fresh.get_parameters()) + list(fresh_opt.moment1)}
    assert want.keys() == got.keys()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    tuned_old, tuned_new = build()[0], build()[0]
    load_pretrained(tuned_old, old, ["a", "b", "c"])
    load_pretrained(tuned_new, grouped, ["a", "b", "c"])
    for p_old, p_new in zip(tuned_old.get_parameters(), tuned_new.get_parameters()):
        np.testing.assert_array_equal(p_old.asnumpy(), p_new.asnumpy(), err_msg=p_old.name)
