"""Where the files of a conversion are (prefix, shards, ``P.meta.json``) and its meta."""
import glob
import json
import os
import re

from mindseg.dataset.coco import DataError
from mindseg.dataset.mindrecord.encoding import ENCODING_VERSION

META_SUFFIX = ".meta.json"
SHARD_RE = re.compile(r"^(.*)\.mindrecord\d*$")


def normalize_prefix(output_prefix):
    """The absolute conversion prefix, without a ``.mindrecord`` extension."""
    prefix = os.path.abspath(output_prefix)
    return prefix[:-len(".mindrecord")] if prefix.endswith(".mindrecord") else prefix


def shard_names(output_prefix, num_shards):
    """Base names MindRecord's FileWriter gives the shards of ``output_prefix``."""
    base = os.path.basename(normalize_prefix(output_prefix)) + ".mindrecord"
    return [base] if num_shards == 1 else [f"{base}{i}" for i in range(num_shards)]


def meta_path(output_prefix):
    return normalize_prefix(output_prefix) + META_SUFFIX


def temp_dirs(prefix):
    folder, name = os.path.split(prefix)
    return glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.tmp-*"))


def _resolve_prefix(path, split=None):
    """The conversion prefix meant by a folder (+ split), a prefix, a shard or a meta file."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        if split:
            return os.path.join(path, split)
        metas = sorted(glob.glob(os.path.join(glob.escape(path), "*" + META_SUFFIX)))
        if len(metas) != 1:
            raise FileNotFoundError(
                f"{path}: expected one finished MindRecord conversion (*{META_SUFFIX}), found "
                f"{len(metas)}{': ' + ', '.join(metas) if metas else ''}; name the split")
        return metas[0][:-len(META_SUFFIX)]
    if path.endswith(META_SUFFIX):
        return path[:-len(META_SUFFIX)]
    match = SHARD_RE.match(path)
    return match.group(1) if match else path


def load_meta(mindrecord_dir_or_prefix, split=None):
    """The sidecar of a finished conversion: ``class_names``, ``category_ids``,
    ``num_classes``, ``shards`` (base names), counts and problems."""
    prefix = _resolve_prefix(mindrecord_dir_or_prefix, split)
    path = prefix + META_SUFFIX
    if not os.path.isfile(path):
        leftovers = temp_dirs(prefix)
        hint = (f"; {len(leftovers)} unfinished conversion folder(s) exist: {leftovers[0]}"
                if leftovers else "; run scripts/convert_coco.py")
        raise FileNotFoundError(f"no finished MindRecord conversion at {prefix} "
                                f"({os.path.basename(path)} is missing){hint}")
    with open(path, "r", encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("encoding_version") != ENCODING_VERSION:
        raise DataError(f"{path}: encoding version {meta.get('encoding_version')}, this mindseg "
                        f"reads {ENCODING_VERSION}; convert again")
    return meta


def find_shards(mindrecord_dir_or_prefix, split=None):
    """Paths of a finished conversion's shards in order; MindDataset takes the first."""
    prefix = _resolve_prefix(mindrecord_dir_or_prefix, split)
    meta = load_meta(prefix)
    folder = os.path.dirname(prefix)
    shards = [os.path.join(folder, name) for name in meta["shards"]]
    for shard in shards:
        for path in (shard, shard + ".db"):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"MindRecord conversion {prefix} is incomplete: "
                                        f"{path} is missing")
    return shards
