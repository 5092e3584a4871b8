"""Time inference of one image, or one training step at batch 1, after warm-up.

    python scripts/benchmark.py --config CFG --task infer|train [--height H --width W]
                                [--iters N] [--mode graph|pynative] [--num_classes K]

Prints one JSON line per measurement with the keys config, task, mode, height, width, median_s,
peak_rss_mb (and min_s, iters, threads). The image is random noise on an H x W canvas (multiples
of 32; the default is the config's canvas); weights are random, which does not change the amount
of work except for the number of detections, fixed by the static shapes.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mindseg  # noqa: E402,F401  (before mindspore: fast oneDNN CPU kernels)

sys.unraisablehook = lambda unraisable: None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--task", choices=("infer", "train"), default="infer")
    parser.add_argument("--height", type=int, default=0, help="canvas height (0: the config's)")
    parser.add_argument("--width", type=int, default=0, help="canvas width (0: the config's)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--num_classes", type=int, default=80)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def synthetic_batch(height, width, num_gt, mask_crop, max_instances, rng):
    """Random image and ``num_gt`` boxes with full crops, padded as the pipeline pads them."""
    import numpy as np
    image = rng.standard_normal((1, 3, height, width)).astype(np.float32)
    gt_boxes = np.zeros((1, max_instances, 4), np.float32)
    side = min(height, width)
    for i in range(num_gt):
        x0, y0 = rng.uniform(0, width * 0.6), rng.uniform(0, height * 0.6)
        size = rng.uniform(side * 0.05, side * 0.4, 2)
        gt_boxes[0, i] = (x0, y0, min(width, x0 + size[0]), min(height, y0 + size[1]))
    gt_labels = np.zeros((1, max_instances), np.int32)
    gt_labels[0, :num_gt] = rng.integers(0, 5, num_gt)
    gt_valid = np.zeros((1, max_instances), bool)
    gt_valid[0, :num_gt] = True
    gt_masks = np.zeros((1, max_instances, mask_crop, mask_crop), np.uint8)
    gt_masks[0, :num_gt] = 1
    image_size = np.array([[height, width]], np.float32)
    return image, image_size, gt_boxes, gt_labels, gt_valid, np.zeros_like(gt_valid), gt_masks


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import mindspore as ms
    from mindseg.config import load_config
    from mindseg.engine.lr_schedule import build_lr_schedule
    from mindseg.engine.train_step import TrainStep, build_optimizer
    from mindseg.models import build_model

    overrides = list(args.overrides)
    if args.height and args.width:
        if args.height % 32 or args.width % 32:
            sys.exit("benchmark.py: --height and --width must be multiples of 32")
        overrides.append(f"data.canvas=[{args.height}, {args.width}]")
    cfg = load_config(args.config, overrides)
    height, width = cfg.data.canvas
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_seed(0)
    net = build_model(cfg, num_classes=args.num_classes)
    batch = [ms.Tensor(a) for a in synthetic_batch(height, width, 5, cfg.data.mask_crop,
                                                   cfg.data.max_instances,
                                                   np.random.default_rng(0))]
    if args.task == "infer":
        net.set_train(False)

        def run():
            outputs = net(batch[0], batch[1])
            outputs[0].asnumpy()
    else:
        net.set_train(True)
        total = args.warmup + args.iters
        lr = build_lr_schedule(1e-4, 1, 1, 0, 1.0, [], 0.1, total)
        step = TrainStep(net, build_optimizer(net, lr), jit=args.mode == "graph")

        def run():
            loss, _, _ = step(*batch)
            float(loss)

    for _ in range(args.warmup):
        run()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"config": args.config, "task": args.task, "mode": args.mode,
                      "height": height, "width": width,
                      "median_s": round(statistics.median(times), 4),
                      "min_s": round(min(times), 4), "iters": args.iters,
                      "peak_rss_mb": round(peak_rss_mb, 1), "threads": os.cpu_count()}))


if __name__ == "__main__":
    main()
