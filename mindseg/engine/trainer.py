"""The training loop behind ``train.py``: a short loop of steps (:class:`Trainer`) and the hooks
around it (:mod:`mindseg.engine.hooks`) that :func:`train` assembles from the config: the output
lock, where the weights start (resume or fine-tuning), the divergence guard, logging, evaluation
while training with the best checkpoint, checkpoints and the curves."""
import contextlib
import math
import os
import sys
import time

from mindseg.engine import hooks as H
from mindseg.engine.checkpoint import CheckpointManager, claim_checkpoint_dir, model_meta
from mindseg.engine.curves import TrainCurves
from mindseg.engine.logger import setup_logger
from mindseg.engine.lr_schedule import LRSettings, build_lr_schedule, schedule_length
from mindseg.engine.precision import apply_mixed_precision
from mindseg.engine.train_step import LossScaleSettings, TrainStep, optimizer_from_config

TRAIN_INPUTS = ("image", "image_size", "gt_boxes", "gt_labels", "gt_valid", "gt_crowd", "gt_masks")


def iterate_batches(dataset, start_step, total_steps):
    """Yield ``(step, inputs)`` for steps ``start_step .. total_steps - 1``, epoch after epoch.

    A resumed run asks the pipeline to start at ``start_step`` (``Dataset.set_init_step``), which
    replays the same shuffled order the uninterrupted run would have seen.
    """
    steps_per_epoch = dataset.get_dataset_size()
    if steps_per_epoch <= 0:
        raise ValueError("the training dataset is empty (0 batches per epoch)")
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    if start_step >= total_steps:
        return
    if start_step > 0:
        dataset.set_init_step(start_step)
    iterator = dataset.create_dict_iterator(num_epochs=num_epochs, output_numpy=False)
    step = start_step
    for _ in range(start_step // steps_per_epoch, num_epochs):
        for batch in iterator:
            missing = [c for c in TRAIN_INPUTS if c not in batch]
            if missing:
                raise KeyError(f"the training dataset lacks columns {missing}; it has {sorted(batch)}")
            yield step, [batch[c] for c in TRAIN_INPUTS]
            step += 1
            if step >= total_steps:
                return


class Trainer:
    """Runs ``step_fn`` on the batches of ``dataset`` up to ``total_steps`` and calls each hook's
    ``before_train``, ``after_step`` and ``after_train`` (in reverse order), as detectron2's
    ``TrainerBase`` does. A hook ends the run early with :meth:`request_stop` or by raising."""

    def __init__(self, step_fn, dataset, lr, total_steps, logger, hooks=()):
        self.step_fn, self.dataset, self.lr, self.logger = step_fn, dataset, lr, logger
        self.net, self.optimizer = step_fn.net, step_fn.optimizer
        self.loss_names = step_fn.loss_names
        self.total_steps = total_steps
        self.hooks = list(hooks)
        self.start_step = self.step = 0
        self.outputs, self.stop_reason, self.failed = None, None, False

    def request_stop(self, reason):
        self.stop_reason = reason

    def run(self):
        started = []
        try:
            for hook in self.hooks:
                hook.before_train(self)
                started.append(hook)
            self.step = self.start_step
            for step, inputs in iterate_batches(self.dataset, self.start_step, self.total_steps):
                self.outputs = self.step_fn(*inputs)
                self.step = step + 1
                for hook in self.hooks:
                    hook.after_step(self)
                if self.stop_reason:
                    self.logger.info(self.stop_reason)
                    break
        except BaseException:
            self.failed = True
            raise
        finally:
            for hook in reversed(started):
                hook.after_train(self)
        return self.step


def _progress_bar(enabled, total, initial):
    if not (enabled and sys.stdout.isatty()):
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, dynamic_ncols=True, leave=False)


class ProgressBar(H.HookBase):
    """A tqdm bar on an interactive terminal (rank 0)."""

    def before_train(self, trainer):
        self.bar = _progress_bar(True, trainer.total_steps, trainer.start_step)

    def after_step(self, trainer):
        if self.bar is not None:
            self.bar.update(1)

    def after_train(self, trainer):
        if self.bar is not None:
            self.bar.close()


def train(cfg, net, dataset, runtime, *, resume_ckpt=None, class_info=None, hooks=()):
    """Train ``net`` on ``dataset`` (batches with the contract's columns) as ``cfg.train`` says.

    ``resume_ckpt`` (default ``cfg.train.resume_ckpt``; a file or a checkpoint folder) restores
    weights, optimizer moments, step and loss scale; ``cfg.train.pre_trained`` starts a new run
    from a checkpoint's weights instead, classes matched by name (``class_info``: the run's
    num_classes, class_names and category_ids, also saved in every checkpoint). Only rank 0 logs
    and writes into ``cfg.output_dir`` (config.yml, train.log, checkpoints/, train_curves.png,
    metrics.jsonl), which it locks for the run's life; checkpoints of an earlier run there stop
    the run unless ``cfg.train.overwrite`` moves them aside. ``hooks`` run after the standard
    ones. Returns a summary dict.
    """
    tcfg = cfg.train
    resume_ckpt = resume_ckpt or tcfg.resume_ckpt
    start = H.StartWeights(resume_ckpt, tcfg.pre_trained, (class_info or {}).get("class_names"))
    with H.OutputLock(cfg.output_dir) if runtime.is_main else contextlib.nullcontext():
        logger = setup_logger(cfg.output_dir if runtime.is_main else None, runtime.rank)
        if runtime.is_main:  # before any work: an earlier run's checkpoints stop this one at once
            ckpt_dir = os.path.join(cfg.output_dir, "checkpoints")
            aside = claim_checkpoint_dir(ckpt_dir, resume_ckpt, tcfg.overwrite)
            if aside:
                logger.info(f"--overwrite: moved the earlier checkpoints of {ckpt_dir} to {aside}")
        total_steps = schedule_length(tcfg.epochs, tcfg.max_steps, dataset.get_dataset_size())
        images_per_step = cfg.data.batch_size * runtime.world
        lr = build_lr_schedule(LRSettings.from_config(tcfg), images_per_step, total_steps)
        if tcfg.mix:
            net = apply_mixed_precision(net, tcfg.amp_level)
        net.set_train(True)
        step_fn = TrainStep(net, optimizer_from_config(net, lr, tcfg), world=runtime.world,
                            loss_scaling=LossScaleSettings(tcfg.loss_scale) if tcfg.mix else None,
                            clip_grad_norm=tcfg.clip_grad_norm,
                            lean_conv_max_channels=tcfg.lean_conv_max_channels, jit=runtime.mode == "graph")
        trainer = Trainer(step_fn, dataset, lr, total_steps, logger)
        trainer.hooks = _standard_hooks(cfg, runtime, trainer, start, class_info, images_per_step) + list(hooks)
        run_start = time.time()
        trainer.run()
    return _summary(trainer, run_start, images_per_step)


def _opening_line(cfg, runtime, total_steps, steps_per_epoch, images_per_step, lr):
    tcfg = cfg.train
    return (f"training {total_steps} steps ({steps_per_epoch} per epoch) on {runtime.nodes} "
            f"node(s) x {runtime.local_world} device(s): global batch {images_per_step} "
            f"({runtime.world} rank(s) x {cfg.data.batch_size} images), peak lr {lr.max():.6g}, "
            f"mixed precision {tcfg.amp_level if tcfg.mix else 'off'}"
            + (f", {runtime.cpu_threads} CPU kernel thread(s) per rank" if runtime.cpu_threads else ""))


def _standard_hooks(cfg, runtime, trainer, start, class_info, images_per_step):
    """The hooks of every run, in the order they act after a step: guard, log, evaluate, save."""
    tcfg, main = cfg.train, runtime.is_main
    curves = TrainCurves(cfg.output_dir, trainer.lr, trainer.total_steps) if main else None
    manager = CheckpointManager(os.path.join(cfg.output_dir, "checkpoints"), tcfg.keep_ckpt_max,
                                meta=model_meta(cfg, class_info) if class_info else None) if main else None
    describe = _opening_line(cfg, runtime, trainer.total_steps, trainer.dataset.get_dataset_size(),
                             images_per_step, trainer.lr)
    hooks = [H.RunStart(cfg, describe, write_config=main), start, _ResumeCurves(curves, start),
             H.NonFiniteGuard(bool(tcfg.mix), tcfg.max_bad_steps, tcfg.min_loss_scale),
             H.LogWindow(tcfg.log_interval, images_per_step, bool(tcfg.mix), curves)]
    evaluation = None
    if tcfg.eval_interval > 0:
        from mindseg.engine.evaluator import val_evaluator
        evaluate = val_evaluator(cfg, class_info["category_ids"], os.path.join(cfg.output_dir, "train_eval")) \
            if main else None
        evaluation = H.EvalHook(evaluate, tcfg.eval_interval, cfg.output_dir, best_metric=tcfg.best_metric,
                                patience=tcfg.early_stop_patience, manager=manager, runtime=runtime)
        hooks.append(evaluation)
    if main:
        hooks += [H.PeriodicCheckpointer(manager, tcfg.ckpt_interval, curves, evaluation), ProgressBar()]
    return hooks


class _ResumeCurves(H.HookBase):
    """A resumed run's curves continue the history of the run it resumes."""

    def __init__(self, curves, start):
        self.curves, self.start = curves, start

    def before_train(self, trainer):
        if self.curves is not None and self.start.resumed_from:
            self.curves.resume(self.start.resumed_from, trainer.start_step)


def _summary(trainer, run_start, images_per_step):
    checkpointer = next((h for h in trainer.hooks if isinstance(h, H.PeriodicCheckpointer)), None)
    log = next(h for h in trainer.hooks if isinstance(h, H.LogWindow))
    run_time = time.time() - run_start
    steps_run = max(trainer.step - trainer.start_step, 0)
    skipped = getattr(log, "total_skipped", 0)
    summary = {"total_steps": trainer.total_steps, "start_step": trainer.start_step, "steps_run": steps_run,
               "skipped_steps": skipped, "losses": log.last_losses, "loss_scale": trainer.step_fn.loss_scale,
               "time_s": run_time, "images_per_s": images_per_step * steps_run / max(run_time, 1e-9),
               "checkpoints": [p for _, p in checkpointer.saved] if checkpointer else [],
               "last_checkpoint": checkpointer.last_checkpoint if checkpointer else None,
               "stopped_early": trainer.stop_reason}
    trainer.logger.info(f"done: {steps_run} steps in {run_time:.1f} s, {skipped} skipped for overflow")
    return summary
