"""Evaluate a checkpoint on the val split: COCO bbox and segm AP (pycocotools), per-class AP.

python eval.py --config CFG --ckpt_path PATH [--mix True] [--dataset_dir DIR] [--output_dir DIR]
               [--strict] [--draw N] [--draw_thresh T] [key=value ...]

Writes OUTPUT_DIR/results.json (COCO results, original category ids) and OUTPUT_DIR/metrics.json
(AP, AP50, AP75, APs, APm, APl per iou type, in percent); with --draw N also N pictures of val
images into OUTPUT_DIR/drawings/, the ground truth on the left and the detections with a score
>= --draw_thresh on the right. It prints the AP and how many val objects a detection scored
>= --draw_thresh finds (mask IoU >= 0.5) and names right (the best-scoring detection on an object
gives its name). --draw_thresh defaults to the config's eval.draw_thresh (0.5; lower for a model
whose scores run lower). Under msrun each rank infers its share of the images and rank 0 merges
them. Bad data is named and counted (refused with --strict); an image
that cannot be read is named and its ground truth left out of COCOeval.
"""
import json
import os
import sys

import mindseg  # noqa: F401  (before mindspore: fast oneDNN CPU kernels)
from mindseg.cli import build_parser, check_output_dir, parse, script_errors, with_progress


def main(argv=None):
    parser = build_parser("eval", __doc__.splitlines()[0])
    parser.add_argument("--draw", type=int, default=0, metavar="N",
                        help="draw N val images: ground truth left, predictions right")
    args, cfg = parse("eval", __doc__.splitlines()[0], argv, parser)
    with script_errors("eval.py"):
        check_output_dir(cfg)
        from mindseg.dataset.pipeline import create_dataset, dataset_info
        from mindseg.dataset.sources import split_paths
        from mindseg.engine.evaluator import coco_results_fn, run_evaluation
        from mindseg.engine.loading import load_trained_model
        from mindseg.runtime import init_runtime
        from mindseg.utils.modelarts import finish_modelarts, prepare_modelarts

        runtime = init_runtime(cfg)
        cfg = prepare_modelarts(cfg, runtime)
        info = dataset_info(cfg, "val", report=print if runtime.is_main else None)
        model = load_trained_model(cfg, cfg.eval.ckpt_path, info=info)
        net, ckpt, info = model.net, model.checkpoint, model.info
        dataset = create_dataset(cfg, "val", runtime.rank, runtime.world)
        ann_file, image_dir = split_paths(cfg, "val")
        log = print if runtime.is_main else (lambda *a: None)
        log(f"evaluating {ckpt} on {info['num_samples']} images of {ann_file}")
        progress = with_progress(dataset, runtime.is_main and sys.stderr.isatty())
        metrics = run_evaluation(net, progress, coco_results_fn(info["category_ids"], net.mask_threshold), ann_file,
                                 runtime, cfg.output_dir, log=log)
        if metrics is not None:
            print(f"bbox AP {metrics['bbox']['AP']:.2f}  segm AP {metrics['segm']['AP']:.2f}  "
                  f"(results and metrics.json in {cfg.output_dir})")
            from mindseg.engine.found import found_line
            _side_output("the found count", lambda: print(found_line(ann_file, _results(cfg), cfg.eval.draw_thresh)))
        if metrics is not None and args.draw > 0:
            from mindseg.engine.drawings import DrawSettings, draw_val_images
            drawing = DrawSettings(os.path.join(cfg.output_dir, "drawings"), args.draw, cfg.eval.draw_thresh)
            _side_output("--draw", lambda: draw_val_images(
                ann_file, image_dir, _results(cfg), info["class_names"], info["category_ids"], drawing))
        finish_modelarts(cfg, runtime)
    return metrics


def _results(cfg):
    with open(os.path.join(cfg.output_dir, "results.json"), "r", encoding="utf-8") as f:
        return json.load(f)


def _side_output(what, make):
    """Make a side output of a finished evaluation; whatever fails there is one line on stderr,
    and the evaluation, its metrics and the exit status stand."""
    try:
        make()
    except Exception as err:  # noqa: BLE001
        print(f"eval.py: {what} stopped, the evaluation and its metrics stand: "
              f"{type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)


if __name__ == "__main__":
    main()
