"""Data benchmark: COCO -> MindRecord conversion and training-pipeline throughput.

    python scripts/bench_data.py [--num-images N] [--workers W] [--out DIR]

Writes N COCO-like JPEGs (synthetic shapes, long side 640) under DIR (kept between runs), times
the conversion with 1 and W workers and the training pipeline (800x1344 canvas, batch 2, flip and
resize as configured in config/base.yml) with 1 and 2 python workers, and prints a table with
the targets beside the measurements. "img/s/worker" divides the wall-clock rate by the worker
count; "img/CPU-s" divides images by the CPU time spent (this process and its workers), the
per-core rate that a busy shared machine does not distort. Targets are checked on the latter.
"""
import argparse
import gc
import json
import os
import resource
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import mindseg  # noqa: E402  (before mindspore)
from mindseg.config import load_config  # noqa: E402
from mindseg.dataset import pipeline as P  # noqa: E402
from mindseg.dataset import sample as S  # noqa: E402
from mindseg.dataset import sources  # noqa: E402

TARGET_CONVERT = 100.0      # images/s per core
TARGET_SHARD_RATIO = 1.3    # shard bytes / JPEG bytes
TARGET_PIPELINE = 10.0      # images/s per core


def make_dataset(out_dir, num_images):
    """Synthetic COCO 2017 layout with ``num_images`` train images; reused when present."""
    from mindseg.dataset.synthetic import make_synthetic_coco
    stamp = os.path.join(out_dir, "bench.json")
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f).get("num_images") == num_images:
                return
    shutil.rmtree(out_dir, ignore_errors=True)
    start = time.perf_counter()
    make_synthetic_coco(out_dir, num_train=num_images, num_val=1, seed=0, image_size=640)
    with open(stamp, "w") as f:
        json.dump({"num_images": num_images}, f)
    print(f"wrote {num_images} synthetic 640-px JPEGs to {out_dir} in "
          f"{time.perf_counter() - start:.1f} s", flush=True)


def cpu_seconds():
    """CPU time of this process (all threads) and of its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bench_conversion(out_dir, workers):
    """(conversion stats, images per CPU second)."""
    import mindspore.mindrecord  # noqa: F401  (import time is not conversion time)
    from mindseg.dataset.mindrecord import convert_coco_to_mindrecord
    cpu = cpu_seconds()
    stats = convert_coco_to_mindrecord(out_dir, "train2017",
                                       os.path.join(out_dir, "mindrecord", "train2017"),
                                       num_shards=1, workers=workers, progress=False,
                                       log=lambda message: None)
    return stats, stats["images"] / max(cpu_seconds() - cpu, 1e-9)


def bench_pipeline(out_dir, data_format, workers):
    """(images/s over one epoch, images per CPU second). Worker start-up is included: the
    pipeline of a training run starts once."""
    cfg = load_config(os.path.join(ROOT, "config", "base.yml"),
                      [f"data.dataset_dir={out_dir}", f"data.format={data_format}",
                       f"data.num_workers={workers}"])
    dataset = P.create_dataset(cfg, "train")
    cpu, start, count = cpu_seconds(), time.perf_counter(), 0
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    for batch in iterator:
        count += len(batch[0])
    seconds = time.perf_counter() - start
    del iterator, dataset
    gc.collect()
    time.sleep(0.5)
    return count / max(seconds, 1e-9), count / max(cpu_seconds() - cpu, 1e-9)


def bench_sample_function(out_dir, num_images):
    """Images/s of the per-sample work (read, decode, transforms, crops) on one core."""
    cfg = load_config(os.path.join(ROOT, "config", "base.yml"), [f"data.dataset_dir={out_dir}"])
    coco = sources.open_coco(cfg, "train")
    loader = sources.CocoLoader(coco)
    spec = S.sample_spec(cfg, training=True)
    count = min(num_images, len(coco.records), 50)
    start = time.process_time()
    for index in range(count):
        record = loader((index,))
        S.build_sample(record, spec, S.sample_rng(0, 0, record["image_id"]))
    return count / max(time.process_time() - start, 1e-9)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="conversion workers")
    parser.add_argument("--out", default="/tmp/mindseg_bench_data")
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_v", "3")

    make_dataset(args.out, args.num_images)
    rows = []
    for workers in sorted({1, args.workers}):
        stats, per_cpu = bench_conversion(args.out, workers)
        rate = stats["images_per_s"]
        if workers == 1:
            rows.append(("conversion, 1 worker", f"{rate:.1f}", f"{rate:.1f}", f"{per_cpu:.1f}",
                         f">= {TARGET_CONVERT:.0f}/core", per_cpu >= TARGET_CONVERT))
        else:  # forkserver workers are not our children: their CPU time is not measured
            rows.append((f"conversion, {workers} workers", f"{rate:.1f}",
                         f"{rate / workers:.1f}", "-", "", None))
    ratio = stats["shard_bytes"] / stats["image_bytes"]
    jpeg_kb = stats["image_bytes"] / stats["images"] / 1024
    annotation_kb = (stats["shard_bytes"] - stats["image_bytes"]) / stats["images"] / 1024
    rows.append((f"shard bytes / JPEG bytes ({jpeg_kb:.0f} KB JPEG + {annotation_kb:.0f} KB)",
                 f"{ratio:.3f}", "", "",
                 f"<= {TARGET_SHARD_RATIO}", ratio <= TARGET_SHARD_RATIO))
    rate = bench_sample_function(args.out, args.num_images)
    rows.append(("sample function (in process)", "", "", f"{rate:.1f}",
                 f">= {TARGET_PIPELINE:.0f}/core", rate >= TARGET_PIPELINE))
    for data_format in ("mindrecord", "coco"):
        for workers in (1, 2):
            rate, per_cpu = bench_pipeline(args.out, data_format, workers)
            rows.append((f"pipeline {data_format}, {workers} worker(s)", f"{rate:.1f}",
                         f"{rate / workers:.1f}", f"{per_cpu:.1f}",
                         f">= {TARGET_PIPELINE:.0f}/core", per_cpu >= TARGET_PIPELINE))

    header = ("measure", "img/s (wall)", "img/s/worker", "img/CPU-s", "target", "ok")
    widths = [max(len(str(r[k])) for r in rows + [header]) for k in range(5)]
    print(f"\n{args.num_images} images (640 px JPEG), 800x1344 canvas, mask crop 56, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths + [2])))
    for row in rows:
        verdict = "-" if row[5] is None else "yes" if row[5] else "NO"
        cells = [str(c).ljust(w) for c, w in zip(row[:5], widths)] + [verdict]
        print("  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
