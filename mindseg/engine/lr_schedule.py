"""Learning rate per step: linear scaling rule, linear warmup, then step decay (detectron2's
'WarmupMultiStepLR') or a cosine from the peak down to 0 at the last step ('WarmupCosineLR')."""
import bisect
from dataclasses import dataclass

import numpy as np


def scaled_lr(base_lr, total_batch, reference_batch):
    """Linear scaling rule: ``base_lr`` is tuned for ``reference_batch`` images per step."""
    if total_batch <= 0 or reference_batch <= 0:
        raise ValueError(f"batch sizes must be positive, got total_batch={total_batch}, "
                         f"reference_batch={reference_batch}")
    return base_lr * total_batch / reference_batch


SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class LRSettings:
    """The shape of a schedule: ``base_lr`` tuned for ``reference_batch`` images per step, a
    linear warmup over ``warmup_iters`` steps from ``warmup_factor`` times the peak, then
    ``schedule`` "step" (times ``gamma`` at each of ``steps``) or "cosine". The defaults give a
    constant lr."""
    base_lr: float
    reference_batch: int
    warmup_iters: int = 0
    warmup_factor: float = 1.0
    steps: tuple = ()
    gamma: float = 0.1
    schedule: str = "step"

    @classmethod
    def from_config(cls, train_cfg):
        """The settings of a config's ``train`` section."""
        return cls(base_lr=train_cfg.base_lr, reference_batch=train_cfg.reference_batch_size,
                   warmup_iters=train_cfg.warmup_iters, warmup_factor=train_cfg.warmup_factor,
                   steps=tuple(train_cfg.lr_steps), gamma=train_cfg.gamma, schedule=train_cfg.lr_schedule)


def build_lr_schedule(settings, total_batch, max_steps):
    """Return the lr of every step ``0 .. max_steps - 1`` for ``total_batch`` images per step as
    a float32 array (``settings``: an :class:`LRSettings`).

    ``schedule`` "step": lr(i) = scaled_lr * warmup(i) * gamma ** (number of ``steps`` <= i);
    "cosine": lr(i) = scaled_lr * warmup(i) * (1 + cos(pi * i / max_steps)) / 2 (``steps``
    and ``gamma`` unused). warmup(i) rises linearly from ``warmup_factor`` at i = 0 to 1 at
    i = ``warmup_iters``.
    """
    if max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    schedule, warmup_iters, warmup_factor = settings.schedule, settings.warmup_iters, settings.warmup_factor
    if schedule not in SCHEDULES:
        raise ValueError(f"train.lr_schedule: '{schedule}' is not one of {SCHEDULES}")
    steps = list(settings.steps)
    if steps != sorted(steps):
        raise ValueError(f"lr steps must be increasing, got {steps}")
    peak = scaled_lr(settings.base_lr, total_batch, settings.reference_batch)
    lrs = np.empty(max_steps, np.float64)
    for i in range(max_steps):
        if schedule == "cosine":
            factor = 0.5 * (1.0 + np.cos(np.pi * i / max_steps))
        else:
            factor = settings.gamma ** bisect.bisect_right(steps, i)
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
