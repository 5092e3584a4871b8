"""Detect and segment instances in images with a checkpoint or an exported MINDIR graph.

python infer.py --config CFG (--ckpt_path PATH | --mindir PATH) --input IMG_OR_DIR --output DIR
                [--score_thresh 0.5] [key=value ...]

Writes DIR/<name>.png (masks, boxes, class names and scores drawn on the image) and DIR/<name>.json
(the image's detections in the COCO results format, with an ``image`` file name instead of an
``image_id``), and prints one line per drawing: ``<name>.png: N detections``. <name> is the
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
from mindseg.utils.visualize import SCORE_THRESH


def main(argv=None):
    parser = build_parser("infer", __doc__.splitlines()[0])
    parser.add_argument("--mindir", default=None, help="an exported graph (with its .json beside it)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, help="folder for the drawings and JSON files")
    parser.add_argument("--score_thresh", type=float, default=SCORE_THRESH,
                        help="drop weaker detections")
    args = parser.parse_intermixed_args(argv)
    with script_errors("infer.py"):
        import cv2
        from mindseg.engine import inference
        from mindseg.models.postprocess import coco_results, image_detections
        from mindseg.runtime import set_device_and_mode
        from mindseg.utils.visualize import draw_instances

        cfg = config_from_args(args)
        if bool(args.mindir) == bool(cfg.eval.ckpt_path):
            raise ScriptError("give exactly one of --ckpt_path (a checkpoint) and --mindir (an "
                              "exported graph)")
        paths = list_images(args.input)
        stems = output_stems(paths)
        check_writable(args.output)
        set_device_and_mode(cfg.device_target, cfg.mode)
        runner, spec, class_names, category_ids = inference.build_runner(cfg, cfg.eval.ckpt_path,
                                                                         args.mindir)
        os.makedirs(args.output, exist_ok=True)
        batch_size = getattr(runner, "batch_size", None) or cfg.eval.batch_size
        counts, skipped = {}, []
        for start in range(0, len(paths), batch_size):
            chunk, samples = [], []
            for path in paths[start:start + batch_size]:
                sample, why = inference.preprocess_file(path, spec)
                if sample is None:
                    print(f"infer.py: skipped {path}: {why}", file=sys.stderr, flush=True)
                    skipped.append(path)
                    continue
                chunk.append(path)
                samples.append(sample)
            if not samples:
                continue
            outputs = inference.run_batched(runner, [s[0] for s in samples],
                                            [s[1] for s in samples], batch_size)
            for k, (path, (_, _, scale_hw, original)) in enumerate(zip(chunk, samples)):
                detections = image_detections(outputs, k, scale_hw, *original.shape[:2],
                                              score_thresh=args.score_thresh,
                                              mask_threshold=runner.mask_threshold, canvas_hw=spec.canvas)
                name, stem = os.path.basename(path), stems[path]
                drawn = draw_instances(original, detections["boxes"], detections["labels"],
                                       detections["scores"], detections["masks"], class_names)
                if not cv2.imwrite(os.path.join(args.output, stem + ".png"), drawn):
                    raise ScriptError(f"cannot write {os.path.join(args.output, stem + '.png')}")
                results = coco_results(detections, category_ids, {"image": name}, rounded=True)
                with open(os.path.join(args.output, stem + ".json"), "w", encoding="utf-8") as f:
                    json.dump(results, f)
                counts[name] = len(results)
                print(f"{stem}.png: {len(results)} detection{'' if len(results) == 1 else 's'}",
                      flush=True)
        if not counts:
            raise ScriptError(f"--input {args.input}: none of its {len(paths)} image(s) could be "
                              f"read ({len(skipped)} skipped)")
        print(f"{len(paths)} images, {len(skipped)} skipped; {sum(counts.values())} detection(s) "
              f"with score >= {args.score_thresh} -> {args.output}")
    return counts


if __name__ == "__main__":
    main()
