"""The conversion driver: a COCO split read, checked and encoded in worker processes, written by
MindRecord's FileWriter into a temporary folder and published when finished."""
import multiprocessing
import os
import shutil
import sys
import time

from mindseg.dataset.coco import CocoDataset, DataError, coco_paths
from mindseg.dataset.image_bytes import check_image_bytes, image_size_of_bytes
from mindseg.dataset.mindrecord.encoding import ENCODING_VERSION, SCHEMA, record_to_row
from mindseg.dataset.mindrecord.pages import blob_row_bytes, page_and_header_size, write_batch
from mindseg.dataset.mindrecord.paths import META_SUFFIX, normalize_prefix, shard_names
from mindseg.dataset.mindrecord.publish import publish, remove_stale_temp_dirs
from mindseg.dataset.problems import (Problem, ProblemLog, count_skipped_images, problem_counts,
                                      write_problem_list)

_MAX_PROBLEMS_IN_META = 1000
PROBLEMS_SUFFIX = ".problems.txt"


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
    ``images_per_s``, ``shard_bytes``, ``image_bytes``, ``bytes_per_image``, ``shards``, ``meta``,
    ``problem_list`` (where they are all listed: ``OUT_PREFIX.problems.txt``; None without
    problems). Only the first few problems of each kind are named through ``log``.
    """
    start = time.perf_counter()
    if num_shards < 1 or num_shards > 1000:
        raise ValueError(f"num_shards must be in 1..1000, got {num_shards}")
    if ann_file is None or image_dir is None:
        default_ann, default_dir = coco_paths(dataset_dir, split)
        ann_file, image_dir = ann_file or default_ann, image_dir or default_dir
    dataset = CocoDataset(ann_file, image_dir, crowd="ignore", filter_empty=False, strict=strict)
    named = ProblemLog(log)
    for problem in dataset.problems:
        named(problem)
    records = dataset.records
    if len(records) < num_shards:
        raise DataError(f"{ann_file}: {len(records)} usable images in split {split!r}, fewer "
                        f"than the {num_shards} shards asked for ({dataset.summary()})")

    prefix = normalize_prefix(output_prefix)
    folder, name = os.path.split(prefix)
    os.makedirs(folder, exist_ok=True)
    remove_stale_temp_dirs(prefix)
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
        page, header = page_and_header_size([blob_row_bytes(r) for r in records],
                                             num_shards)
        writer.set_page_size(page)
        writer.set_header_size(header)
        writer.add_schema(SCHEMA, "mindseg coco instances")
        from tqdm import tqdm
        bar = tqdm(total=len(records), unit="img", desc=f"convert {split}",
                   disable=not progress, file=sys.stderr)
        named.log = (lambda message: bar.write(message, file=sys.stderr)) if progress else log
        batch = []
        prepared = (pool.imap(_prepare_row, records, chunksize=8) if pool
                    else map(_prepare_row, records))
        for row, problem in prepared:
            bar.update(1)
            if problem is not None:
                if strict:
                    raise DataError(f"{ann_file}: {problem}")
                problems.append(problem)
                named(problem)
                continue
            batch.append(row)
            written += 1
            image_bytes += len(row["image_bytes"])
            num_instances += row["num_instances"]
            num_crowd += row["num_crowd"]
            num_empty += row["num_instances"] == row["num_crowd"]
            if len(batch) >= write_batch(num_shards):
                writer.write_raw_data(batch)
                batch = []
        bar.close()
        named.log = log
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
        publish(temp_dir, prefix, names, meta)
        finished = True
    finally:
        named.close()
        if pool is not None:
            pool.terminate()
        if not finished:
            shutil.rmtree(temp_dir, ignore_errors=True)

    problem_list = _write_problem_list(problems, prefix + PROBLEMS_SUFFIX)
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
        "meta": prefix + META_SUFFIX,
        "problem_list": problem_list,
    }


def _write_problem_list(problems, path):
    """The summary's phrase for the list of every problem beside the shards (a stale list of an
    earlier conversion of the same prefix is removed when there is none)."""
    if problems:
        return write_problem_list(problems, path)
    try:
        os.remove(path)
    except OSError:
        pass
    return None
