"""ModelArts: copy the dataset in from OBS once per server and the outputs back (moxing).

On a ModelArts job every server runs ``local_world`` processes; the one with local rank 0 copies,
the others wait for its marker file, so each server copies the data exactly once. The local copy
lives in a folder keyed on ``data_url`` (and its marker names the url), so a job with another
``data_url`` copies that dataset instead of training on the one already in the cache. Only global
rank 0 writes outputs and copies them back. ``MINDSEG_CACHE_DIR`` replaces ModelArts' ``/cache``
(the local disk of each server).
"""
import hashlib
import os
import re
import time

DEFAULT_CACHE = os.environ.get("MINDSEG_CACHE_DIR", "/cache")
DONE_MARKER = ".mindseg_copy_done"


def _copy_parallel(src_url, dst_url):
    import moxing as mox  # only present on ModelArts
    mox.file.copy_parallel(src_url=src_url, dst_url=dst_url)


def data_cache_name(data_url):
    """The cache folder name of ``data_url``: its last path part and a hash of the whole url."""
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", data_url.rstrip("/").rsplit("/", 1)[-1])[:40]
    return f"{tail or 'data'}-{hashlib.sha1(data_url.encode('utf-8')).hexdigest()[:12]}"


def _copied_from(marker):
    """The url the marker says ``local_dir`` holds a complete copy of, or None."""
    try:
        with open(marker, "r", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def sync_from_obs(src_url, local_dir, local_rank, timeout_s=3600.0, poll_s=1.0):
    """Copy ``src_url`` into ``local_dir`` on local rank 0 unless its marker says it holds that
    url already; other local ranks wait for the marker naming ``src_url``.

    Returns ``local_dir``. Raises TimeoutError if the copy does not finish in ``timeout_s``.
    """
    marker = os.path.join(local_dir, DONE_MARKER)
    if local_rank == 0:
        os.makedirs(local_dir, exist_ok=True)
        if _copied_from(marker) != src_url:
            if os.path.exists(marker):
                os.remove(marker)
            _copy_parallel(src_url, local_dir)
            with open(marker, "w", encoding="utf-8") as f:
                f.write(src_url + "\n")
        return local_dir
    deadline = time.time() + timeout_s
    while _copied_from(marker) != src_url:
        if time.time() > deadline:
            raise TimeoutError(f"local rank {local_rank}: no copy of {src_url} into {local_dir} "
                               f"after {timeout_s:.0f} s (marker {marker} missing)")
        time.sleep(poll_s)
    return local_dir


def sync_to_obs(local_dir, dst_url, rank):
    """Copy ``local_dir`` to ``dst_url`` from global rank 0, the only rank that writes outputs."""
    if rank == 0 and os.path.isdir(local_dir):
        _copy_parallel(local_dir, dst_url)


def prepare_modelarts(cfg, runtime, cache_dir=DEFAULT_CACHE):
    """With ``cfg.enable_modelarts``: copy ``cfg.data_url`` to ``cache_dir/data/<key of the url>``
    (:func:`data_cache_name`) and point
    ``cfg.data.dataset_dir`` there, and point ``cfg.output_dir`` at ``cache_dir/output``.
    Returns the (edited) cfg; without ModelArts it is returned unchanged."""
    if not cfg.enable_modelarts:
        return cfg
    if not cfg.data_url or not cfg.train_url:
        raise ValueError("enable_modelarts needs both --data_url and --train_url (OBS paths)")
    data_dir = sync_from_obs(cfg.data_url, os.path.join(cache_dir, "data", data_cache_name(cfg.data_url)),
                             runtime.local_rank)
    cfg.data.dataset_dir = data_dir
    cfg.output_dir = os.path.join(cache_dir, "output")
    return cfg


def finish_modelarts(cfg, runtime):
    """Copy ``cfg.output_dir`` back to ``cfg.train_url`` when running on ModelArts."""
    if cfg.enable_modelarts:
        sync_to_obs(cfg.output_dir, cfg.train_url, runtime.rank)
