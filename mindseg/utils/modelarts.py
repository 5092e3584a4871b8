"""ModelArts: copy the dataset in from OBS once per server and the outputs back (moxing).

On a ModelArts job every server runs ``local_world`` processes; the one with local rank 0 copies,
the others wait for its marker file, so each server copies the data exactly once. Only global
rank 0 writes outputs and copies them back. ``MINDSEG_CACHE_DIR`` replaces ModelArts' ``/cache``
(the local disk of each server).
"""
import os
import time

DEFAULT_CACHE = os.environ.get("MINDSEG_CACHE_DIR", "/cache")
DONE_MARKER = ".mindseg_copy_done"


def _copy_parallel(src_url, dst_url):
    import moxing as mox  # only present on ModelArts
    mox.file.copy_parallel(src_url=src_url, dst_url=dst_url)


def sync_from_obs(src_url, local_dir, local_rank, timeout_s=3600.0, poll_s=1.0):
    """Copy ``src_url`` into ``local_dir`` on local rank 0; other local ranks wait for the copy.

    Returns ``local_dir``. Raises TimeoutError if the copy does not finish in ``timeout_s``.
    """
    marker = os.path.join(local_dir, DONE_MARKER)
    if local_rank == 0:
        os.makedirs(local_dir, exist_ok=True)
        if not os.path.exists(marker):
            _copy_parallel(src_url, local_dir)
            with open(marker, "w", encoding="utf-8") as f:
                f.write(src_url + "\n")
        return local_dir
    deadline = time.time() + timeout_s
    while not os.path.exists(marker):
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
    """With ``cfg.enable_modelarts``: copy ``cfg.data_url`` to ``cache_dir/data`` and point
    ``cfg.data.dataset_dir`` there, and point ``cfg.output_dir`` at ``cache_dir/output``.
    Returns the (edited) cfg; without ModelArts it is returned unchanged."""
    if not cfg.enable_modelarts:
        return cfg
    if not cfg.data_url or not cfg.train_url:
        raise ValueError("enable_modelarts needs both --data_url and --train_url (OBS paths)")
    data_dir = sync_from_obs(cfg.data_url, os.path.join(cache_dir, "data"), runtime.local_rank)
    cfg.data.dataset_dir = data_dir
    cfg.output_dir = os.path.join(cache_dir, "output")
    return cfg


def finish_modelarts(cfg, runtime):
    """Copy ``cfg.output_dir`` back to ``cfg.train_url`` when running on ModelArts."""
    if cfg.enable_modelarts:
        sync_to_obs(cfg.output_dir, cfg.train_url, runtime.rank)
