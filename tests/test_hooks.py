"""The trainer's hooks, each alone, on the toy network: the output lock, the divergence guard,
the log window of skipped steps, and evaluation while training (records, best checkpoint,
early stop, resume)."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mindspore as ms

from mindseg.engine import hooks as H
from mindseg.engine.trainer import train
from mindseg.runtime import init_runtime
from toy import ToyNet, toy_config, toy_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def pynative():
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def _train(out, overrides=(), hooks=(), resume=None):
    cfg = toy_config([f"output_dir={out}"] + list(overrides))
    runtime = init_runtime(cfg, env={})
    return train(cfg, ToyNet(), toy_dataset(2, num_images=8), runtime, hooks=hooks, resume_ckpt=resume)


# ------------------------------------------------------------------ the output lock

def test_output_lock_refuses_a_second_run_and_is_released(tmp_path):
    with H.OutputLock(str(tmp_path)):
        with pytest.raises(H.TrainingStopped, match=rf"^{tmp_path} is in use by another run \(pid "
                                                    rf"{os.getpid()} on .*\); wait for it or choose "
                                                    rf"another --output_dir$"):
            H.OutputLock(str(tmp_path)).acquire()
        with pytest.raises(H.TrainingStopped, match="in use by another run"):
            _train(tmp_path)  # train() takes the same lock before it writes anything
        assert not (tmp_path / "config.yml").exists() and not (tmp_path / "train.log").exists()
    with H.OutputLock(str(tmp_path)):  # released on exit
        pass


def test_output_lock_of_a_killed_run_is_stale(tmp_path):
    holder = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r})
        from mindseg.engine.hooks import OutputLock
        lock = OutputLock({str(tmp_path)!r})
        lock.acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(H.TrainingStopped, match=f"pid {proc.pid}"):
            H.OutputLock(str(tmp_path)).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert (tmp_path / H.LOCK_FILE).exists()  # the file stays; the lock went with the process
    with H.OutputLock(str(tmp_path)):
        pass


# ------------------------------------------------------------------ divergence

def test_diverging_run_stops_at_once_and_keeps_last_good_checkpoint(tmp_path):
    """train.base_lr 1e6: the weights blow up within a few steps; the run stops at the first
    non-finite step, naming it and its lr, and no checkpoint holds the diverged weights."""
    with pytest.raises(H.TrainingStopped) as stopped:
        _train(tmp_path, ["train.base_lr=1000000", "train.warmup_iters=0", "train.max_steps=40",
                          "train.ckpt_interval=1"])
    match = re.search(r"became infinite or NaN at step (\d+) \(lr 1e\+06\): the run diverged", str(stopped.value))
    assert match, str(stopped.value)
    step = int(match.group(1))
    saved = sorted(n for n in os.listdir(tmp_path / "checkpoints") if n.startswith("ckpt_"))
    assert saved == [f"ckpt_{s:08d}.ckpt" for s in range(max(step - 5, 1), step)]  # keep_ckpt_max 5
    weights = ms.load_checkpoint(str(tmp_path / "checkpoints" / saved[-1]))
    assert all(np.isfinite(v.asnumpy()).all() for v in weights.values() if hasattr(v, "asnumpy"))


def test_mixed_precision_guard_bounds_consecutive_skipped_steps():
    guard = H.NonFiniteGuard(loss_scaling=True, max_bad_steps=2, min_loss_scale=1.0)

    class Step:
        loss_scale = 1024.0

    trainer = type("T", (), {"lr": np.full(10, 0.5), "step_fn": Step(), "step": 0})()
    for step, finite in enumerate([False, False, True, False, False], start=1):
        trainer.step, trainer.outputs = step, (np.float32(1.0), (), finite)
        guard.after_step(trainer)  # 2 in a row are allowed, a good step resets the count
    trainer.step, trainer.outputs = 6, (np.float32(np.nan), (), False)
    with pytest.raises(H.TrainingStopped, match=r"3 consecutive steps overflowed at step 6 \(lr 0.5\)"):
        guard.after_step(trainer)
    Step.loss_scale = 0.5
    trainer.outputs = (np.float32(1.0), (), True)
    with pytest.raises(H.TrainingStopped, match="loss scale fell to 0.5 at step 6"):
        guard.after_step(trainer)


def test_log_window_of_skipped_steps_shows_no_stale_losses():
    logged = []
    window = H.LogWindow(2, 2, show_loss_scale=True)
    trainer = type("T", (), {"lr": np.full(4, 0.1), "total_steps": 4, "loss_names": ("loss_a",),
                             "step_fn": type("S", (), {"loss_scale": 8.0})(),
                             "logger": type("L", (), {"info": staticmethod(logged.append)})()})()
    for step, (total, finite) in enumerate([(1.0, True), (3.0, True), (9.0, False), (9.0, False)], start=1):
        trainer.step, trainer.outputs = step, (total, (total,), finite)
        window.after_step(trainer)
    assert "total 2.0000" in logged[0] and "loss_a 2.0000" in logged[0]
    assert "total" not in logged[1] and "every step of this window was skipped" in logged[1]
    assert "skipped(overflow) 2" in logged[1] and window.total_skipped == 2


def test_log_line_names_every_quantity():
    window = H.LogWindow(20, 4, show_loss_scale=True)
    window.skipped = 2
    trainer = type("T", (), {"step": 40, "total_steps": 7490, "lr": np.full(7490, 0.02),
                             "step_fn": type("S", (), {"loss_scale": 1024.0})()})()
    line = window.format_line(trainer, {"total": 1.5, "loss_cls": 1.0, "loss_box": 0.5}, 0.5)
    for part in ("step 40/7490", "loss_cls 1.0000", "loss_box 0.5000", "lr 0.02", "0.500 s/it",
                 "8.0 img/s", "eta 1:02:05", "loss_scale 1024", "skipped(overflow) 2"):
        assert part in line


# ------------------------------------------------------------------ evaluation while training

def _fake_evaluate(segm_by_call):
    """An evaluator whose segm AP follows ``segm_by_call`` (bbox AP = segm AP + 1)."""
    calls = []

    def evaluate(net):
        value = segm_by_call[len(calls)]
        calls.append(value)
        net.set_train(False)
        return {"bbox": {"AP": value + 1.0}, "segm": {"AP": value}}
    return evaluate, calls


def _eval_hook(out, evaluate, patience=0):
    from mindseg.engine.checkpoint import CheckpointManager
    manager = CheckpointManager(str(out / "checkpoints"), 5)
    return H.EvalHook(evaluate, 2, str(out), patience=patience, manager=manager)


def test_eval_hook_records_keeps_best_and_stops_early(tmp_path):
    evaluate, calls = _fake_evaluate([10.0, 30.0, 20.0, 25.0, 99.0])
    summary = _train(tmp_path, ["train.max_steps=12", "train.ckpt_interval=100"],
                     hooks=[_eval_hook(tmp_path, evaluate, patience=2)])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["segm_AP"], r["bbox_AP"]) for r in rows] == \
        [(2, 10.0, 11.0), (4, 30.0, 31.0), (6, 20.0, 21.0), (8, 25.0, 26.0)]
    assert summary["steps_run"] == 8 and "not improved for 2 evaluation(s)" in summary["stopped_early"]
    assert int(ms.load_checkpoint(str(tmp_path / "checkpoints" / "best.ckpt"))["step"].asnumpy()) == 4
    assert summary["last_checkpoint"].endswith("ckpt_00000008.ckpt")  # the stopped run is saved
    assert "eval at step 4: bbox AP 31.00  segm AP 30.00" in (tmp_path / "train.log").read_text()


def test_eval_hook_resumes_record_and_best(tmp_path):
    evaluate, _ = _fake_evaluate([10.0, 30.0, 20.0])
    _train(tmp_path, ["train.max_steps=6", "train.ckpt_interval=2"], hooks=[_eval_hook(tmp_path, evaluate)])
    # resume from step 4: the row of step 6 is dropped; the best (30 at step 4) and its checkpoint stay
    evaluate, _ = _fake_evaluate([5.0, 40.0])
    hook = _eval_hook(tmp_path, evaluate, patience=1)
    summary = _train(tmp_path, ["train.max_steps=8", "train.ckpt_interval=2", "train.overwrite=true"],
                     hooks=[hook], resume=str(tmp_path / "checkpoints" / "ckpt_00000004.ckpt"))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["segm_AP"]) for r in rows] == [(2, 10.0), (4, 30.0), (6, 5.0)]
    assert summary["steps_run"] == 2 and "best 30.00 at step 4" in summary["stopped_early"]


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_evaluations_leave_training_unchanged(tmp_path, mode):
    """The network runs in inference mode at each evaluation and the training step goes on after
    it exactly as without (in GRAPH the compiled step must not keep the inference mode: the
    toy's BatchNorm would stop updating its statistics)."""
    batch = next(toy_dataset(2, num_images=8).create_tuple_iterator(output_numpy=False))
    inputs = [batch[k] for k in (0, 1, 4, 5, 6, 7, 8)]  # the toy's training inputs

    def evaluate(net):
        net.set_train(False)
        net(*inputs)  # an inference pass, as the evaluator's
        return {"bbox": {"AP": 1.0}, "segm": {"AP": 1.0}}

    weights = {}
    for name, hooks in (("plain", []), ("evaluated", [H.EvalHook(evaluate, 2, str(tmp_path / "evaluated"))])):
        cfg = toy_config([f"output_dir={tmp_path / name}", f"mode={mode}", "train.max_steps=6"])
        runtime = init_runtime(cfg, env={})  # seeds the toy's initialisation
        net = ToyNet()
        train(cfg, net, toy_dataset(2, num_images=8), runtime, hooks=hooks)
        weights[name] = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert len((tmp_path / "evaluated" / "metrics.jsonl").read_text().splitlines()) == 3
    for name, value in weights["plain"].items():
        np.testing.assert_array_equal(weights["evaluated"][name], value, err_msg=name)
