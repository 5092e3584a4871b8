"""Convert a COCO-format split to MindRecord shards.

python scripts/convert_coco.py --dataset_dir DIR --split train2017 --output OUT_PREFIX
    [--num_shards N] [--workers W] [--strict]
python scripts/convert_coco.py --ann_file ANN.json --image_dir IMAGES --output DIR/train2017 ...

The first form reads the COCO 2017 layout (DIR/annotations/instances_<split>.json, DIR/<split>/),
the second any COCO-format annotation file and image folder (the config's data.train_ann /
data.train_images). Train on the shards with data.format=mindrecord data.mindrecord_dir=DIR; the
output prefix's last part is the split name the config's data.train_split / data.val_split look for.

Writes OUT_PREFIX.mindrecord[0..N-1] (+ .db) and OUT_PREFIX.meta.json. Bad inputs are skipped,
the first few of each kind named and all counted at the end and listed in OUT_PREFIX.problems.txt,
or stop the conversion with --strict.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mindseg  # noqa: E402,F401  (before mindspore)
from mindseg.dataset.coco import DataError  # noqa: E402
from mindseg.dataset.problems import problem_summary  # noqa: E402
from mindseg.dataset.mindrecord import convert_coco_to_mindrecord  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", default=None,
                        help="COCO layout: annotations/instances_<split>.json and <split>/")
    parser.add_argument("--split", default=None, help="e.g. train2017 (with --dataset_dir)")
    parser.add_argument("--output", required=True,
                        help="output prefix, e.g. DIR/mindrecord/train2017")
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="image reading/checking processes")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad input")
    parser.add_argument("--ann_file", default=None, help="override the annotation file")
    parser.add_argument("--image_dir", default=None, help="override the image folder")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    by_path = args.ann_file is not None and args.image_dir is not None
    if not by_path and (args.dataset_dir is None or args.split is None):
        parser.error("give --dataset_dir and --split (COCO 2017 layout), or --ann_file and --image_dir")

    try:
        stats = convert_coco_to_mindrecord(
            args.dataset_dir or "", args.split or os.path.basename(args.output), args.output, num_shards=args.num_shards,
            workers=args.workers, strict=args.strict, progress=not args.no_progress,
            ann_file=args.ann_file, image_dir=args.image_dir)
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {stats['images']} images to {len(stats['shards'])} shard(s): "
          f"{stats['shards'][0]}{' ...' if len(stats['shards']) > 1 else ''}")
    print(f"{stats['images_per_s']:.1f} images/s ({args.workers} worker(s), "
          f"{stats['seconds']:.1f} s); {stats['bytes_per_image'] / 1024:.1f} KiB per image, "
          f"{stats['shard_bytes'] / max(stats['image_bytes'], 1):.3f}x the image bytes")
    listed = f"; {stats['problem_list']}" if stats["problem_list"] else ""
    print(f"{problem_summary(stats['skipped_images'], stats['problems'], stats['problem_counts'])}"
          f"{listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
