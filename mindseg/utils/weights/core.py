"""The source-independent half of weight import: read a PyTorch checkpoint into NumPy arrays, map its
keys onto a mindseg model's parameters, check shapes, report what did not map, write a .ckpt.

A source module (torchvision.py, detectron2.py, centermask2.py) gives one function
``map_key(key) -> (component, name) | SKIP | None``: ``component`` is a part of the model
("backbone", "fpn", "rpn", "box_head", "mask_head", "fcos_head", "maskiou_head") and ``name`` the
parameter's name inside that part, as mindseg's Cell defines it. Where each part sits in the
model (``backbone.body.net.`` in Mask R-CNN) is read off the target model's parameter names, so a
meta-architecture may name its attributes as it likes. ``SKIP`` marks a key known to hold no
weight (BN's ``num_batches_tracked``, pixel mean buffers); ``None`` an unknown key, reported.
"""
import os

import numpy as np

from mindseg.utils.weights.safe_pickle import ForbiddenGlobal, load_weights_pickle

SKIP = "skip"

# A parameter name inside each part that only that part has; the part's prefix in the model is
# what precedes the shortest parameter name that ends with it.
COMPONENT_ANCHORS = {
    "backbone": ("conv1.weight", "stem.stem_1.conv.weight", "features_0.weight"),
    "fpn": ("lateral_convs.0.weight",),
    "rpn": ("objectness.weight",),
    "box_head": ("cls_score.weight",),
    "mask_head": ("deconv.weight",),
    "fcos_head": ("ctrness.weight",),
    "maskiou_head": ("fc2.weight",),
}

# PyTorch BatchNorm / FrozenBatchNorm buffer names -> MindSpore's
BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


class WeightConversionError(ValueError):
    """A checkpoint that cannot be converted onto the model (bad file, shape mismatch)."""


class ConversionReport:
    """What a conversion did: ``mapped`` [(source key, mindseg name)], ``skipped`` source keys that
    hold no weight, ``unmapped`` [(source key, why)], ``missing`` mindseg parameters no key filled."""

    def __init__(self):
        self.mapped, self.skipped, self.unmapped, self.missing = [], [], [], []

    @property
    def complete(self):
        return not self.missing

    def lines(self):
        out = [f"mapped {len(self.mapped)} parameters, skipped {len(self.skipped)} non-weight keys"]
        out += [f"unmapped source key: {key} ({why})" for key, why in self.unmapped]
        out += [f"missing mindseg parameter: {name}" for name in self.missing]
        return out


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # torch.Tensor
        return value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


def _state_dict_of(data, path):
    """The weights inside a loaded checkpoint: a plain state dict, or its ``model`` /
    ``state_dict`` entry (detectron2 and centermask2 checkpoints wrap it)."""
    if not isinstance(data, dict):
        raise WeightConversionError(f"{path}: expected a dict of weights, got {type(data).__name__}")
    if "blobs" in data and "model" not in data:
        raise WeightConversionError(f"{path}: a Caffe2 (Detectron 1) blob file; only detectron2 model zoo "
                                    "checkpoints (a 'model' dict) are supported")
    for key in ("model", "state_dict"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    state = {}
    for key, value in data.items():
        if not isinstance(key, str):
            continue
        if key.startswith("module."):
            key = key[len("module."):]
        if isinstance(value, (int, float, str, bytes)) or value is None:
            continue
        state[key] = _to_numpy(value)
    if not state:
        raise WeightConversionError(f"{path}: holds no arrays")
    return state


def read_pkl(path):
    """A detectron2 model zoo .pkl: a pickled dict ``{"model": {name: ndarray}, "__author__": ...}``,
    read without running code from it (:mod:`mindseg.utils.weights.safe_pickle`)."""
    with open(path, "rb") as f:
        try:
            data = load_weights_pickle(f)
        except ForbiddenGlobal as err:
            raise WeightConversionError(
                f"{path}: refused: the pickle calls {err.name}, which a weights file does not need "
                "(only dicts, lists, str, numbers and NumPy arrays are read); nothing was run") from None
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise WeightConversionError(f"{path}: not a readable pickle ({err})") from None
    return _state_dict_of(data, path)


def read_pth(path):
    """A PyTorch .pth / .pt state dict or checkpoint; needs torch (an optional dependency)."""
    try:
        import torch
    except ImportError:
        raise WeightConversionError(
            f"{path}: reading a .pth file needs PyTorch, which mindseg does not require. Install it "
            "(the CPU build is enough: pip install torch --index-url https://download.pytorch.org/whl/cpu) "
            "or, on a machine that has it, re-save the state dict as a pickle of NumPy arrays "
            "({name: tensor.numpy()}) and pass that .pkl instead") from None
    try:  # weights_only: torch's own restricted unpickler; never retried without it
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, ...
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else
                      type(err).__name__)  # torch names the forbidden global on a 'GLOBAL' line
        raise WeightConversionError(f"{path}: refused or unreadable with torch.load(weights_only=True) "
                                    f"(only tensors and plain containers are read): {reason}") from None
    return _state_dict_of(data, path)


def read_checkpoint(path):
    """{key: ndarray} from a .pkl (detectron2) or a .pth/.pt (torchvision, centermask2) file."""
    if not os.path.isfile(path):
        raise WeightConversionError(f"--input: no such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".pkl":
        return read_pkl(path)
    if ext in (".pth", ".pt", ".bin"):
        return read_pth(path)
    raise WeightConversionError(f"{path}: unknown checkpoint type '{ext}' (expected .pkl, .pth or .pt)")


def component_prefixes(target_names):
    """{component: prefix} for every component whose anchor parameter the model has."""
    prefixes = {}
    for component, anchors in COMPONENT_ANCHORS.items():
        found = [name[:len(name) - len(anchor)] for anchor in anchors for name in target_names
                 if name == anchor or name.endswith("." + anchor)]
        if found:
            prefixes[component] = min(found, key=len)
    return prefixes


def convert_state_dict(state_dict, target_shapes, map_key, adapt=None):
    """Map ``state_dict`` {source key: ndarray} onto ``target_shapes`` {mindseg name: shape}.

    ``map_key`` is the source's key rule; ``adapt(component, name, array, target_shape)`` may
    reorder an array first (class layouts). Returns ({mindseg name: float32 array}, report).
    Raises WeightConversionError naming every key whose shape differs from mindseg's, and any
    mindseg parameter that two source keys would fill.
    """
    prefixes = component_prefixes(target_shapes)
    report = ConversionReport()
    params, source_of, mismatches = {}, {}, []
    for key in sorted(state_dict):
        mapped = map_key(key)
        if mapped == SKIP:
            report.skipped.append(key)
            continue
        if mapped is None:
            report.unmapped.append((key, "no rule for this key"))
            continue
        component, name = mapped
        if component not in prefixes:
            report.unmapped.append((key, f"the mindseg model has no {component}"))
            continue
        target = prefixes[component] + name
        if target not in target_shapes:
            report.unmapped.append((key, f"would be {target}, which the mindseg model does not have"))
            continue
        if target in source_of:
            raise WeightConversionError(f"{key} and {source_of[target]} both map to {target}")
        array = np.asarray(state_dict[key])
        if adapt is not None:
            array = adapt(component, name, array, tuple(target_shapes[target]))
        if tuple(array.shape) != tuple(target_shapes[target]):
            mismatches.append(f"{key} {tuple(state_dict[key].shape)} -> {target} {tuple(target_shapes[target])}")
            continue
        params[target] = np.ascontiguousarray(array, dtype=np.float32)
        source_of[target] = key
        report.mapped.append((key, target))
    if mismatches:
        raise WeightConversionError("shape mismatch (source shape -> mindseg shape); check --config and "
                                    "--num_classes:\n  " + "\n  ".join(mismatches))
    report.missing = [name for name in target_shapes if name not in params]
    return params, report


def model_shapes(net):
    """{parameter name: shape} of a mindseg model's weights, in its own order (the samplers' step
    counter is training state, not a weight: no source file has it)."""
    from mindseg.models.layers.step_random import COUNTER_NAME
    return {name: tuple(param.shape) for name, param in net.parameters_and_names()
            if name.rsplit(".", 1)[-1] != COUNTER_NAME}


def save_ckpt(params, path, append_dict=None):
    """Write {name: array} as a weights-only MindSpore checkpoint (with ``append_dict`` entries)."""
    import mindspore as ms
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ms.save_checkpoint([{"name": name, "data": ms.Tensor(array)} for name, array in params.items()], path,
                       append_dict=append_dict)


__all__ = ["SKIP", "BN_NAMES", "WeightConversionError", "ConversionReport", "read_checkpoint", "read_pkl",
           "read_pth", "component_prefixes", "convert_state_dict", "model_shapes", "save_ckpt"]
