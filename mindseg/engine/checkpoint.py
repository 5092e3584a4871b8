"""Training checkpoints that survive a kill at any moment, and exact resume.

A checkpoint holds the network weights, the optimizer moments and its ``global_step`` (the
position in the lr schedule), and, appended, the step and the loss-scaler state. Every file is
written under a temporary name in the same folder, fsynced and renamed into place, and the
``latest`` pointer is replaced the same way, so a crash leaves the previous checkpoint and the
pointer intact.
"""
import glob
import os
import re

import mindspore as ms
from mindspore import nn

LATEST = "latest"
TMP_PREFIX = ".tmp_"
CKPT_PATTERN = re.compile(r"^ckpt_(\d+)\.ckpt$")
SKIP_ON_LOAD = ("learning_rate",)
# parameters a checkpoint may lack (weights-only and older files): the samplers' step counter
OPTIONAL_ON_LOAD = ("sample_counter",)  # layers.step_random.COUNTER_NAME


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` so that readers see the old or the new content, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)


class TrainState(nn.Cell):
    """Groups the network and the optimizer so that one save / load covers both."""

    def __init__(self, net, optimizer):
        super().__init__(auto_prefix=False)
        self.net = net
        self.optimizer = optimizer


def save_train_state(path, net, optimizer, step, extra=None):
    """Write weights + optimizer state + ``step`` (+ ``extra`` scalars) to ``path`` atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}_{os.path.basename(path)}")
    append = {"step": int(step)}
    append.update(extra or {})
    ms.save_checkpoint(TrainState(net, optimizer), tmp, append_dict=append)
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(directory)
    return path


def load_train_state(path, net, optimizer=None):
    """Load a checkpoint into ``net`` (and ``optimizer``); returns the appended scalars as a dict
    (``step``, ``loss_scale``, ``loss_scale_counter`` when present).

    The optimizer's lr array is not taken from the file: the schedule comes from the config.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        params = ms.load_checkpoint(path)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable MindSpore checkpoint ({err})") from None
    extra = {}
    for key in ("step", "loss_scale", "loss_scale_counter"):
        if key in params:
            extra[key] = params.pop(key).asnumpy().item()
    for key in SKIP_ON_LOAD:
        params.pop(key, None)
    target = TrainState(net, optimizer) if optimizer is not None else net
    not_loaded, _ = ms.load_param_into_net(target, params, strict_load=False)
    missing = [name for name in not_loaded if name not in SKIP_ON_LOAD
               and name.rsplit(".", 1)[-1] not in OPTIONAL_ON_LOAD]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} parameters of the network, "
                         f"e.g. {missing[:5]}")
    return extra


def read_latest(directory):
    """Path of the checkpoint the ``latest`` pointer of ``directory`` names, or None."""
    pointer = os.path.join(directory, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, "r", encoding="utf-8") as f:
        name = f.read().strip()
    path = os.path.join(directory, name)
    return path if name and os.path.isfile(path) else None


def resolve_checkpoint(path):
    """A checkpoint file as given, or the one a folder's ``latest`` pointer names."""
    if os.path.isdir(path):
        latest = read_latest(path)
        if latest is None:
            raise FileNotFoundError(f"{path}: folder has no valid '{LATEST}' checkpoint pointer")
        return latest
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


class CheckpointManager:
    """Writes ``ckpt_<step>.ckpt`` files into ``directory``, keeps the newest ``keep_max`` and
    points ``latest`` at the newest. Leftover temporary files of a killed write are removed."""

    def __init__(self, directory, keep_max=5):
        if keep_max < 1:
            raise ValueError(f"train.keep_ckpt_max must be >= 1, got {keep_max}")
        self.directory = directory
        self.keep_max = keep_max
        os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, TMP_PREFIX + "*")):
            os.remove(stale)

    def checkpoints(self):
        """Saved checkpoint paths, oldest first."""
        found = []
        for name in os.listdir(self.directory):
            match = CKPT_PATTERN.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.directory, name)))
        return [path for _, path in sorted(found)]

    def save(self, net, optimizer, step, extra=None):
        path = os.path.join(self.directory, f"ckpt_{step:08d}.ckpt")
        save_train_state(path, net, optimizer, step, extra)
        atomic_write_text(os.path.join(self.directory, LATEST), os.path.basename(path) + "\n")
        for old in self.checkpoints()[:-self.keep_max]:
            os.remove(old)
        return path

    def latest(self):
        return read_latest(self.directory)
