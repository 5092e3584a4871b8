"""Device, execution mode, seeding and data-parallel initialisation for every entry script.

Launchers are recognised from the environment they leave behind:

- msrun, or ``scripts/run_distribute_train.sh`` (mpirun mapped onto the dynamic cluster):
  ``MS_ROLE`` and ``MS_WORKER_NUM``;
- a plain ``mpirun`` (works on Ascend / GPU only): ``OMPI_COMM_WORLD_SIZE``;
- an Ascend rank table launch: ``RANK_SIZE`` (with ``RANK_ID``).

Initial weights are not broadcast between ranks (PLATFORM.md), so every rank is seeded the same.
"""
import os
import random
from dataclasses import dataclass

import numpy as np

BACKENDS = {"Ascend": "hccl", "GPU": "nccl", "CPU": "mccl"}
MODES = ("graph", "pynative")


@dataclass(frozen=True)
class RuntimeInfo:
    """Where this process runs: its rank among ``world`` data-parallel ranks, and on what."""
    rank: int = 0
    world: int = 1
    device_target: str = "CPU"
    mode: str = "pynative"
    is_main: bool = True
    local_rank: int = 0
    launcher: str = "none"


def detect_launcher(env=None):
    """Return ``(launcher, world)`` for the launch that started this process, from ``env``.

    ``launcher`` is ``"msrun"`` (dynamic cluster: msrun or the mpirun wrapper), ``"mpirun"``,
    ``"rank_table"`` or ``"none"``.
    """
    env = os.environ if env is None else env
    if env.get("MS_ROLE") and env.get("MS_WORKER_NUM"):
        return "msrun", int(env["MS_WORKER_NUM"])
    if env.get("OMPI_COMM_WORLD_SIZE"):
        return "mpirun", int(env["OMPI_COMM_WORLD_SIZE"])
    if env.get("RANK_SIZE") and int(env["RANK_SIZE"]) > 1:
        return "rank_table", int(env["RANK_SIZE"])
    return "none", 1


def seed_everything(seed):
    """Seed MindSpore (ops and dataset), numpy and random with the same value."""
    import mindspore as ms
    import mindspore.dataset as ds
    ms.set_seed(seed)
    ds.config.set_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def set_device_and_mode(device_target, mode, device_id=None):
    """``ms.set_device`` + ``ms.set_context(mode=...)`` (the MindSpore 2.x API)."""
    import mindspore as ms
    if device_target not in BACKENDS:
        raise ValueError(f"device_target must be one of {sorted(BACKENDS)}, got {device_target!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        if device_id is None:
            ms.set_device(device_target)
        else:
            ms.set_device(device_target, device_id)
    except RuntimeError:
        # the device is fixed once a kernel has run; a second call for the same one is harmless
        if ms.get_context("device_target") != device_target:
            raise
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)


def init_distributed(device_target, launcher, world):
    """``init()`` the collective backend and set DATA_PARALLEL with mean gradients.

    Returns ``(rank, world, local_rank)`` as the communication library reports them.
    """
    import mindspore as ms
    from mindspore.communication import get_group_size, get_local_rank, get_rank, init
    if launcher == "mpirun" and device_target == "CPU":
        raise RuntimeError("a plain `mpirun python ...` cannot initialise MindSpore's CPU collective "
                           "backend; launch with `bash scripts/run_distribute_train.sh N ...` (mpirun "
                           "mapped onto the dynamic cluster) or `bash scripts/run_msrun_train.sh N ...`")
    init(BACKENDS[device_target])
    rank, world = get_rank(), get_group_size()
    try:
        local_rank = get_local_rank()
    except (RuntimeError, ValueError):
        local_rank = rank
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=world)
    return rank, world, local_rank


def init_runtime(cfg, env=None):
    """Set device and mode, seed every rank identically, and join the data-parallel group when
    a launcher started several processes. Reads ``cfg.device_target``, ``cfg.mode``, ``cfg.seed``."""
    env = os.environ if env is None else env
    launcher, world = detect_launcher(env)
    device_id = int(env["DEVICE_ID"]) if env.get("DEVICE_ID") and cfg.device_target != "CPU" else None
    set_device_and_mode(cfg.device_target, cfg.mode, device_id)
    rank, local_rank = 0, 0
    if launcher != "none":
        rank, world, local_rank = init_distributed(cfg.device_target, launcher, world)
    seed_everything(int(cfg.seed))
    return RuntimeInfo(rank=rank, world=world, device_target=cfg.device_target, mode=cfg.mode,
                       is_main=rank == 0, local_rank=local_rank, launcher=launcher)
