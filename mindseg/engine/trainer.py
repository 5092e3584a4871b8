"""The training loop behind ``train.py``: schedule, optimizer, step, logging, checkpoints, resume."""
import math
import os
import sys
import time

import numpy as np

from mindseg.config import dump_config
from mindseg.engine.checkpoint import (CheckpointManager, claim_checkpoint_dir, load_train_state,
                                       model_meta, resolve_checkpoint)
from mindseg.engine.curves import TrainCurves
from mindseg.engine.logger import format_train_line, setup_logger
from mindseg.engine.lr_schedule import build_lr_schedule, schedule_length
from mindseg.engine.precision import apply_mixed_precision
from mindseg.engine.train_step import TrainStep, optimizer_from_config

TRAIN_INPUTS = ("image", "image_size", "gt_boxes", "gt_labels", "gt_valid", "gt_crowd", "gt_masks")


def iterate_batches(dataset, start_step, total_steps, input_columns=TRAIN_INPUTS):
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
            missing = [c for c in input_columns if c not in batch]
            if missing:
                raise KeyError(f"the training dataset lacks columns {missing}; it has {sorted(batch)}")
            yield step, [batch[c] for c in input_columns]
            step += 1
            if step >= total_steps:
                return


def _progress_bar(enabled, total, initial):
    if not (enabled and sys.stdout.isatty()):
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, dynamic_ncols=True, leave=False)


def train(cfg, net, dataset, runtime, *, resume_ckpt=None, stop_after=None,
          input_columns=TRAIN_INPUTS, class_info=None):
    """Train ``net`` on ``dataset`` (batches with the contract's columns) as ``cfg.train`` says.

    ``resume_ckpt`` (default ``cfg.train.resume_ckpt``; a file or a checkpoint folder) restores
    weights, optimizer moments, step and loss scale. Only rank 0 logs, writes the resolved config
    and checkpoints (into ``cfg.output_dir/checkpoints``). ``stop_after`` ends the run after that
    many steps of the schedule (a checkpoint is written there), as a preempted job would.
    With every checkpoint rank 0 also redraws ``cfg.output_dir/train_curves.png`` (losses and
    lr against the step; :mod:`mindseg.engine.curves`).
    Checkpoints of an earlier run in that folder stop the run unless ``cfg.train.overwrite``
    (then they are moved aside first). ``class_info`` (num_classes, class_names, category_ids)
    is saved in every checkpoint. Returns a summary dict.
    """
    tcfg = cfg.train
    ckpt_dir = os.path.join(cfg.output_dir, "checkpoints")
    aside = claim_checkpoint_dir(ckpt_dir, resume_ckpt or tcfg.resume_ckpt,
                                 tcfg.overwrite) if runtime.is_main else None
    logger = setup_logger(cfg.output_dir if runtime.is_main else None, runtime.rank)
    if aside:
        logger.info(f"--overwrite: moved the earlier checkpoints of {ckpt_dir} to {aside}")
    if runtime.is_main:
        dump_config(cfg, cfg.output_dir)
    steps_per_epoch = dataset.get_dataset_size()
    total_steps = schedule_length(tcfg.epochs, tcfg.max_steps, steps_per_epoch)
    images_per_step = cfg.data.batch_size * runtime.world
    lr = build_lr_schedule(tcfg.base_lr, images_per_step, tcfg.reference_batch_size,
                           tcfg.warmup_iters, tcfg.warmup_factor, tcfg.lr_steps, tcfg.gamma,
                           total_steps, tcfg.lr_schedule)
    if tcfg.mix:
        net = apply_mixed_precision(net, tcfg.amp_level)
    net.set_train(True)
    optimizer = optimizer_from_config(net, lr, tcfg)
    step_fn = TrainStep(net, optimizer, world=runtime.world,
                        loss_scale=tcfg.loss_scale if tcfg.mix else None,
                        clip_grad_norm=tcfg.clip_grad_norm, jit=runtime.mode == "graph")
    loss_names = step_fn.loss_names or tuple(f"loss_{i}" for i in range(64))

    start_step = 0
    curves = TrainCurves(cfg.output_dir, lr, total_steps) if runtime.is_main else None
    resume_ckpt = resume_ckpt or tcfg.resume_ckpt
    if resume_ckpt:
        path = resolve_checkpoint(resume_ckpt)
        state = load_train_state(path, net, optimizer)
        step_fn.load_scaler_state(state)
        start_step = int(state.get("step", step_fn.step_index))
        logger.info(f"resumed from {path} at step {start_step}")
        if curves is not None:
            curves.resume(path, start_step)
    manager = CheckpointManager(ckpt_dir, tcfg.keep_ckpt_max,
                                meta=model_meta(cfg, class_info) if class_info else None
                                ) if runtime.is_main else None

    logger.info(f"training {total_steps} steps ({steps_per_epoch} per epoch) on {runtime.nodes} "
                f"node(s) x {runtime.local_world} device(s): global batch {images_per_step} "
                f"({runtime.world} rank(s) x {cfg.data.batch_size} images), peak lr {lr.max():.6g}, "
                f"mixed precision {tcfg.amp_level if tcfg.mix else 'off'}"
                + (f", {runtime.cpu_threads} CPU kernel thread(s) per rank" if runtime.cpu_threads else ""))
    bar = _progress_bar(runtime.is_main, total_steps, start_step)
    skipped, window_skipped, window_count, saved = 0, 0, 0, []
    window_losses, window_start, run_start = [], time.time(), time.time()
    last_losses, step = {}, start_step
    end_step = total_steps if stop_after is None else min(int(stop_after), total_steps)
    for step, inputs in iterate_batches(dataset, start_step, end_step, input_columns):
        total, losses, finite = step_fn(*inputs)
        if not bool(finite):
            skipped += 1
            window_skipped += 1
        else:
            window_losses.append([float(total)] + [float(x) for x in losses])
        done = step + 1
        window_count += 1
        if bar is not None:
            bar.update(1)
        if done % tcfg.log_interval == 0 or done == end_step:
            step_time = (time.time() - window_start) / window_count
            if window_losses:
                mean = np.mean(window_losses, axis=0)
                last_losses = {"total": float(mean[0])}
                last_losses.update({name: float(v) for name, v in zip(loss_names, mean[1:])})
                if curves is not None:
                    curves.add(done, last_losses)
            line = format_train_line(done, total_steps, last_losses, float(lr[step]), step_time,
                                     images_per_step / max(step_time, 1e-9),
                                     step_time * (total_steps - done),
                                     step_fn.loss_scale if tcfg.mix else None, window_skipped)
            logger.info(line)
            window_losses, window_skipped, window_count, window_start = [], 0, 0, time.time()
        if manager is not None and (done % tcfg.ckpt_interval == 0 or done == end_step):
            saved.append(manager.save(net, optimizer, done, step_fn.scaler_state()))
            curves.write()
    if bar is not None:
        bar.close()
    run_time = time.time() - run_start
    steps_run = max(end_step - start_step, 0)
    summary = {"total_steps": total_steps, "start_step": start_step, "steps_run": steps_run,
               "skipped_steps": skipped, "losses": last_losses,
               "loss_scale": step_fn.loss_scale, "time_s": run_time,
               "images_per_s": images_per_step * steps_run / max(run_time, 1e-9),
               "checkpoints": saved, "last_checkpoint": saved[-1] if saved else None}
    logger.info(f"done: {steps_run} steps in {run_time:.1f} s, {skipped} skipped for overflow")
    return summary
