"""Training checkpoints that survive a kill at any moment, and exact resume.

A checkpoint holds the network weights, the optimizer moments and its ``global_step`` (the
position in the lr schedule), and, appended, the step and the loss-scaler state and the model
metadata deployment needs (:func:`model_meta`: model, class count, names and ids). Every file is
written under a temporary name in the same folder, fsynced and renamed into place, and the
``latest`` pointer is replaced the same way, so a crash leaves the previous checkpoint and the
pointer intact. A run never writes over or rotates away another run's checkpoints
(:func:`claim_checkpoint_dir`, :class:`CheckpointManager`).
"""
import glob
import json
import os
import re
import time

import mindspore as ms
from mindspore import nn

LATEST = "latest"
BEST = "best.ckpt"  # the best checkpoint by train.best_metric (evaluation while training)
TMP_PREFIX = ".tmp_"
CKPT_PATTERN = re.compile(r"^ckpt_(\d+)\.ckpt$")
SKIP_ON_LOAD = ("learning_rate",)
META_KEY = "mindseg_meta"  # appended JSON string: model_meta()
# parameters a checkpoint may lack (weights-only and older files): the samplers' step counter
OPTIONAL_ON_LOAD = ("sample_counter",)  # layers.step_random.COUNTER_NAME


# Checkpoints that name the RoI-head parts at the top level (``box_head.*``, ``mask_head.*``,
# ``maskiou_head.*``, and the optimizer's moments of them, ``moment1.box_head.*``), as mindseg
# wrote them before those parts were grouped under ``roi_heads``, load under the grouped names.
_TOP_LEVEL_HEAD = re.compile(r"(^|\.)(box_head|mask_head|maskiou_head)\.")


def current_names(params, own_names):
    """``params`` ({name: value} read from a checkpoint) with each name the network lacks but
    knows under ``roi_heads.`` renamed to that; every other name as it was."""
    renamed = {}
    for name, value in params.items():
        if name not in own_names:
            grouped = _TOP_LEVEL_HEAD.sub(r"\1roi_heads.\2.", name, count=1)
            name = grouped if grouped in own_names else name
        renamed[name] = value
    return renamed


def _available_memory():
    """Bytes the kernel can hand out now (MemAvailable: free memory plus the page cache it takes
    back on demand), or None where /proc/meminfo does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory_like_the_kernel():
    """MindSpore 2.10's ``load_checkpoint`` refuses a file larger than the *free* memory
    (``SC_AVPHYS_PAGES``), which leaves out the page cache. After heavy file I/O a 24 GB machine
    has 0.2 GB free and 22 GB available, and a 220 MB checkpoint fails to load. Make its check
    count the available memory (nothing changes on a MindSpore without that check)."""
    from mindspore.train import serialization
    free_memory = getattr(serialization, "_get_available_memory", None)
    if free_memory is None or getattr(free_memory, "counts_page_cache", False):
        return

    def available_memory():
        memory = _available_memory()
        return free_memory() if memory is None else memory

    available_memory.counts_page_cache = True
    serialization._get_available_memory = available_memory


def load_checkpoint_file(path, **kwargs):
    """``mindspore.load_checkpoint`` with its free-memory check counting the page cache, as the
    kernel does (:func:`_check_memory_like_the_kernel`, applied here rather than at import)."""
    _check_memory_like_the_kernel()
    return ms.load_checkpoint(path, **kwargs)


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
        params = load_checkpoint_file(path)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable MindSpore checkpoint ({err})") from None
    extra = {}
    for key in ("step", "loss_scale", "loss_scale_counter"):
        if key in params:
            extra[key] = params.pop(key).asnumpy().item()
    for key in SKIP_ON_LOAD + (META_KEY,):
        params.pop(key, None)
    target = TrainState(net, optimizer) if optimizer is not None else net
    params = current_names(params, target.parameters_dict())
    _check_shapes(path, target, params)
    not_loaded, _ = ms.load_param_into_net(target, params, strict_load=False)
    missing = [name for name in not_loaded if name not in SKIP_ON_LOAD
               and name.rsplit(".", 1)[-1] not in OPTIONAL_ON_LOAD]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} parameters of the network "
                         f"(a checkpoint of another model?), e.g. {missing[:5]}")
    return extra


def _check_shapes(path, target, params):
    """One line naming the first parameter whose shape differs between file and network."""
    own = target.parameters_dict()
    wrong = [(name, tuple(value.shape), tuple(own[name].shape)) for name, value in params.items()
             if name in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[name].shape)]
    if wrong:
        name, theirs, ours = wrong[0]
        raise ValueError(f"{path}: does not fit the network the config builds: {len(wrong)} "
                         f"parameter(s) differ in shape, e.g. {name} is {theirs} in the checkpoint "
                         f"and {ours} in the network (another model or class count?)")


def model_meta(cfg, class_info):
    """What a checkpoint must carry to be deployed without the dataset: the model and backbone
    names and ``num_classes``, ``class_names``, ``category_ids`` from ``class_info``."""
    return {"model": cfg.model.name, "backbone": cfg.model.backbone.name,
            "num_classes": int(class_info["num_classes"]),
            "class_names": [str(n) for n in class_info["class_names"]],
            "category_ids": [int(c) for c in class_info["category_ids"]]}


def _load_entry(path, key):
    """``{key: value}`` read from checkpoint ``path`` alone ({} when the file has no ``key``)."""
    try:
        return load_checkpoint_file(path, choice_func=lambda name: name == key)
    except (ValueError, RuntimeError) as err:
        if "empty after filter" in str(err):  # MindSpore's way of saying: no such entry
            return {}
        raise ValueError(f"{path}: not a readable MindSpore checkpoint ({err})") from None


def read_checkpoint_meta(path):
    """The :func:`model_meta` dict saved in checkpoint ``path``, or None (older or converted
    checkpoints carry none). Reads that one entry, not the weights."""
    found = _load_entry(path, META_KEY)
    if META_KEY not in found:
        return None
    try:
        return json.loads(str(found[META_KEY]))
    except json.JSONDecodeError:
        raise ValueError(f"{path}: its {META_KEY} entry is not valid JSON") from None


def _saved_step(path):
    """The step saved in checkpoint ``path`` (its appended ``step``, else its file name), or None."""
    found = _load_entry(path, "step")
    if "step" in found:
        return int(found["step"].asnumpy().item())
    match = CKPT_PATTERN.match(os.path.basename(path))
    return int(match.group(1)) if match else None


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


def _step_of_name(path):
    return int(CKPT_PATTERN.match(os.path.basename(path)).group(1))


def existing_checkpoints(directory):
    """``ckpt_<step>.ckpt`` paths in ``directory``, oldest first ([] when it does not exist)."""
    if not os.path.isdir(directory):
        return []
    found = [os.path.join(directory, n) for n in os.listdir(directory) if CKPT_PATTERN.match(n)]
    return sorted(found, key=_step_of_name)


def claim_checkpoint_dir(directory, resume_ckpt=None, overwrite=False):
    """Make sure a run into ``directory`` writes over no earlier run's checkpoint.

    Without ``resume_ckpt`` any checkpoint there (``best.ckpt`` included) is another run's;
    resuming, those of a later step than the resumed one would be written over. Either refuses (ValueError naming the folder
    and the choices) or, with ``overwrite``, first moves them into ``<directory>.old-<time>``
    (with a ``latest`` pointer, so it can be resumed from); ``latest`` in ``directory`` then
    names the newest checkpoint left there, if any. Returns that folder, or None.
    """
    existing = existing_checkpoints(directory)
    best = os.path.join(directory, BEST)
    best = [best] if os.path.isfile(best) else []
    if resume_ckpt and (existing or best):
        start = _saved_step(resolve_checkpoint(resume_ckpt))
        existing = [p for p in existing if start is None or _step_of_name(p) > start]
        best = [p for p in best if start is None or (_saved_step(p) or 0) > start]
    if not existing and not best:
        return None
    if not overwrite:
        newest = os.path.basename((existing + best)[-1])
        if resume_ckpt:
            why = (f"resuming from {resume_ckpt} would write over its {len(existing + best)} later "
                   f"checkpoint(s) (newest {newest})")
        else:
            why = f"it holds {len(existing + best)} checkpoint(s) of an earlier run (newest {newest})"
        raise ValueError(f"{directory}: {why}; resume with --resume_ckpt {directory}, choose a new "
                         f"--output_dir, or pass --overwrite to move them aside first")
    aside = f"{directory}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    while os.path.exists(aside):
        aside += "_"
    os.makedirs(aside)
    for path in existing + best:
        os.replace(path, os.path.join(aside, os.path.basename(path)))
    if existing:
        atomic_write_text(os.path.join(aside, LATEST), os.path.basename(existing[-1]) + "\n")
    pointer = os.path.join(directory, LATEST)
    if os.path.isfile(pointer) and read_latest(directory) is None:  # it named a moved file
        remaining = existing_checkpoints(directory)
        if remaining:
            atomic_write_text(pointer, os.path.basename(remaining[-1]) + "\n")
        else:
            os.remove(pointer)  # its copy in the aside folder names the same file
    _fsync_dir(directory)
    return aside


class CheckpointManager:
    """Writes ``ckpt_<step>.ckpt`` files into ``directory``, keeps the newest ``keep_max`` of
    those it wrote (never another run's files) and points ``latest`` at the newest. ``meta``
    (:func:`model_meta`) is saved in each file. Leftover temporary files of a killed write are
    removed."""

    def __init__(self, directory, keep_max=5, meta=None):
        if keep_max < 1:
            raise ValueError(f"train.keep_ckpt_max must be >= 1, got {keep_max}")
        self.directory = directory
        self.keep_max = keep_max
        self.meta = meta
        self.written = []
        os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, TMP_PREFIX + "*")):
            os.remove(stale)

    def checkpoints(self):
        """Saved checkpoint paths, oldest first."""
        return existing_checkpoints(self.directory)

    def _extra(self, extra):
        return dict(extra or {}, **{META_KEY: json.dumps(self.meta)}) if self.meta is not None else extra

    def save(self, net, optimizer, step, extra=None):
        path = os.path.join(self.directory, f"ckpt_{step:08d}.ckpt")
        save_train_state(path, net, optimizer, step, self._extra(extra))
        atomic_write_text(os.path.join(self.directory, LATEST), os.path.basename(path) + "\n")
        if path in self.written:
            self.written.remove(path)
        self.written.append(path)
        for old in self.written[:-self.keep_max]:
            if os.path.exists(old):
                os.remove(old)
            self.written.remove(old)
        return path

    def save_best(self, net, optimizer, step, extra=None):
        """Write ``best.ckpt`` (a full checkpoint: evaluate, export or resume from it); rotation
        never removes it."""
        return save_train_state(os.path.join(self.directory, BEST), net, optimizer, step, self._extra(extra))
