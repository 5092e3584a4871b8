"""COCO -> MindRecord shards, and MindRecord rows back to records.

Files of one conversion with output prefix ``P`` (e.g. ``<dataset_dir>/mindrecord/train2017``):
``P.mindrecord`` (one shard) or ``P.mindrecord0 .. P.mindrecord<N-1>``, each with MindRecord's
``.db`` index beside it, and ``P.meta.json`` (class names, category ids, counts). The shards are
written into a hidden folder ``.<name>.tmp-<pid>`` next to them and moved out only when
MindRecord has committed them (shard 0, the file MindDataset opens, last); ``P.meta.json`` is
written after that, atomically, and is the mark of a finished conversion: :func:`find_shards`
refuses a prefix without it. MindRecord's headers name the shards by base name only, so moving
them keeps them readable. A temporary folder left by a killed conversion is removed by the next
conversion to the same prefix once its process is gone.

One row per image; every image of the split is stored (also those without annotations) with all
its annotations (crowd ones flagged): the reader drops crowd regions and empty images per config
(:func:`row_to_record` with ``crowd``, and the ``num_instances`` / ``num_crowd`` columns for a
dataset filter). Row encoding (version 1), N annotations of which P polygon parts in all:

=============  =========  ============================================================
column         type       content
=============  =========  ============================================================
image_id       int64      COCO image id
file_name      string     as in the annotation file
height, width  int32      of the image
image_bytes    bytes      the image file as stored, never re-encoded
num_instances  int32      N, crowd included
num_crowd      int32      crowd annotations among N
boxes          float32    (N*4) xyxy pixels
labels         int32      (N) contiguous labels 0..K-1 (``P.meta.json`` maps them to ids)
iscrowd        int32      (N) 0/1
segm_parts     int32      (N) polygon parts of each annotation; 0: the annotation is an RLE
poly_lengths   int32      (P) coordinates (2 x points) in each polygon part, in order
poly_coords    float32    all polygon coordinates x0 y0 x1 y1 ..., concatenated (the COCO reader
                          rounds polygons to float32 too, so both sources agree exactly)
rle_lengths    int32      length of each RLE annotation's compressed counts, in order
rle_counts     bytes      pycocotools' compressed counts of all RLEs, concatenated; the
                          mask size is the image's (height, width)
=============  =========  ============================================================

Every array column and ``rle_counts`` carry one extra trailing element (pad) that the reader
drops: MindRecord 2.10 returns a zero-length array column as a 0-d array of garbage, and an
empty bytes column as one NUL byte.
"""
import glob
import json
import multiprocessing
import os
import re
import shutil
import sys
import time

import numpy as np

from mindseg.dataset.coco import (CocoDataset, DataError, check_image_bytes, coco_paths,
                                  drop_crowd, image_size_of_bytes)
from mindseg.dataset.problems import Problem, count_skipped_images, problem_counts, problem_line

ENCODING_VERSION = 1
MINDRECORD_COLUMNS = ["image_id", "file_name", "height", "width", "image_bytes",
                      "num_instances", "num_crowd", "boxes", "labels", "iscrowd", "segm_parts",
                      "poly_lengths", "poly_coords", "rle_lengths", "rle_counts"]
SCHEMA = {
    "image_id": {"type": "int64"},
    "file_name": {"type": "string"},
    "height": {"type": "int32"},
    "width": {"type": "int32"},
    "image_bytes": {"type": "bytes"},
    "num_instances": {"type": "int32"},
    "num_crowd": {"type": "int32"},
    "boxes": {"type": "float32", "shape": [-1]},
    "labels": {"type": "int32", "shape": [-1]},
    "iscrowd": {"type": "int32", "shape": [-1]},
    "segm_parts": {"type": "int32", "shape": [-1]},
    "poly_lengths": {"type": "int32", "shape": [-1]},
    "poly_coords": {"type": "float32", "shape": [-1]},
    "rle_lengths": {"type": "int32", "shape": [-1]},
    "rle_counts": {"type": "bytes"},
}
_PAD_BYTE = b"|"
_META_SUFFIX = ".meta.json"
_SHARD_RE = re.compile(r"^(.*)\.mindrecord\d*$")
_WRITE_BATCH = 64  # rows per write_raw_data call, rounded to a multiple of the shard count
_MAX_PROBLEMS_IN_META = 1000


def _padded(values, dtype):
    return np.append(np.asarray(values, dtype).reshape(-1), np.zeros(1, dtype))


def record_to_row(record, image_bytes):
    """The MindRecord row of one record (see the module docstring for the encoding)."""
    segm_parts, poly_lengths, poly_coords, rle_lengths, rle_counts = [], [], [], [], []
    for segm in record["segms"]:
        if isinstance(segm, dict):
            counts = segm["counts"]
            counts = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
            segm_parts.append(0)
            rle_lengths.append(len(counts))
            rle_counts.append(counts)
        else:
            segm_parts.append(len(segm))
            for poly in segm:
                poly_lengths.append(len(poly))
                poly_coords.extend(poly)
    iscrowd = np.asarray(record["iscrowd"], np.int32)
    return {
        "image_id": int(record["image_id"]),
        "file_name": str(record["file_name"]),
        "height": int(record["height"]),
        "width": int(record["width"]),
        "image_bytes": bytes(image_bytes),
        "num_instances": int(len(record["labels"])),
        "num_crowd": int(iscrowd.sum()),
        "boxes": _padded(record["boxes"], np.float32),
        "labels": _padded(record["labels"], np.int32),
        "iscrowd": _padded(iscrowd, np.int32),
        "segm_parts": _padded(segm_parts, np.int32),
        "poly_lengths": _padded(poly_lengths, np.int32),
        "poly_coords": _padded(poly_coords, np.float32),
        "rle_lengths": _padded(rle_lengths, np.int32),
        "rle_counts": b"".join(rle_counts) + _PAD_BYTE,
    }


def _unpad(value, dtype):
    return np.asarray(value).astype(dtype, copy=False).reshape(-1)[:-1]


def _as_bytes(value):
    """Bytes of a bytes column: Python bytes, or the ``|S<n>`` array MindDataset gives."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return np.asarray(value).tobytes()


def _as_str(value):
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    item = np.asarray(value).reshape(-1)[0].item()
    return item.decode("utf-8") if isinstance(item, bytes) else str(item)


def _as_int(value):
    return int(np.asarray(value).reshape(-1)[0])


def row_to_record(row, crowd="ignore"):
    """The record (``docs/contracts.md``, with ``image_bytes``) of one MindRecord row.

    ``row`` maps column names to what MindDataset yields (numpy arrays, ``|S<n>`` arrays for
    bytes) or to the values :func:`record_to_row` wrote. ``crowd="drop"`` removes crowd
    annotations, as :class:`~mindseg.dataset.coco.CocoDataset` does.
    """
    num = _as_int(row["num_instances"])
    height, width = _as_int(row["height"]), _as_int(row["width"])
    boxes = _unpad(row["boxes"], np.float32).reshape(-1, 4)
    labels = _unpad(row["labels"], np.int32)
    iscrowd = _unpad(row["iscrowd"], np.int32).astype(np.uint8)
    segm_parts = _unpad(row["segm_parts"], np.int32)
    poly_lengths = _unpad(row["poly_lengths"], np.int32)
    poly_coords = _unpad(row["poly_coords"], np.float32)
    rle_lengths = _unpad(row["rle_lengths"], np.int32)
    rle_counts = _as_bytes(row["rle_counts"])[:-1]
    if not (len(boxes) == len(labels) == len(iscrowd) == len(segm_parts) == num):
        raise DataError(f"image {_as_int(row['image_id'])}: MindRecord row has inconsistent "
                        f"annotation arrays (num_instances {num})")
    segms, part, coord, rle, offset = [], 0, 0, 0, 0
    for parts in segm_parts:
        if parts == 0:
            size = int(rle_lengths[rle])
            segms.append({"size": [height, width], "counts": rle_counts[offset:offset + size]})
            offset += size
            rle += 1
            continue
        polys = []
        for length in poly_lengths[part:part + parts]:
            polys.append(poly_coords[coord:coord + length].tolist())
            coord += int(length)
        part += int(parts)
        segms.append(polys)
    record = {
        "image_id": _as_int(row["image_id"]),
        "file_name": _as_str(row["file_name"]),
        "height": height,
        "width": width,
        "image_bytes": _as_bytes(row["image_bytes"]),
        "boxes": boxes,
        "labels": labels,
        "iscrowd": iscrowd,
        "segms": segms,
    }
    return drop_crowd(record) if crowd == "drop" else record


# ---- where the files are -------------------------------------------------------------------

def _normalize_prefix(output_prefix):
    prefix = os.path.abspath(output_prefix)
    return prefix[:-len(".mindrecord")] if prefix.endswith(".mindrecord") else prefix


def shard_names(output_prefix, num_shards):
    """Base names MindRecord's FileWriter gives the shards of ``output_prefix``."""
    base = os.path.basename(_normalize_prefix(output_prefix)) + ".mindrecord"
    return [base] if num_shards == 1 else [f"{base}{i}" for i in range(num_shards)]


def meta_path(output_prefix):
    return _normalize_prefix(output_prefix) + _META_SUFFIX


def _temp_dirs(prefix):
    folder, name = os.path.split(prefix)
    return glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.tmp-*"))


def _resolve_prefix(path, split=None):
    """The conversion prefix meant by a folder (+ split), a prefix, a shard or a meta file."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        if split:
            return os.path.join(path, split)
        metas = sorted(glob.glob(os.path.join(glob.escape(path), "*" + _META_SUFFIX)))
        if len(metas) != 1:
            raise FileNotFoundError(
                f"{path}: expected one finished MindRecord conversion (*{_META_SUFFIX}), found "
                f"{len(metas)}{': ' + ', '.join(metas) if metas else ''}; name the split")
        return metas[0][:-len(_META_SUFFIX)]
    if path.endswith(_META_SUFFIX):
        return path[:-len(_META_SUFFIX)]
    match = _SHARD_RE.match(path)
    return match.group(1) if match else path


def load_meta(mindrecord_dir_or_prefix, split=None):
    """The sidecar of a finished conversion: ``class_names``, ``category_ids``,
    ``num_classes``, ``shards`` (base names), counts and problems."""
    prefix = _resolve_prefix(mindrecord_dir_or_prefix, split)
    path = prefix + _META_SUFFIX
    if not os.path.isfile(path):
        leftovers = _temp_dirs(prefix)
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


# ---- conversion ----------------------------------------------------------------------------

def _prepare_row(record):
    """Read, check and encode one image: ``(row, None)`` or ``(None, Problem)``. Runs in the
    worker processes."""
    image_id, file_name = record["image_id"], record["file_name"]
    try:
        with open(record["file_path"], "rb") as f:
            data = f.read()
    except OSError as err:
        return None, Problem(image_id, file_name, f"missing image file: {record['file_path']} "
                                                  f"({err.strerror})")
    reason = check_image_bytes(data)
    if reason is None:
        height, width = image_size_of_bytes(data)
        if (height, width) != (record["height"], record["width"]):
            reason = (f"image size mismatch: the file is {height}x{width}, the annotation file "
                      f"says {record['height']}x{record['width']}")
    if reason:
        return None, Problem(image_id, file_name, reason)
    return record_to_row(record, data), None


def _blob_row_bytes(record):
    """Bytes of a record's row in a MindRecord blob page: 8 + (8 + data) per array/bytes field."""
    segms = record["segms"]
    num = len(record["labels"])
    parts = sum(len(s) for s in segms if isinstance(s, list))
    coords = sum(len(p) for s in segms if isinstance(s, list) for p in s)
    rles = [len(s["counts"]) for s in segms if isinstance(s, dict)]
    data = (os.path.getsize(record["file_path"]) + 4 * (4 * num + 1) + 3 * 4 * (num + 1)
            + 4 * (parts + 1) + 8 * (coords + 1) + 4 * (len(rles) + 1) + sum(rles) + 1)
    return 8 + 8 * 9 + data


def _write_batch(num_shards):
    return num_shards * max(1, _WRITE_BATCH // num_shards)


def _rows_of_shards(row_bytes, num_shards, batch):
    """Row sizes per shard as FileWriter spreads each ``write_raw_data`` call: contiguous
    blocks of ``len(call) // num_shards`` rows, one more for the first ``len(call) % num_shards``
    shards (measured; exact for the full calls, whose length is a multiple of the shards)."""
    shards = [[] for _ in range(num_shards)]
    for start in range(0, len(row_bytes), batch):
        rows = row_bytes[start:start + batch]
        block, extra = divmod(len(rows), num_shards)
        begin = 0
        for shard in range(num_shards):
            end = begin + block + (shard < extra)
            shards[shard].extend(rows[begin:end])
            begin = end
    return shards


def _padded_bytes(rows, page):
    """Bytes of the pages of a shard holding ``rows`` (in order), each padded to ``page``.

    Blob pages fill greedily across ``write_raw_data`` calls. The raw page (the small columns)
    takes the slot after the first call's blob pages: it is padded too unless it ends the file,
    which is certain only when one blob page holds the whole shard.
    """
    pages, used = 1, 0
    for size in rows:
        if used + size > page:
            pages, used = pages + 1, 0
        used += size
    return (pages + (pages > 1)) * page


_MIN_PAGE, _MAX_PAGE = 1 << 15, 1 << 25  # MindRecord allows 256 MB; 32 MB is its default
_SIMULATED_ROWS = 20000


def _page_and_header_size(row_bytes, num_shards, batch=None):
    """MindRecord page and header sizes that keep padding small.

    Every page, the last blob page included, is padded to the page size, so small shards can
    lose a third of their size to padding with a fixed page size. Up to ``_SIMULATED_ROWS`` rows the
    page size is chosen by simulating the page filling over a grid of sizes (up to one page per
    shard); beyond, a page holds ~sqrt(rows per shard) rows, which balances
    the half row lost per page against the half page lost at the end (< 1% at COCO sizes).
    The header lists the pages (~190 bytes each, measured; 512 reserved).
    """
    batch = batch or _write_batch(num_shards)
    max_row = max(row_bytes)
    smallest = max(max_row + 64, _MIN_PAGE)
    shards = _rows_of_shards(row_bytes, num_shards, batch)
    if len(row_bytes) <= _SIMULATED_ROWS:
        largest = max(max(sum(rows) for rows in shards), smallest)
        points = int(np.clip(4_000_000 // len(row_bytes), 48, 400))  # ~1 s of simulation
        grid = np.unique(np.geomspace(smallest, largest, points))
        grid = grid[(grid >= smallest) & (grid <= max(_MAX_PAGE, smallest))].astype(np.int64)
        cost = [sum(_padded_bytes(rows, int(page)) for rows in shards) for page in grid]
        page = int(grid[int(np.argmin(cost))])
    else:
        rows_per_page = int(np.clip(np.sqrt(len(row_bytes) / num_shards), 4, 64))
        page = int(max(rows_per_page * float(np.mean(row_bytes)), smallest))
    page = -(-min(page, max(_MAX_PAGE, smallest)) // 8) * 8
    if page > 1 << 28:
        raise DataError(f"an image row of {max_row} bytes does not fit MindRecord's largest "
                        f"page (256 MB)")
    blob_pages = max(_padded_bytes(rows, page) // page for rows in shards)  # + the raw page
    raw_pages = max(len(rows) for rows in shards) * 256 // page + 1
    header = 1 << int(np.ceil(np.log2(max(1 << 14, 8192 + 512 * (blob_pages + raw_pages)))))
    return page, min(header, 1 << 27)


def _remove_stale_temp_dirs(prefix):
    for path in _temp_dirs(prefix):
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
    meta = prefix + _META_SUFFIX
    if os.path.exists(meta):
        os.remove(meta)
    folder, name = os.path.split(prefix)
    for path in glob.glob(os.path.join(glob.escape(folder), glob.escape(name) + ".mindrecord*")):
        if _SHARD_RE.match(path[:-3] if path.endswith(".db") else path):
            os.remove(path)


def _publish(temp_dir, prefix, names, meta):
    _remove_finished(prefix)
    folder = os.path.dirname(prefix)
    for name in reversed(names):  # shard 0 last: MindDataset opens it and reads the others
        os.replace(os.path.join(temp_dir, name + ".db"), os.path.join(folder, name + ".db"))
        os.replace(os.path.join(temp_dir, name), os.path.join(folder, name))
    temp_meta = os.path.join(temp_dir, "meta.json")
    with open(temp_meta, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    os.replace(temp_meta, prefix + _META_SUFFIX)
    os.rmdir(temp_dir)


def _log_stderr(message):
    print(message, file=sys.stderr, flush=True)


def _start_pool(workers):
    """A process pool, or None for ``workers <= 1``. Forked (fast) while mindspore is not
    loaded; forkserver otherwise, so workers never inherit mindspore's threads."""
    if workers <= 1:
        return None
    methods = multiprocessing.get_all_start_methods()
    method = "fork" if "mindspore" not in sys.modules and "fork" in methods else \
        "forkserver" if "forkserver" in methods else "spawn"
    return multiprocessing.get_context(method).Pool(workers)


def convert_coco_to_mindrecord(dataset_dir, split, output_prefix, num_shards=1, workers=1,
                               strict=False, progress=True, log=_log_stderr, ann_file=None,
                               image_dir=None):
    """Write the COCO ``split`` of ``dataset_dir`` as ``num_shards`` MindRecord shards.

    ``ann_file`` / ``image_dir`` override the COCO 2017 layout. Bad inputs are named through
    ``log`` and skipped, or raise :class:`~mindseg.dataset.coco.DataError` with ``strict``;
    nothing with a final name is left behind unless the conversion finished. Returns stats:
    ``images`` written, ``skipped_images``, ``problems`` (all skipped items), ``seconds``,
    ``images_per_s``, ``shard_bytes``, ``image_bytes``, ``bytes_per_image``, ``shards``, ``meta``.
    """
    start = time.perf_counter()
    if num_shards < 1 or num_shards > 1000:
        raise ValueError(f"num_shards must be in 1..1000, got {num_shards}")
    if ann_file is None or image_dir is None:
        default_ann, default_dir = coco_paths(dataset_dir, split)
        ann_file, image_dir = ann_file or default_ann, image_dir or default_dir
    dataset = CocoDataset(ann_file, image_dir, crowd="ignore", filter_empty=False, strict=strict)
    for problem in dataset.problems:
        log(problem_line(problem))
    records = dataset.records
    if len(records) < num_shards:
        raise DataError(f"{ann_file}: {len(records)} usable images in split {split!r}, fewer "
                        f"than the {num_shards} shards asked for ({dataset.summary()})")

    prefix = _normalize_prefix(output_prefix)
    folder, name = os.path.split(prefix)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temp_dirs(prefix)
    temp_dir = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(temp_dir, ignore_errors=True)
    os.makedirs(temp_dir)
    names = shard_names(prefix, num_shards)

    problems = list(dataset.problems)
    written, image_bytes, num_instances, num_crowd, num_empty = 0, 0, 0, 0, 0
    finished = False
    pool = _start_pool(workers)
    try:
        import_start = time.perf_counter()
        from mindspore.mindrecord import FileWriter  # after forking the workers
        import_seconds = time.perf_counter() - import_start  # not conversion work
        writer = FileWriter(os.path.join(temp_dir, name + ".mindrecord"), shard_num=num_shards,
                            overwrite=True)
        page, header = _page_and_header_size([_blob_row_bytes(r) for r in records],
                                             num_shards)
        writer.set_page_size(page)
        writer.set_header_size(header)
        writer.add_schema(SCHEMA, "mindseg coco instances")
        from tqdm import tqdm
        bar = tqdm(total=len(records), unit="img", desc=f"convert {split}",
                   disable=not progress, file=sys.stderr)
        say = (lambda message: bar.write(message, file=sys.stderr)) if progress else log
        batch = []
        prepared = (pool.imap(_prepare_row, records, chunksize=8) if pool
                    else map(_prepare_row, records))
        for row, problem in prepared:
            bar.update(1)
            if problem is not None:
                if strict:
                    raise DataError(f"{ann_file}: {problem}")
                problems.append(problem)
                say(f"skipped: {problem}")
                continue
            batch.append(row)
            written += 1
            image_bytes += len(row["image_bytes"])
            num_instances += row["num_instances"]
            num_crowd += row["num_crowd"]
            num_empty += row["num_instances"] == row["num_crowd"]
            if len(batch) >= _write_batch(num_shards):
                writer.write_raw_data(batch)
                batch = []
        bar.close()
        if written == 0:
            raise DataError(f"{ann_file}: every image of split {split!r} was skipped")
        if batch:
            writer.write_raw_data(batch)
        writer.commit()
        shard_bytes = sum(os.path.getsize(os.path.join(temp_dir, n)) for n in names)
        meta = {
            "format": "mindseg coco instances",
            "encoding_version": ENCODING_VERSION,
            "split": split,
            "ann_file": os.path.abspath(ann_file),
            "image_dir": os.path.abspath(image_dir),
            "num_classes": dataset.num_classes,
            "class_names": dataset.class_names,
            "category_ids": dataset.category_ids,
            "num_images": written,
            "num_instances": int(num_instances),
            "num_crowd": int(num_crowd),
            "num_empty": int(num_empty),
            "num_shards": num_shards,
            "shards": names,
            "num_problems": len(problems),
            "problem_counts": problem_counts(problems),
            "problems": [str(p) for p in problems[:_MAX_PROBLEMS_IN_META]],
        }
        _publish(temp_dir, prefix, names, meta)
        finished = True
    finally:
        if pool is not None:
            pool.terminate()
        if not finished:
            shutil.rmtree(temp_dir, ignore_errors=True)

    seconds = time.perf_counter() - start - import_seconds
    return {
        "images": written,
        "skipped_images": len(records) - written + count_skipped_images(dataset.problems),
        "problems": len(problems),
        "problem_counts": problem_counts(problems),
        "seconds": seconds,
        "images_per_s": written / max(seconds, 1e-9),
        "shard_bytes": shard_bytes,
        "image_bytes": image_bytes,
        "bytes_per_image": shard_bytes / written,
        "shards": [os.path.join(folder, n) for n in names],
        "meta": prefix + _META_SUFFIX,
    }


