"""Evaluate a checkpoint on the val split: COCO bbox and segm AP (pycocotools), per-class AP.

python eval.py --config CFG --ckpt_path PATH [--mix True] [--dataset_dir DIR] [--output_dir DIR]
               [--strict] [key=value ...]

Writes OUTPUT_DIR/results.json (COCO results, original category ids) and OUTPUT_DIR/metrics.json
(AP, AP50, AP75, APs, APm, APl per iou type, in percent). Under msrun each rank infers its share of
the images and rank 0 merges them. Bad data is named and counted (refused with --strict); an image
that cannot be read is named and its ground truth left out of COCOeval.
"""
import sys

import mindseg  # noqa: F401  (before mindspore: fast oneDNN CPU kernels)
from mindseg.cli import parse
from mindseg.engine.inference import (build_network, checkpoint_classes, coco_results_fn,
                                      load_weights, script_errors, with_progress)


def main(argv=None):
    args, cfg = parse("eval", __doc__.splitlines()[0], argv)
    with script_errors("eval.py"):
        from mindseg.dataset.coco import coco_paths
        from mindseg.dataset.pipeline import create_dataset, dataset_info
        from mindseg.engine import precision
        from mindseg.engine.evaluator import run_evaluation
        from mindseg.runtime import init_runtime
        from mindseg.utils.modelarts import finish_modelarts, prepare_modelarts

        runtime = init_runtime(cfg)
        cfg = prepare_modelarts(cfg, runtime)
        info = dataset_info(cfg, "val", report=print if runtime.is_main else None)
        ckpt, info, num_classes = checkpoint_classes(cfg, cfg.eval.ckpt_path, info)
        net = build_network(cfg, num_classes)
        load_weights(net, ckpt)
        precision.for_inference(net, cfg)
        dataset = create_dataset(cfg, "val", runtime.rank, runtime.world)
        ann_file = coco_paths(cfg.data.dataset_dir, cfg.data.val_split)[0]
        log = print if runtime.is_main else (lambda *a: None)
        log(f"evaluating {ckpt} on {info['num_samples']} images of {ann_file}")
        progress = with_progress(dataset, runtime.is_main and sys.stderr.isatty())
        metrics = run_evaluation(net, progress, coco_results_fn(info["category_ids"], net.mask_threshold), ann_file,
                                 runtime, cfg.output_dir, log=log)
        finish_modelarts(cfg, runtime)
        if metrics is not None:
            print(f"bbox AP {metrics['bbox']['AP']:.2f}  segm AP {metrics['segm']['AP']:.2f}  "
                  f"(results and metrics.json in {cfg.output_dir})")
    return metrics


if __name__ == "__main__":
    main()
