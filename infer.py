"""Detect and segment instances in images with a checkpoint or an exported MINDIR graph.

python infer.py --config CFG (--ckpt_path PATH | --mindir PATH) --input IMG_OR_DIR --output DIR
                [--score_thresh 0.5] [key=value ...]

Writes DIR/<name>.png (masks, boxes, class names and scores drawn on the image) and DIR/<name>.json
(the image's detections in the COCO results format, with an ``image`` file name instead of an
``image_id``). Images are preprocessed exactly as the evaluation pipeline does; with --mindir the
preprocessing and class names come from the JSON written beside the graph.
"""
import json
import os

import mindseg  # noqa: F401  (before mindspore: fast oneDNN CPU kernels)
from mindseg.cli import build_parser, config_from_args
from mindseg.engine.inference import ScriptError, script_errors


def build_runner(cfg, mindir):
    """``(runner, sample spec, class names, category ids)`` for a MINDIR graph or a checkpoint."""
    from mindseg.engine import inference
    if mindir:
        from mindseg.engine.exporter import ExportedModel
        model = ExportedModel(mindir)
        return (model, inference.spec_from_export(model.spec["preprocess"]),
                model.spec["class_names"], model.spec["category_ids"])
    from mindseg.dataset.pipeline import dataset_info, sample_spec
    info = dataset_info(cfg, "val")
    net = inference.build_network(cfg, inference.resolve_num_classes(cfg, info))
    inference.load_weights(net, cfg.eval.ckpt_path)
    from mindseg.engine import precision
    precision.for_inference(net, cfg)
    return (inference.NetworkRunner(net), sample_spec(cfg, training=False), info["class_names"],
            info["category_ids"])


def main(argv=None):
    parser = build_parser("infer", __doc__.splitlines()[0])
    parser.add_argument("--mindir", default=None, help="an exported graph (with its .json beside it)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, help="folder for the drawings and JSON files")
    parser.add_argument("--score_thresh", type=float, default=0.5, help="drop weaker detections")
    args = parser.parse_args(argv)
    with script_errors("infer.py"):
        import cv2
        from mindseg.engine import inference
        from mindseg.runtime import set_device_and_mode
        from mindseg.utils.visualize import draw_instances

        cfg = config_from_args(args)
        if bool(args.mindir) == bool(cfg.eval.ckpt_path):
            raise ScriptError("give exactly one of --ckpt_path (a checkpoint) and --mindir (an "
                              "exported graph)")
        paths = inference.list_images(args.input)
        set_device_and_mode(cfg.device_target, cfg.mode)
        runner, spec, class_names, category_ids = build_runner(cfg, args.mindir)
        os.makedirs(args.output, exist_ok=True)
        batch_size = getattr(runner, "batch_size", None) or cfg.eval.batch_size
        counts = {}
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            samples = []
            for path in chunk:
                with open(path, "rb") as f:
                    samples.append(inference.preprocess_image(f.read(), spec, path))
            outputs = inference.run_batched(runner, [s[0] for s in samples],
                                            [s[1] for s in samples], batch_size)
            for k, (path, (_, _, scale_hw, original)) in enumerate(zip(chunk, samples)):
                detections = inference.image_detections(outputs, k, scale_hw, *original.shape[:2],
                                                        score_thresh=args.score_thresh)
                name = os.path.basename(path)
                stem = os.path.splitext(name)[0]
                drawn = draw_instances(original, detections["boxes"], detections["labels"],
                                       detections["scores"], detections["masks"], class_names)
                if not cv2.imwrite(os.path.join(args.output, stem + ".png"), drawn):
                    raise ScriptError(f"cannot write {os.path.join(args.output, stem + '.png')}")
                results = inference.coco_results(detections, category_ids, name)
                with open(os.path.join(args.output, stem + ".json"), "w", encoding="utf-8") as f:
                    json.dump(results, f)
                counts[name] = len(results)
        print(f"{len(paths)} image(s), {sum(counts.values())} detection(s) with score >= "
              f"{args.score_thresh} -> {args.output}")
    return counts


if __name__ == "__main__":
    main()
