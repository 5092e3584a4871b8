"""YAML configuration: one level of ``__BASE__``, ``key=value`` overrides, a dump of the result.

``config/base.yml`` holds every key mindseg knows, with its default; a model config names it as
``__BASE__`` and overrides what differs. A key absent from the base, or a value whose type differs
from the base value's, is rejected with the key and the file that set it. So is a list whose
items are not of the type of the default's items (``data.min_size=[abc]``), or whose nested lists
differ in length from the default's (``model.fcos.size_ranges`` pairs), or, for the keys of
:data:`FIXED_LENGTHS`, whose length differs from the default's (``data.canvas=[192]``).
"""
import copy
import os

import yaml

BASE_KEY = "__BASE__"
# list keys whose length is part of their meaning: a value must have as many items as the default
FIXED_LENGTHS = {
    "data.canvas": "(H, W)",
    "data.mean": "one per channel",
    "data.std": "one per channel",
    "model.rpn.bbox_reg_weights": "(wx, wy, ww, wh)",
    "model.roi_heads.bbox_reg_weights": "(wx, wy, ww, wh)",
    "model.rpn.iou_thresholds": "(background below, foreground from)",
    "model.centermask.pooler_levels": "(lowest, highest)",
}


class ConfigError(ValueError):
    """A config file or override that mindseg cannot accept."""


class Config(dict):
    """A nested dict whose keys also read as attributes: ``cfg.model.rpn.nms_thresh``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None

    def __setattr__(self, name, value):
        self[name] = value

    def __deepcopy__(self, memo):
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}


def to_config(value):
    """Wrap nested dicts into :class:`Config`."""
    if isinstance(value, dict):
        return Config({k: to_config(v) for k, v in value.items()})
    return value


def _read_yaml(path):
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _type_name(value):
    return "null" if value is None else type(value).__name__


def _check_value(key, default, value, source):
    """Accept ``value`` for ``key`` when its type matches the default's (int is accepted for
    float, anything for a null default); a list's items are checked by :func:`_check_list`."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(default, int) and isinstance(value, int):
        return value
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return _check_list(key, default, value, source)
    elif isinstance(default, str) and isinstance(value, str):
        return value
    elif isinstance(default, dict) and isinstance(value, dict):
        return value
    raise ConfigError(f"{source}: key '{key}' must be {_type_name(default)} "
                      f"(like its default {default!r}), got {_type_name(value)} {value!r}")


def _item_kind(items):
    """What the items of a default list are: ``("list", length)`` for lists of one length,
    else the name of their scalar type ("number" for ints and floats mixed); None when the default
    says nothing (empty, or items of several kinds)."""
    if items and all(isinstance(v, (list, tuple)) for v in items):
        lengths = {len(v) for v in items}
        return ("list", lengths.pop()) if len(lengths) == 1 else None
    kinds = {"bool" if isinstance(v, bool) else _type_name(v) for v in items}
    if kinds <= {"int", "float"} and len(kinds) == 2:
        return "number"
    return kinds.pop() if len(kinds) == 1 and kinds <= {"bool", "int", "float", "str"} else None


def _fits(kind, item):
    if kind == "bool":
        return isinstance(item, bool)
    if isinstance(item, bool):
        return False
    numbers = {"int": (int,), "float": (int, float), "number": (int, float), "str": (str,)}
    return isinstance(item, numbers[kind])


def _check_list(key, default, value, source):
    """``value`` as a list whose items are of the default's item kind (ints become floats in a
    float list; nested lists have the default's inner length), with the default's length for the
    keys of :data:`FIXED_LENGTHS`."""
    def refuse(what):
        raise ConfigError(f"{source}: key '{key}' must be {what} (like its default {default!r}), "
                          f"got {value!r}")
    if key in FIXED_LENGTHS and len(value) != len(default):
        refuse(f"a list of {len(default)} items {FIXED_LENGTHS[key]}")
    kind = _item_kind(default)
    if isinstance(kind, tuple):
        leaf = _item_kind([v for row in default for v in row])
        leaf = None if isinstance(leaf, tuple) else leaf  # deeper nesting: items unchecked
        if not all(isinstance(row, (list, tuple)) and len(row) == kind[1] for row in value):
            refuse(f"a list of {kind[1]}-item lists")
        return [_check_items(row, leaf, refuse, f"lists of {leaf}") for row in value]
    return _check_items(value, kind, refuse, f"a list of {kind}")


def _check_items(items, kind, refuse, what):
    if kind is None:
        return list(items)
    if not all(_fits(kind, item) for item in items):
        refuse(what)
    return [float(item) for item in items] if kind == "float" else list(items)


def merge(base, override, source, prefix=""):
    """Return ``base`` updated by ``override``; every key of ``override`` must exist in ``base``."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in merged:
            raise ConfigError(f"{source}: unknown key '{dotted}'")
        if isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = merge(merged[key], value, source, prefix=dotted + ".")
        else:
            merged[key] = _check_value(dotted, merged[key], value, source)
    return merged


def config_root():
    """The folder of the shipped configs: ``config/`` beside the package in a source checkout (and
    an editable install), ``mindseg/configs/`` inside an installed wheel."""
    package = os.path.dirname(os.path.abspath(__file__))
    source = os.path.join(os.path.dirname(package), "config")
    if os.path.isfile(os.path.join(source, "base.yml")):
        return source
    return os.path.join(package, "configs")


def find_config(path):
    """``path`` when it is a file; otherwise the shipped config it names, given as
    ``shapes/mask_rcnn_shapes``, with ``.yml``, or as typed in the repository
    (``config/shapes/mask_rcnn_shapes.yml``), so that an installed mindseg runs from any folder.
    A name that matches nothing comes back unchanged (and is reported missing by the reader)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    name = path.replace(os.sep, "/")
    if name.startswith("config/"):
        name = name[len("config/"):]
    if not name.endswith((".yml", ".yaml")):
        name += ".yml"
    shipped = os.path.join(config_root(), *name.split("/"))
    return shipped if os.path.isfile(shipped) else path


def load_yaml_with_base(path):
    """Read ``path`` (a file, or a shipped config's name: :func:`find_config`) and the one
    ``__BASE__`` file it may name (relative to the file)."""
    path = find_config(path)
    data = _read_yaml(path)
    base_name = data.pop(BASE_KEY, None)
    if base_name is None:
        return data
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), base_name))
    base = _read_yaml(base_path)
    if BASE_KEY in base:
        raise ConfigError(f"{base_path}: a __BASE__ file cannot name another __BASE__ "
                          f"(one level only; {path} -> {base_path} -> {base[BASE_KEY]})")
    return merge(base, data, source=path)


def parse_value(text):
    """Read a command-line value as YAML: ``3`` is an int, ``[1, 2]`` a list, ``abc`` a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _default_at(cfg_dict, parts):
    node = cfg_dict
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def apply_overrides(cfg_dict, overrides, source="command line"):
    """Apply ``key=value`` strings (dotted keys for nested values). A value for a string key stays
    the text as typed (``output_dir=2024`` is a path, not a number)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override '{item}' is not of the form key=value")
        dotted, text = item.split("=", 1)
        nested = {}
        node = nested
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node[part] = {}
            node = node[part]
        is_text = isinstance(_default_at(cfg_dict, parts), str)
        node[parts[-1]] = text if is_text else parse_value(text)
        cfg_dict = merge(cfg_dict, nested, source=f"{source} ({item})")
    return cfg_dict


def load_config(path, overrides=()):
    """Load a config file (or a shipped config by name) with its base and ``key=value``
    overrides into a :class:`Config`.

    >>> from mindseg import load_config
    >>> cfg = load_config("config/shapes/mask_rcnn_shapes.yml", ["data.canvas=[128,128]"])
    >>> cfg.model.name, cfg.data.canvas
    ('mask_rcnn', [128, 128])
    """
    data = load_yaml_with_base(path)
    data = apply_overrides(data, list(overrides))
    return to_config(data)


def dump_config(cfg, output_dir, name="config.yml"):
    """Write the resolved config beside the outputs; returns the file path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict() if isinstance(cfg, Config) else dict(cfg), f,
                       sort_keys=False, default_flow_style=None)
    return path
