"""Atomic publishing: the shards written in a hidden temporary folder move to their final names
(shard 0 last), then ``P.meta.json``, the mark of a finished conversion; leftovers of a killed
conversion are removed once its process is gone."""
import glob
import json
import os
import shutil

from mindseg.dataset.mindrecord.paths import META_SUFFIX, SHARD_RE, temp_dirs


def remove_stale_temp_dirs(prefix):
    """Remove the temporary folders of ``prefix`` whose conversion process is gone."""
    for path in temp_dirs(prefix):
        pid = path.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_finished(prefix):
    """Remove a previous conversion's files of ``prefix``, its meta (the finished mark) first."""
    meta = prefix + META_SUFFIX
    if os.path.exists(meta):
        os.remove(meta)
    folder, name = os.path.split(prefix)
    for path in glob.glob(os.path.join(glob.escape(folder), glob.escape(name) + ".mindrecord*")):
        if SHARD_RE.match(path[:-3] if path.endswith(".db") else path):
            os.remove(path)


def publish(temp_dir, prefix, names, meta):
    """Move the committed shards of ``temp_dir`` to ``prefix``'s folder, then write its meta."""
    _remove_finished(prefix)
    folder = os.path.dirname(prefix)
    for name in reversed(names):  # shard 0 last: MindDataset opens it and reads the others
        os.replace(os.path.join(temp_dir, name + ".db"), os.path.join(folder, name + ".db"))
        os.replace(os.path.join(temp_dir, name), os.path.join(folder, name))
    temp_meta = os.path.join(temp_dir, "meta.json")
    with open(temp_meta, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    os.replace(temp_meta, prefix + META_SUFFIX)
    os.rmdir(temp_dir)
