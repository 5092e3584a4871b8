"""Time inference of one image, or one training step at the config's batch (with its optimizer,
weight decay and gradient clip, as train.py builds them), after warm-up; or run the suite of
measurements that guards mindseg's figures.

    python scripts/benchmark.py --config CFG --task infer|train [--height H --width W]
                                [--iters N] [--mode graph|pynative] [--num_classes K]
                                [--breakdown] [--profile DIR]
    python scripts/benchmark.py --suite [--case NAME ...] [--record]

``--suite`` runs the COCO-size training steps (Mask R-CNN R50-FPN and CenterMask V-39, batch 2,
800x1344), their inference, and the shapes training step, each in a process of its own, and
flags (exit 1) a time or peak RSS more than 10% above the figure recorded for this machine in
docs/benchmarks.md; ``--record`` writes this run's figures there instead (dev/benchmark_suite.py).

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
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dev"))
import mindseg  # noqa: E402,F401  (before mindspore: fast oneDNN CPU kernels)

sys.unraisablehook = lambda unraisable: None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--task", choices=("infer", "train"), default="infer")
    parser.add_argument("--height", type=int, default=0, help="canvas height (0: the config's)")
    parser.add_argument("--width", type=int, default=0, help="canvas width (0: the config's)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--num_classes", type=int, default=80)
    parser.add_argument("--batch", type=int, default=0,
                        help="images per step (0: the config's data.batch_size for train, 1 for infer)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time each stage on its own (and forward / backward / optimizer)")
    parser.add_argument("--jit_level", choices=("", "O0", "O1", "O2"), default="",
                        help="GRAPH mode: MindSpore's compilation level (default: MindSpore's)")
    parser.add_argument("--profile", default="",
                        help="also run the timed calls under MindSpore's profiler, writing to this "
                             "folder, and print the kernel time per op type")
    parser.add_argument("--suite", action="store_true",
                        help="run the benchmark suite and compare it with the recorded figures")
    parser.add_argument("--case", action="append", default=[],
                        help="--suite: only the cases whose name contains this (repeatable)")
    parser.add_argument("--record", action="store_true",
                        help="--suite: record this run's figures for this machine in docs/benchmarks.md")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if not args.suite and not args.config:
        parser.error("--config is required (or --suite)")
    if (args.case or args.record) and not args.suite:
        parser.error("--case and --record go with --suite")
    return args


def profile_op_types(run, iters, folder, top=15):
    """Run ``run()`` ``iters`` times under MindSpore's profiler; print and return the kernel
    milliseconds per call of the ``top`` op types (forward and backward kernels apart)."""
    import csv
    import glob
    import mindspore as ms

    profiler = ms.Profiler(output_path=folder)
    for _ in range(iters):
        run()
    profiler.stop()
    profiler.analyse()
    tables = sorted(glob.glob(os.path.join(folder, "*", "FRAMEWORK", "cpu_op_type_info_*.csv")),
                    key=os.path.getmtime)
    if not tables:
        sys.exit(f"benchmark.py: the profiler wrote no CPU op table under {folder}")
    with open(tables[-1], newline="") as f:
        rows = [(r["op_type"], float(r["total_compute_time"]) / iters) for r in csv.DictReader(f)]
    rows.sort(key=lambda r: -r[1])
    total = sum(ms_ for _, ms_ in rows)
    print(f"kernel time per call: {total:.1f} ms over {len(rows)} op types", file=sys.stderr)
    for op_type, ms_ in rows[:top]:
        print(f"  {op_type:32s} {ms_:8.1f} ms  {100 * ms_ / total:5.1f}%", file=sys.stderr)
    return {op_type: round(ms_, 2) for op_type, ms_ in rows[:top]}


def synthetic_batch(height, width, num_gt, mask_crop, max_instances, rng, batch=1):
    """``batch`` random images, each with ``num_gt`` boxes with full crops, padded as the pipeline
    pads them."""
    import numpy as np
    if batch > 1:
        images = [synthetic_batch(height, width, num_gt, mask_crop, max_instances, rng)
                  for _ in range(batch)]
        return tuple(np.concatenate(column) for column in zip(*images))
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


def timed(fn, iters, warmup):
    """Median and min seconds of ``fn()`` over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def breakdown(net, cfg, batch, args):
    """{stage: median s}: the forward stages, and for training forward / backward / optimizer."""
    import mindspore as ms
    from benchmark_stages import STAGES, check_against, replay_last_key, time_stages
    from mindseg.engine.trainer import TRAIN_INPUTS

    jit = args.mode == "graph"
    state = dict(zip(TRAIN_INPUTS, batch))
    state["gt_valid_nc"] = ms.ops.logical_and(state["gt_valid"], ms.ops.logical_not(state["gt_crowd"]))
    stages, outputs = STAGES[cfg.model.name](net, args.task == "train")
    times, final = time_stages(stages, state, jit, args.iters, args.warmup)
    if args.task == "train":
        replay_last_key(net)
    whole = net(*(batch if args.task == "train" else batch[:2]))
    worst = check_against(final, outputs, whole)
    print(f"stages follow the whole network (max output difference {worst:.2g})", file=sys.stderr)
    return times


def main(argv=None):
    args = parse_args(argv)
    if args.suite:
        from benchmark_suite import run_suite
        sys.exit(run_suite(args.case, write=args.record))
    import numpy as np
    import mindspore as ms
    from mindseg.config import load_config
    from mindseg.engine.lr_schedule import LRSettings, build_lr_schedule
    from mindseg.engine.train_step import TrainStep, optimizer_from_config
    from mindseg.models import build_model

    overrides = list(args.overrides)
    if args.height and args.width:
        if args.height % 32 or args.width % 32:
            sys.exit("benchmark.py: --height and --width must be multiples of 32")
        overrides.append(f"data.canvas=[{args.height}, {args.width}]")
    cfg = load_config(args.config, overrides)
    height, width = cfg.data.canvas
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == "graph" else ms.PYNATIVE_MODE)
    if args.jit_level:
        ms.set_context(jit_config={"jit_level": args.jit_level})
    ms.set_seed(0)
    net = build_model(cfg, num_classes=args.num_classes)
    batch_size = args.batch or (cfg.data.batch_size if args.task == "train" else 1)
    batch = [ms.Tensor(a) for a in synthetic_batch(height, width, 5, cfg.data.mask_crop,
                                                   cfg.data.max_instances,
                                                   np.random.default_rng(0), batch_size)]
    extra = {}
    if args.task == "infer":
        from mindseg.engine.runners import compile_network
        net.set_train(False)
        compile_network(net, batch[0], batch[1])  # as eval.py, infer.py and Predictor do

        def run():
            outputs = net(batch[0], batch[1])
            outputs[0].asnumpy()
    else:
        net.set_train(True)
        total = 3 * (args.warmup + args.iters)  # the profiled calls and --breakdown step it too
        lr = build_lr_schedule(LRSettings(base_lr=1e-4, reference_batch=1), 1, total)
        # the config's optimizer, weight decay and clip, as train.py builds them
        step = TrainStep(net, optimizer_from_config(net, lr, cfg.train),
                         clip_grad_norm=cfg.train.clip_grad_norm,
                         lean_conv_max_channels=cfg.train.lean_conv_max_channels, jit=args.mode == "graph")

        def run():
            loss, _, _ = step(*batch)
            float(loss)

    median_s, min_s = timed(run, args.iters, args.warmup)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if args.profile:
        extra["op_types_ms"] = profile_op_types(run, args.iters, args.profile)
    if args.breakdown:
        if args.task == "train":
            extra["train"] = train_phases(net, step.optimizer, batch, args)
        extra["stages"] = {name: round(t, 4) for name, t in breakdown(net, cfg, batch, args).items()}
        print_table(median_s, extra)
    print(json.dumps({"config": args.config, "task": args.task, "mode": args.mode,
                      "height": height, "width": width, "batch": batch_size,
                      "median_s": round(median_s, 4), "min_s": round(min_s, 4),
                      "iters": args.iters, "peak_rss_mb": round(peak_rss_mb, 1),
                      "threads": os.cpu_count(), **extra}))


def train_phases(net, optimizer, batch, args):
    """Forward, backward (forward + backward minus forward) and the optimizer update on its
    own, each median seconds. The three run in turn in every iteration, so that a drift of the
    machine's speed shifts them alike. The forward runs in training mode.

    Each phase is a graph of its own, and their sum exceeds the fused training step (shapes
    recipe: forward 0.24 s + backward 0.65 s against a whole step of 0.66 s): compare phases with
    each other, and the step with the step."""
    import mindspore as ms

    def forward(*inputs):
        losses = net(*inputs)
        total = losses[0]
        for loss in losses[1:]:
            total = total + loss
        return total

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters)

    def update(grads):  # a tensor that waits for the update, to sync on
        return ms.ops.depend(ms.ops.ones((), ms.float32), optimizer(grads))
    if args.mode == "graph":
        forward, grad_fn, update = ms.jit(forward), ms.jit(grad_fn), ms.jit(update)
    grads = grad_fn(*batch)[1]
    calls = {"forward": lambda: forward(*batch).asnumpy(),
             "forward + backward": lambda: grad_fn(*batch)[0].asnumpy(),
             "optimizer": lambda: update(grads).asnumpy()}
    times = {name: [] for name in calls}
    for i in range(args.warmup + args.iters):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    forward_s, both_s, update_s = (statistics.median(times[name]) for name in calls)
    return {"forward": round(forward_s, 4), "backward": round(both_s - forward_s, 4),
            "optimizer": round(update_s, 4)}


def print_table(median_s, extra):
    rows = list(extra.get("train", {}).items()) + list(extra["stages"].items())
    print(f"{'whole (one graph)':<40} {median_s:8.4f} s", file=sys.stderr)
    for name, seconds in rows:
        print(f"  {name:<38} {seconds:8.4f} s", file=sys.stderr)
    total = sum(t for name, t in extra["stages"].items() if "(alone" not in name)
    print(f"  {'sum of the forward stages':<38} {total:8.4f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
