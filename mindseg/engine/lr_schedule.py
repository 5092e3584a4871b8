"""Learning rate per step: linear scaling rule, linear warmup, then step decay (detectron2's
'WarmupMultiStepLR') or a cosine from the peak down to 0 at the last step ('WarmupCosineLR')."""
import bisect

import numpy as np


def scaled_lr(base_lr, total_batch, reference_batch):
    """Linear scaling rule: ``base_lr`` is tuned for ``reference_batch`` images per step."""
    if total_batch <= 0 or reference_batch <= 0:
        raise ValueError(f"batch sizes must be positive, got total_batch={total_batch}, "
                         f"reference_batch={reference_batch}")
    return base_lr * total_batch / reference_batch


SCHEDULES = ("step", "cosine")


def build_lr_schedule(base_lr, total_batch, reference_batch, warmup_iters, warmup_factor,
                      steps, gamma, max_steps, schedule="step"):
    """Return the lr of every step ``0 .. max_steps - 1`` as a float32 array.

    ``schedule="step"``: lr(i) = scaled_lr * warmup(i) * gamma ** (number of ``steps`` <= i);
    ``"cosine"``: lr(i) = scaled_lr * warmup(i) * (1 + cos(pi * i / max_steps)) / 2 (``steps``
    and ``gamma`` unused). warmup(i) rises linearly from ``warmup_factor`` at i = 0 to 1 at
    i = ``warmup_iters``.
    """
    if max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    if schedule not in SCHEDULES:
        raise ValueError(f"train.lr_schedule: '{schedule}' is not one of {SCHEDULES}")
    steps = list(steps)
    if steps != sorted(steps):
        raise ValueError(f"lr steps must be increasing, got {steps}")
    peak = scaled_lr(base_lr, total_batch, reference_batch)
    lrs = np.empty(max_steps, np.float64)
    for i in range(max_steps):
        if schedule == "cosine":
            factor = 0.5 * (1.0 + np.cos(np.pi * i / max_steps))
        else:
            factor = gamma ** bisect.bisect_right(steps, i)
        if i < warmup_iters:
            alpha = i / warmup_iters
            factor *= warmup_factor * (1.0 - alpha) + alpha
        lrs[i] = peak * factor
    return lrs.astype(np.float32)


def schedule_length(epochs, max_steps, steps_per_epoch):
    """Steps to train: ``max_steps`` when > 0, else ``epochs * steps_per_epoch``."""
    if max_steps > 0:
        return int(max_steps)
    if epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"need train.max_steps > 0 or train.epochs > 0 with a non-empty dataset "
                         f"(epochs={epochs}, steps_per_epoch={steps_per_epoch})")
    return int(epochs * steps_per_epoch)
