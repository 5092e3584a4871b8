"""Detect and segment instances in images with a checkpoint or an exported MINDIR graph.

python infer.py --config CFG (--ckpt_path PATH | --mindir PATH) --input IMG_OR_DIR --output DIR
                [--score_thresh T] [key=value ...]

Writes DIR/<name>.png (masks, boxes, class names and scores drawn on the image) and DIR/<name>.json
(the image's detections in the COCO results format, with an ``image`` file name instead of an
``image_id``) for the detections scored >= --score_thresh (the config's eval.draw_thresh unless
given), and prints one line per drawing: ``<name>.png: N detections``. <name> is the
image's file name without its extension; images whose names differ only in extension keep it, so
that each keeps its outputs (x.jpg and x.png give x.jpg.png / x.jpg.json and x.png.png /
x.png.json). Images are preprocessed exactly as the evaluation pipeline does; with --mindir the preprocessing and class
names come from the JSON written beside the graph, with --ckpt_path the class names from the
checkpoint (the dataset only for checkpoints that do not carry them). An image that cannot be
read is named, skipped and counted ("N images, M skipped"); the exit status is non-zero only when
none could be processed.
"""
import json
import os
import sys

import mindseg  # noqa: F401  (before mindspore: fast oneDNN CPU kernels)
from mindseg.cli import (ScriptError, build_parser, check_writable, config_from_args, list_images,
                         output_stems, script_errors)


def main(argv=None):
    parser = build_parser("infer", __doc__.splitlines()[0])
    parser.add_argument("--mindir", default=None, help="an exported graph (with its .json beside it)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, help="folder for the drawings and JSON files")
    args = parser.parse_intermixed_args(argv)
    with script_errors("infer.py"):
        import cv2
        from mindseg.dataset.transforms import ImageDecodeError
        from mindseg.models.postprocess import coco_results
        from mindseg.predictor import Predictor

        cfg = config_from_args(args)
        if bool(args.mindir) == bool(cfg.eval.ckpt_path):
            raise ScriptError("give exactly one of --ckpt_path (a checkpoint) and --mindir (an "
                              "exported graph)")
        paths = list_images(args.input)
        stems = output_stems(paths)
        check_writable(args.output)
        predictor = Predictor(cfg, checkpoint=cfg.eval.ckpt_path or None, mindir=args.mindir,
                              score_thresh=cfg.eval.draw_thresh)
        os.makedirs(args.output, exist_ok=True)
        counts, skipped = {}, []
        for path in paths:
            try:
                detections = predictor(path)
            except (OSError, ImageDecodeError) as err:
                print(f"infer.py: skipped {path}: {_why(err)}", file=sys.stderr, flush=True)
                skipped.append(path)
                continue
            name, stem = os.path.basename(path), stems[path]
            drawing = os.path.join(args.output, stem + ".png")
            if not cv2.imwrite(drawing, predictor.draw(path, detections)):
                raise ScriptError(f"cannot write {drawing}")
            results = coco_results(dict(detections, labels=detections["class_ids"]),
                                   predictor.category_ids, {"image": name}, rounded=True)
            with open(os.path.join(args.output, stem + ".json"), "w", encoding="utf-8") as f:
                json.dump(results, f)
            counts[name] = len(results)
            print(f"{stem}.png: {len(results)} detection{'' if len(results) == 1 else 's'}", flush=True)
        if not counts:
            raise ScriptError(f"--input {args.input}: none of its {len(paths)} image(s) could be "
                              f"read ({len(skipped)} skipped)")
        print(f"{len(paths)} images, {len(skipped)} skipped; {sum(counts.values())} detection(s) "
              f"with score >= {cfg.eval.draw_thresh} -> {args.output}")
    return counts


def _why(err):
    if isinstance(err, OSError):
        return f"cannot read it: {err.strerror or err}"
    return f"not a decodable image ({err})"


if __name__ == "__main__":
    main()
