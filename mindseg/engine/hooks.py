"""What happens around the training steps, one concern per hook (:class:`mindseg.engine.trainer.Trainer`
calls ``before_train``, ``after_step`` and ``after_train`` of each, in order).

The trainer's state the hooks read: ``step`` (steps done), ``start_step``, ``total_steps``,
``outputs`` (``(total, losses, finite)`` of the step just run), ``lr`` (the schedule), ``net``,
``optimizer``, ``step_fn``, ``logger``, ``failed`` (in ``after_train``: the run ended by an
exception), and ``request_stop(reason)``.
"""
import fcntl
import json
import os
import socket
import time

import numpy as np

from mindseg.config import dump_config
from mindseg.engine.checkpoint import atomic_write_text, load_train_state, resolve_checkpoint
from mindseg.engine.logger import format_duration
from mindseg.runtime import RuntimeInfo


class HookBase:
    def before_train(self, trainer):
        pass

    def after_step(self, trainer):
        pass

    def after_train(self, trainer):
        pass


class TrainingStopped(RuntimeError):
    """A hook ended the run: its message says why, at which step and what to do."""


# ------------------------------------------------------------------ the output folder

LOCK_FILE = ".lock"


class OutputLock:
    """An exclusive lock on ``output_dir`` for a run's life (``with OutputLock(dir):``), so that a
    second run into the same folder is refused in one line instead of interleaving its logs and
    checkpoints with this one's. It is taken before anything is written into the folder, so it
    wraps the hooks rather than being one. The lock is the kernel's (``flock``): a killed run's
    lock goes with its process, so a stale lock file is never mistaken for a live run."""

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.handle = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise TrainingStopped(f"{os.path.dirname(self.path)} is in use by another run ({holder}); "
                                  f"wait for it or choose another --output_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self.handle = handle

    def release(self):
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class RunStart(HookBase):
    """Writes the resolved config (rank 0) and the run's opening line."""

    def __init__(self, cfg, describe, write_config):
        self.cfg = cfg
        self.describe = describe
        self.write_config = write_config

    def before_train(self, trainer):
        if self.write_config:
            dump_config(self.cfg, self.cfg.output_dir)
        trainer.logger.info(self.describe)


# ------------------------------------------------------------------ where the weights start

class StartWeights(HookBase):
    """Every rank starts from the same weights: resumed (weights, optimizer, step, loss scale)
    from ``resume_ckpt``, or a new run from the weights of ``pre_trained``
    (:func:`mindseg.engine.finetune.load_pretrained`, classes matched by name), or the model's
    own initialisation."""

    def __init__(self, resume_ckpt="", pre_trained="", class_names=None):
        if resume_ckpt and pre_trained:
            raise ValueError("--pre_trained starts a new run and --resume_ckpt continues one: "
                             "give one of them")
        self.resume_ckpt = resume_ckpt
        self.pre_trained = pre_trained
        self.class_names = class_names
        self.resumed_from = None

    def before_train(self, trainer):
        if self.resume_ckpt:
            path = resolve_checkpoint(self.resume_ckpt)
            state = load_train_state(path, trainer.net, trainer.optimizer)
            trainer.step_fn.load_scaler_state(state)
            trainer.start_step = int(state.get("step", trainer.step_fn.step_index))
            self.resumed_from = path
            trainer.logger.info(f"resumed from {path} at step {trainer.start_step}")
        elif self.pre_trained:
            from mindseg.engine.finetune import load_pretrained
            if not self.class_names:
                raise ValueError("--pre_trained needs the new run's class names (the training annotations)")
            trainer.logger.info(load_pretrained(trainer.net, self.pre_trained, self.class_names).line())


# ------------------------------------------------------------------ divergence

class NonFiniteGuard(HookBase):
    """Stops a diverging run at once, naming the step and the lr, before it writes a checkpoint.

    Without loss scaling a non-finite loss or gradient is divergence. With it (``--mix``) a
    float16 overflow skips a step and halves the scale, which is normal now and then; a run of
    more than ``max_bad_steps`` consecutive skipped steps, or a scale below ``min_loss_scale``, is
    divergence too."""

    def __init__(self, loss_scaling, max_bad_steps=20, min_loss_scale=1.0):
        self.loss_scaling = loss_scaling
        self.max_bad_steps = int(max_bad_steps)
        self.min_loss_scale = float(min_loss_scale)
        self.bad_steps = 0

    def after_step(self, trainer):
        total, _, finite = trainer.outputs
        good = bool(finite) and bool(np.isfinite(float(total)))
        self.bad_steps = 0 if good else self.bad_steps + 1
        lr = float(trainer.lr[trainer.step - 1])
        where = f"at step {trainer.step} (lr {lr:.6g})"
        advice = "lower train.base_lr, raise train.warmup_iters or set train.clip_grad_norm"
        if not self.loss_scaling:
            if not good:
                raise TrainingStopped(f"the loss or its gradients became infinite or NaN {where}: "
                                      f"the run diverged; {advice}")
            return
        if self.bad_steps > self.max_bad_steps:
            raise TrainingStopped(f"{self.bad_steps} consecutive steps overflowed {where}: the run "
                                  f"diverged (train.max_bad_steps {self.max_bad_steps}); {advice}")
        scale = trainer.step_fn.loss_scale
        if scale < self.min_loss_scale:
            raise TrainingStopped(f"the loss scale fell to {scale:g} {where}, below "
                                  f"train.min_loss_scale {self.min_loss_scale:g}: the run diverged; {advice}")


# ------------------------------------------------------------------ logging and curves

class LogWindow(HookBase):
    """Every ``interval`` steps (and at the last) one line with the mean losses of the window's
    steps that were applied, the lr, the speed and the eta. A window whose every step was skipped
    says so instead of repeating older losses. ``curves`` (a TrainCurves) receives each window's
    means."""

    def __init__(self, interval, images_per_step, show_loss_scale, curves=None):
        self.interval = int(interval)
        self.images_per_step = images_per_step
        self.show_loss_scale = show_loss_scale
        self.curves = curves
        self.last_losses = {}
        self.total_skipped = 0
        self._reset()

    def _reset(self):
        self.losses, self.skipped, self.count, self.start = [], 0, 0, time.time()

    def after_step(self, trainer):
        total, losses, finite = trainer.outputs
        self.count += 1
        if bool(finite):
            self.losses.append([float(total)] + [float(x) for x in losses])
        else:
            self.skipped += 1
            self.total_skipped += 1
        if trainer.step % self.interval and trainer.step != trainer.total_steps:
            return
        step_time = (time.time() - self.start) / self.count
        means = {}
        if self.losses:
            mean = np.mean(self.losses, axis=0)
            means = {"total": float(mean[0])}
            means.update(zip(trainer.loss_names, (float(v) for v in mean[1:])))
            self.last_losses = means
            if self.curves is not None:
                self.curves.add(trainer.step, means)
        line = self.format_line(trainer, means, step_time)
        if not means:
            line += "  (every step of this window was skipped: no losses to show)"
        trainer.logger.info(line)
        self._reset()

    def format_line(self, trainer, means, step_time):
        """``step 20/90000  total 1.2345  loss_cls 0.5 ...  lr ...  0.41 s/it ...`` at the
        trainer's step: ``means`` the window's mean losses by name, ``step_time`` its seconds per
        step, from which the speed and the eta follow."""
        step, total_steps = trainer.step, trainer.total_steps
        parts = [f"step {step}/{total_steps}"]
        parts += [f"{name} {value:.4f}" for name, value in means.items()]
        parts.append(f"lr {float(trainer.lr[step - 1]):.6g}")
        parts.append(f"{step_time:.3f} s/it")
        parts.append(f"{self.images_per_step / max(step_time, 1e-9):.1f} img/s")
        parts.append(f"eta {format_duration(step_time * (total_steps - step))}")
        if self.show_loss_scale:
            parts.append(f"loss_scale {trainer.step_fn.loss_scale:g}")
        if self.skipped:
            parts.append(f"skipped(overflow) {self.skipped}")
        return "  ".join(parts)


# ------------------------------------------------------------------ checkpoints

class PeriodicCheckpointer(HookBase):
    """Rank 0: a checkpoint every ``interval`` steps and at the end of a run that did not fail
    (a diverged run keeps its last good checkpoint); ``curves`` are redrawn with each."""

    def __init__(self, manager, interval, curves=None, metrics=None):
        self.manager = manager
        self.interval = int(interval)
        self.curves = curves
        self.metrics = metrics  # an EvalHook whose AP history the curves show
        self.saved = []

    def save(self, trainer):
        if self.saved and self.saved[-1][0] == trainer.step:
            return
        path = self.manager.save(trainer.net, trainer.optimizer, trainer.step, trainer.step_fn.scaler_state())
        self.saved.append((trainer.step, path))
        if self.curves is not None:
            self.curves.write(self.metrics.ap_history() if self.metrics is not None else None)

    def after_step(self, trainer):
        if trainer.step % self.interval == 0:
            self.save(trainer)

    def after_train(self, trainer):
        if not trainer.failed and trainer.step > trainer.start_step:
            self.save(trainer)

    @property
    def last_checkpoint(self):
        return self.saved[-1][1] if self.saved else None


# ------------------------------------------------------------------ evaluation while training

METRICS_FILE = "metrics.jsonl"
BEST_METRICS = ("segm_AP", "bbox_AP")


def read_metrics(path, up_to_step=None):
    """The evaluations recorded in a ``metrics.jsonl`` (up to ``up_to_step``); [] when there is none."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []
    return [r for r in rows if up_to_step is None or int(r["step"]) <= up_to_step]


def share_from_main(values, world):
    """``values`` (floats) as rank 0 has them, on every rank: an all-reduce (sum) to which the
    other ranks add zeros. It also makes them wait for rank 0's evaluation."""
    if world == 1:
        return [float(v) for v in values]
    import mindspore as ms
    from mindspore import ops
    summed = ops.AllReduce(ops.ReduceOp.SUM)(ms.Tensor(np.asarray(values, np.float32)))
    return [float(v) for v in summed.asnumpy()]


class EvalHook(HookBase):
    """Every ``interval`` steps (and at the last), rank 0 evaluates the val split
    (``evaluate(net) -> {"bbox": {"AP": ..}, "segm": {"AP": ..}}``, eval.py's evaluator) and
    appends ``{"step", "bbox_AP", "segm_AP", "seconds"}`` to ``OUTPUT_DIR/metrics.jsonl``; a new
    best by ``best_metric`` is saved as ``checkpoints/best.ckpt``; ``patience`` evaluations
    without improvement stop the run (0: never). The other ranks of ``runtime`` wait for rank
    0's result (an all-reduce), so every rank makes the same decision. A resumed run continues
    the record and the best-so-far up to its step."""

    def __init__(self, evaluate, interval, output_dir, *, best_metric="segm_AP", patience=0,
                 manager=None, runtime=RuntimeInfo()):
        if best_metric not in BEST_METRICS:
            raise ValueError(f"train.best_metric must be one of {BEST_METRICS}, got {best_metric!r}")
        self.evaluate = evaluate
        self.interval = int(interval)
        self.path = os.path.join(output_dir, METRICS_FILE)
        self.best_metric = best_metric
        self.patience = int(patience)
        self.manager = manager
        self.world = runtime.world
        self.is_main = runtime.is_main
        self.rows = []
        self.best = None  # (value, step)

    def before_train(self, trainer):
        self.rows = read_metrics(self.path, trainer.start_step) if trainer.start_step else []
        if self.is_main:
            if not trainer.start_step and os.path.exists(self.path):
                os.replace(self.path, f"{self.path}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        for row in self.rows:
            self._track(row)

    def _track(self, row):
        """Updates the best; returns True when ``row`` is a new best."""
        value = float(row[self.best_metric])
        if self.best is None or value > self.best[0]:
            self.best = (value, int(row["step"]))
            return True
        return False

    def since_best(self):
        return sum(1 for r in self.rows if int(r["step"]) > self.best[1]) if self.best else 0

    def ap_history(self):
        return {"step": [r["step"] for r in self.rows], "bbox_AP": [r["bbox_AP"] for r in self.rows],
                "segm_AP": [r["segm_AP"] for r in self.rows]}

    def after_step(self, trainer):
        if trainer.step % self.interval and trainer.step != trainer.total_steps:
            return
        start = time.time()
        values = [0.0, 0.0]
        if self.is_main:
            metrics = self.evaluate(trainer.net)
            values = [metrics["bbox"]["AP"], metrics["segm"]["AP"]]
        trainer.net.set_train(True)
        bbox_ap, segm_ap = share_from_main(values, self.world)
        row = {"step": trainer.step, "bbox_AP": round(bbox_ap, 3), "segm_AP": round(segm_ap, 3),
               "seconds": round(time.time() - start, 1)}
        self.rows.append(row)
        improved = self._track(row)
        if self.is_main:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if improved and self.manager is not None:
                self.manager.save_best(trainer.net, trainer.optimizer, trainer.step,
                                       trainer.step_fn.scaler_state())
        trainer.logger.info(f"eval at step {trainer.step}: bbox AP {row['bbox_AP']:.2f}  segm AP {row['segm_AP']:.2f}  "
                            f"({row['seconds']:.1f} s; best {self.best_metric} {self.best[0]:.2f} at step "
                            f"{self.best[1]}{', saved as best.ckpt' if improved and self.manager else ''})")
        if self.patience and self.since_best() >= self.patience:
            trainer.request_stop(f"early stop: {self.best_metric} has not improved for {self.patience} "
                                 f"evaluation(s) (best {self.best[0]:.2f} at step {self.best[1]})")
