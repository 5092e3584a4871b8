"""Fine-tuning: the weights of a mindseg checkpoint (trained or converted) loaded into a new run.

Every tensor of the network must be in the checkpoint with the network's shape, except the
class-shaped predictors the heads mark (:mod:`mindseg.models.layers.class_rows`). Their rows are
matched by class name: a class the checkpoint and the new dataset share keeps its rows, a new
class keeps the head's initialisation, and class-free rows (the box classifier's background) are
taken from the checkpoint. A checkpoint without class names (converted for a custom class count,
or written by an older mindseg) is matched by position when the class counts agree, else its class
rows are all left to the initialisation. Anything else missing or mis-shaped is an error naming it:
a ResNet-50 checkpoint never half-loads into a ResNet-18 network.
"""
import dataclasses

import numpy as np

import mindspore as ms

from mindseg.engine.checkpoint import (META_KEY, OPTIONAL_ON_LOAD, current_names, load_checkpoint_file,
                                       read_checkpoint_meta, resolve_checkpoint)
from mindseg.models.layers.class_rows import class_row_params


@dataclasses.dataclass
class FinetuneReport:
    path: str
    loaded: int              # tensors taken from the checkpoint whole
    class_tensors: int       # class-shaped tensors filled row by row
    kept: list               # class names whose rows came from the checkpoint
    new: list                # class names that start from the head's initialisation
    matched_by: str          # "name", "position" or "none"

    def line(self):
        how = {"name": "matched by name", "position": "matched by position (the checkpoint names no classes)",
               "none": "none matched (the checkpoint names no classes and has another class count)"}
        kept = ", ".join(self.kept) if self.kept else "none"
        new = ", ".join(self.new) if self.new else "none"
        return (f"pre_trained {self.path}: loaded {self.loaded} tensors whole and "
                f"{self.class_tensors} class-shaped tensors by class, {how[self.matched_by]}; "
                f"{len(self.kept)} class(es) kept their rows ({kept}); {len(self.new)} start from "
                f"the head's initialisation ({new})")


def _norm(name):
    return str(name).strip().lower()


def class_row_mapping(target_names, source_names, source_count):
    """``(pairs, matched_by)``: ``pairs`` lists ``(target class, source class)`` whose rows are
    carried over. By name when the checkpoint names its classes, else by position when the
    counts agree, else nothing."""
    if source_names is not None:
        index = {_norm(name): j for j, name in enumerate(source_names)}
        return [(k, index[_norm(name)]) for k, name in enumerate(target_names)
                if _norm(name) in index], "name"
    if source_count == len(target_names):
        return [(k, k) for k in range(source_count)], "position"
    return [], "none"


def merge_class_rows(init, source, per_class, extra, pairs):
    """``init`` (the head's own tensor, K classes) with the rows of ``pairs`` and the ``extra``
    class-free trailing rows taken from ``source``. Both are (rows, ...) arrays."""
    merged = np.array(init, copy=True)
    for target, src in pairs:
        merged[target * per_class:(target + 1) * per_class] = source[src * per_class:(src + 1) * per_class]
    if extra:
        merged[merged.shape[0] - extra:] = source[source.shape[0] - extra:]
    return merged


def _class_count(rows, per_class, extra, path, name):
    count, rest = divmod(rows - extra, per_class)
    if rest or count < 1:
        raise ValueError(f"{path}: {name} has {rows} rows, which is not {per_class} per class "
                         f"plus {extra}: not a checkpoint of this kind of head")
    return count


def load_pretrained(net, path, class_names):
    """Load checkpoint ``path`` (a file or a run's checkpoints folder) into ``net`` for a new run
    whose classes are ``class_names``; returns a :class:`FinetuneReport`."""
    path = resolve_checkpoint(path)
    meta = read_checkpoint_meta(path)
    try:
        saved = load_checkpoint_file(path)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable MindSpore checkpoint ({err})") from None
    saved.pop(META_KEY, None)
    layout = class_row_params(net)
    own = net.parameters_dict()
    saved = current_names(saved, own)
    missing = [name for name in own if name not in saved and name not in layout
               and name.rsplit(".", 1)[-1] not in OPTIONAL_ON_LOAD]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks {len(missing)} tensor(s) of the network "
                         f"the config builds (another model or backbone?), e.g. {missing[0]}")
    source_names = meta["class_names"] if meta else None
    values, loaded, pairs, matched_by = {}, 0, None, "none"
    for name, param in own.items():
        if name not in saved:
            continue
        value = saved[name].asnumpy()
        if name in layout:
            per_class, extra = layout[name]
            if value.shape[1:] != tuple(param.shape[1:]):
                raise ValueError(f"{path}: {name} is {value.shape} in the checkpoint and "
                                 f"{tuple(param.shape)} in the network (another head width?)")
            count = _class_count(value.shape[0], per_class, extra, path, name)
            if source_names is not None and len(source_names) != count:
                raise ValueError(f"{path}: names {len(source_names)} classes but {name} holds {count}")
            pairs, matched_by = class_row_mapping(class_names, source_names, count)
            values[name] = merge_class_rows(param.asnumpy(), value, per_class, extra, pairs)
            continue
        if value.shape != tuple(param.shape):
            raise ValueError(f"{path}: {name} is {value.shape} in the checkpoint and "
                             f"{tuple(param.shape)} in the network (another model or backbone?)")
        values[name] = value
        loaded += 1
    absent = [name for name in layout if name not in saved]
    if absent:
        raise ValueError(f"{path}: the checkpoint lacks the class-shaped tensor {absent[0]}")
    for name, value in values.items():
        own[name].set_data(ms.Tensor(value, own[name].dtype))
    kept_targets = {target for target, _ in pairs or []}
    return FinetuneReport(path, loaded, len(layout),
                          [class_names[k] for k in sorted(kept_targets)],
                          [name for k, name in enumerate(class_names) if k not in kept_targets],
                          matched_by)
