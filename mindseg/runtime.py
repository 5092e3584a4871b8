"""Device, execution mode, seeding and data-parallel initialisation for every entry script.

Launchers are recognised from the environment they leave behind:

- msrun (MindSpore's dynamic cluster): ``MS_ROLE`` and ``MS_WORKER_NUM``;
- ``mpirun`` (``OMPI_COMM_WORLD_SIZE`` and no ``MS_ROLE``): each rank joins the dynamic cluster
  itself (:func:`mpirun_cluster_env`), world rank 0 also starting the scheduler, because
  MindSpore cannot initialise its CPU backend from OpenMPI alone (docs/platform_notes.md);
- an Ascend rank table launch: ``RANK_SIZE`` (with ``RANK_ID``).

Initial weights are not broadcast between ranks (docs/platform_notes.md), so every rank is seeded the same.
"""
import os
import random
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

# Everything that differs by device, in one place (docs/platforms.md explains each value):
# - jit_level for GRAPH mode: O0 (kernel by kernel) on Ascend and GPU. Ascend's O2 hands the whole
#   graph to CANN's graph engine, which refuses dynamic shapes and adds compile time, and its
#   default differs between Ascend generations; O0 runs the same way on every device. The CPU
#   keeps MindSpore's default (None), the setting every CPU figure in docs/ was measured with.
# - env: set (unless the user set them) before the collective library starts. On Ascend the
#   first all-reduce waits for every rank to compile its training graph, which can pass HCCL's
#   120 s default connect timeout; NCCL needs no setting.
# - comm: the collective backend init() joins (msrun, mpirun and rank-table launches alike).
DEVICE_SETTINGS = {
    "Ascend": {"jit_level": "O0", "comm": "hccl", "env": {"HCCL_CONNECT_TIMEOUT": "1200"}},
    "GPU": {"jit_level": "O0", "comm": "nccl", "env": {}},
    "CPU": {"jit_level": None, "comm": "mccl", "env": {}},
}
BACKENDS = {target: settings["comm"] for target, settings in DEVICE_SETTINGS.items()}
MODES = ("graph", "pynative")
DEFAULT_SCHED_PORT = 8119
SCHEDULER_START_S = 300.0


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
    local_world: int = 1
    cpu_threads: int = 0  # kernel threads set per CPU rank (0: MindSpore's default)

    @property
    def nodes(self):
        """Servers in the job: ``world`` ranks, ``local_world`` per server."""
        return max(1, -(-self.world // max(self.local_world, 1)))


def detect_launcher(env=None):
    """Return ``(launcher, world)`` for the launch that started this process, from ``env``.

    ``launcher`` is ``"msrun"`` (a dynamic cluster already set up, as msrun does), ``"mpirun"``,
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


def mpirun_cluster_env(env):
    """MindSpore dynamic-cluster variables for the OpenMPI rank described by ``env``.

    World size and rank come from OpenMPI; the scheduler runs beside world rank 0 at
    ``MS_SCHED_HOST`` (default 127.0.0.1, for a job on one host) and ``MS_SCHED_PORT``.
    """
    world, rank = int(env["OMPI_COMM_WORLD_SIZE"]), int(env.get("OMPI_COMM_WORLD_RANK", 0))
    local_world = int(env.get("OMPI_COMM_WORLD_LOCAL_SIZE", world))
    host = env.get("MS_SCHED_HOST", "")
    if not host:
        if local_world != world:
            raise ValueError(f"mpirun over several hosts ({world} ranks, {local_world} on this one): "
                               "set MS_SCHED_HOST to world rank 0's address and pass it with "
                               "`mpirun -x MS_SCHED_HOST`, or launch with scripts/run_distribute_train.sh")
        host = "127.0.0.1"
    return {"MS_WORKER_NUM": str(world), "MS_NODE_ID": str(rank), "MS_ROLE": "MS_WORKER",
            "MS_SCHED_HOST": host, "MS_SCHED_PORT": str(env.get("MS_SCHED_PORT") or DEFAULT_SCHED_PORT)}


def start_scheduler(cluster_env, device_target):
    """Start the dynamic cluster's scheduler process (``MS_ROLE=MS_SCHED``) with ``cluster_env``.

    It exits by itself once every worker has unregistered at exit, so nobody waits for it (a
    wait in this process would hold back its own unregistering). Returns the ``Popen``."""
    env = dict(os.environ, **cluster_env)
    env.update(MS_ROLE="MS_SCHED", MS_NODE_ID="sched")
    code = ("import mindspore as ms; from mindspore.communication import init; "
            f"ms.set_device({device_target!r}); init({DEVICE_SETTINGS[device_target]['comm']!r})")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)


def wait_for_scheduler(host, port, proc=None, timeout_s=SCHEDULER_START_S):
    """Block until the scheduler accepts connections: a worker that calls ``init()`` before that
    retries only after a long back-off (minutes on the CPU)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the MindSpore scheduler exited with status {proc.returncode} "
                               f"(is port {port} on {host} taken? set MS_SCHED_PORT)")
        try:
            with socket.create_connection((host, int(port)), timeout=2.0):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"no MindSpore scheduler at {host}:{port} after {timeout_s:.0f} s "
                       "(world rank 0 starts it; check MS_SCHED_HOST / MS_SCHED_PORT)")


def local_layout(env, launcher, rank, world):
    """``(local_rank, local_world)``: this process's place among the ranks of its server.

    OpenMPI says it directly; msrun gives each worker its local index in ``DEVICE_ID`` and
    ``scripts/run_msrun_train.sh`` exports ``LOCAL_WORLD_SIZE``; otherwise the communication
    library's host-based count (which takes two "servers" on one host for one server).
    """
    if env.get("OMPI_COMM_WORLD_LOCAL_RANK"):
        return (int(env["OMPI_COMM_WORLD_LOCAL_RANK"]),
                int(env.get("OMPI_COMM_WORLD_LOCAL_SIZE", world)))
    if launcher == "msrun" and env.get("LOCAL_WORLD_SIZE") and env.get("DEVICE_ID"):
        return int(env["DEVICE_ID"]), int(env["LOCAL_WORLD_SIZE"])
    from mindspore.communication import get_local_rank, get_local_rank_size
    try:
        return get_local_rank(), get_local_rank_size()
    except (RuntimeError, ValueError):
        return rank, world


def seed_everything(seed):
    """Seed MindSpore (ops and dataset), numpy and random with the same value."""
    import mindspore as ms
    import mindspore.dataset as ds
    ms.set_seed(seed)
    ds.config.set_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class DeviceError(ValueError):
    """A device_target this MindSpore installation cannot run on."""


def _backend_missing(device_target):
    """Why the installed MindSpore cannot run on ``device_target``, or '' when it can (or when
    this MindSpore has no way to tell: then ``set_device`` decides)."""
    import mindspore as ms
    try:
        from mindspore._c_expression import MSContext
        context = MSContext.get_instance()
        if context.is_pkg_support_device(device_target):
            return ""
        load_error = context.load_plugin_error()
    except (ImportError, AttributeError, RuntimeError):
        return ""
    plugins = os.path.join(os.path.dirname(ms.__file__), "lib", "plugin")
    if device_target == "GPU":
        cuda = sorted(n.rsplit(".so.", 1)[-1] for n in os.listdir(plugins) if n.startswith("libmindspore_gpu.so."))
        if not cuda:
            return "this MindSpore build has no GPU backend"
        return (f"its GPU backend (for CUDA {' / '.join(cuda)}) did not load: the CUDA runtime and "
                f"cuDNN libraries (libcudart, libcudnn) are not on this machine's library path")
    missing = re.findall(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", load_error)
    if not os.path.exists(os.path.join(plugins, "libmindspore_ascend.so.2")):
        return "this MindSpore build has no Ascend backend"
    return (f"its Ascend backend did not load ({', '.join(dict.fromkeys(missing)) or 'no Ascend device'} "
            f"not found): install CANN and source its set_env.sh")


def check_device_target(device_target):
    """A clear one-line :class:`DeviceError` when this MindSpore cannot run on ``device_target``
    (instead of MindSpore's Python and C++ traceback from ``set_device``)."""
    if device_target not in BACKENDS:
        raise DeviceError(f"device_target must be one of {sorted(BACKENDS)}, got {device_target!r}")
    reason = _backend_missing(device_target)
    if reason:
        import mindspore as ms
        usable = [t for t in BACKENDS if not _backend_missing(t)]
        raise DeviceError(f"--device_target {device_target}: MindSpore {ms.__version__} here runs "
                          f"only on {', '.join(usable)}; {reason}")


def apply_device_settings(device_target, mode):
    """The settings of DEVICE_SETTINGS for ``device_target``: jit_level in GRAPH mode, the
    collective library's environment (a value the user set wins). (Op limits by device, such as
    NMSWithMask's box count, live beside the op: mindseg.models.layers.nms.NATIVE_MAX_BOXES.)"""
    import mindspore as ms
    settings = DEVICE_SETTINGS[device_target]
    for key, value in settings["env"].items():
        os.environ.setdefault(key, value)
    if mode == "graph" and settings["jit_level"]:
        ms.set_context(jit_config={"jit_level": settings["jit_level"]})


def set_device_and_mode(device_target, mode, device_id=None):
    """``ms.set_device`` + ``ms.set_context(mode=...)`` (the MindSpore 2.x API), after checking
    that this MindSpore can run on ``device_target``, and the device's DEVICE_SETTINGS."""
    import mindspore as ms
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_device_target(device_target)
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
    apply_device_settings(device_target, mode)


def cpu_threads_per_rank(cpu_count, local_world):
    """Kernel threads for each of ``local_world`` CPU ranks sharing ``cpu_count`` cores: an equal
    share, at least one. Every rank keeping MindSpore's default pool (one thread per core)
    oversubscribes the cores ``local_world`` times over."""
    return max(1, int(cpu_count or 1) // max(1, int(local_world)))


def split_cpu_threads(local_world):
    """Give each of ``local_world`` CPU ranks on this server its share of the cores (see
    :func:`cpu_threads_per_rank`); one rank keeps MindSpore's default. Returns the count set, or
    0. Must run before the first kernel."""
    if local_world <= 1:
        return 0
    import mindspore as ms
    threads = cpu_threads_per_rank(os.cpu_count(), local_world)
    try:
        ms.device_context.cpu.op_tuning.threads_num(threads)
    except RuntimeError:  # set already (it can be set once): the earlier choice stands
        return 0
    return threads


def init_distributed(device_target, launcher, world):
    """``init()`` the collective backend and set DATA_PARALLEL with mean gradients; under a plain
    ``mpirun`` first join the dynamic cluster (:func:`mpirun_cluster_env`).

    Returns ``(rank, world)`` as the communication library reports them.
    """
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init
    if launcher == "mpirun":
        cluster = mpirun_cluster_env(os.environ)
        scheduler = start_scheduler(cluster, device_target) if cluster["MS_NODE_ID"] == "0" else None
        wait_for_scheduler(cluster["MS_SCHED_HOST"], cluster["MS_SCHED_PORT"], scheduler)
        os.environ.update(cluster)
    init(DEVICE_SETTINGS[device_target]["comm"])
    rank, world = get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=world)
    return rank, world


def init_runtime(cfg, env=None):
    """Set device and mode, seed every rank identically, and join the data-parallel group when
    a launcher started several processes. Reads ``cfg.device_target``, ``cfg.mode``, ``cfg.seed``."""
    env = os.environ if env is None else env
    launcher, world = detect_launcher(env)
    device_id = env.get("DEVICE_ID") or env.get("OMPI_COMM_WORLD_LOCAL_RANK")  # mpirun: local rank
    device_id = int(device_id) if device_id and cfg.device_target != "CPU" else None
    set_device_and_mode(cfg.device_target, cfg.mode, device_id)
    rank, local_rank, local_world = 0, 0, 1
    if launcher != "none":
        rank, world = init_distributed(cfg.device_target, launcher, world)
        local_rank, local_world = local_layout(env, launcher, rank, world)
    cpu_threads = split_cpu_threads(local_world) if cfg.device_target == "CPU" else 0
    seed_everything(int(cfg.seed))
    return RuntimeInfo(rank=rank, world=world, device_target=cfg.device_target, mode=cfg.mode,
                       is_main=rank == 0, local_rank=local_rank, launcher=launcher,
                       local_world=local_world, cpu_threads=cpu_threads)
