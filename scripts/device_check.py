"""Check mindseg on a device against the CPU, and its whole workflow on the device.

    python scripts/device_check.py --device_target GPU|Ascend|CPU [--config CFG ...] [--steps N]
                                   [--small] [--mode graph|pynative] [--work DIR]

For each config (default: the three of config/shapes/), on synthetic data:
1. the same initial weights and the same batch go through the first training step on the CPU and
   on the device: every named loss and the gradients' global norm must agree within LOSS_RTOL /
   GRAD_RTOL (relative, with an absolute floor ATOL); then ``--steps`` steps run on each and
   must stay finite;
2. train.py, eval.py, export.py (MINDIR) and infer.py (the exported graph) run on the device, as
   a user types them.
It prints one table row per check and a verdict; the exit status is 1 when a check fails.
``--device_target CPU`` compares the CPU with itself (tests/test_device_check.py runs it so that
the script keeps working); docs/platforms.md says where it has been run.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(SCRIPTS)
sys.path.insert(0, ROOT)
sys.path.insert(1, SCRIPTS)
import mindseg  # noqa: E402,F401  (before mindspore: fast oneDNN CPU kernels)
from op_audit import CONFIGS, load_small_config, make_data  # noqa: E402

sys.unraisablehook = lambda unraisable: None

# float32 kernels of another device sum in another order: 1e-3 of a loss; Ascend's convolutions
# may compute float32 in reduced precision (its default precision mode), hence the wider norm
LOSS_RTOL, GRAD_RTOL, ATOL = 1e-2, 5e-2, 1e-4
WORKFLOW_OVERRIDES = ["train.log_interval=1", "train.warmup_iters=1"]


def compare(reference, device, rtol, atol=ATOL):
    """``(difference, ok)`` of two numbers: ok when |device - reference| <= atol + rtol * |reference|
    and both are finite."""
    diff = abs(float(device) - float(reference))
    ok = bool(np.isfinite(reference) and np.isfinite(device) and diff <= atol + rtol * abs(float(reference)))
    return diff, ok


def first_step(cfg, weights, batch_file, steps):
    """Losses and gradient norm of the first step from ``weights`` on the batch in ``batch_file``
    (both written here when missing), then the totals of ``steps`` training steps."""
    import mindspore as ms
    from op_audit import build_train_step, first_batch
    from mindseg.engine.train_step import global_norm
    net, step = build_train_step(cfg, mix=False, jit=cfg.mode == "graph")
    if os.path.exists(weights):
        ms.load_param_into_net(net, ms.load_checkpoint(weights), strict_load=True)
    else:
        ms.save_checkpoint(net, weights)
    if not os.path.exists(batch_file):
        np.savez(batch_file, *first_batch(cfg))
    with np.load(batch_file) as arrays:
        batch = [ms.Tensor(arrays[f"arr_{i}"]) for i in range(len(arrays.files))]

    def forward(*inputs):
        losses = net(*inputs)
        total = losses[0]
        for loss in losses[1:]:
            total = total + loss
        return total, losses

    grad_fn = ms.value_and_grad(forward, None, step.optimizer.parameters, has_aux=True)
    (total, losses), grads = grad_fn(*batch)
    result = {"total loss": float(total), "grad norm": float(global_norm(grads))}
    names = step.loss_names or tuple(f"loss_{i}" for i in range(len(losses)))
    result.update({name: float(value) for name, value in zip(names, losses)})
    totals = [float(step(*batch)[0]) for _ in range(steps)]
    return result, totals


def worker(args):
    """One device's side of the comparison, in its own process; writes JSON to ``args.out``."""
    from mindseg.runtime import seed_everything, set_device_and_mode
    cfg = load_small_config(args.config[0], args.data, args.small, [f"mode={args.mode}"])
    set_device_and_mode(args.device_target, args.mode)
    seed_everything(int(cfg.seed))
    result, totals = first_step(cfg, args.weights, args.batch, args.steps)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"first_step": result, "totals": totals}, f)
    return 0


def _run(command, log):
    with open(log, "w", encoding="utf-8") as f:
        done = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              env=dict(os.environ, GLOG_v=os.environ.get("GLOG_v", "3")))
    return done.returncode


def _last_line(log):
    with open(log, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1][:100] if lines else ""


def compare_config(args, config, folder):
    """The first-step rows of one config: ``[(check, cpu, device, difference, tolerance, ok)]``."""
    os.makedirs(folder, exist_ok=True)
    results = {}
    for device in ("CPU", args.device_target):
        out = os.path.join(folder, f"{device}_{len(results)}.json")
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--device_target", device,
                   "--config", config, "--data", args.data, "--mode", args.mode, "--steps", str(args.steps),
                   "--weights", os.path.join(folder, "init.ckpt"), "--batch", os.path.join(folder, "batch.npz"),
                   "--out", out] + (["--small"] if args.small else [])
        log = out[:-5] + ".log"
        if _run(command, log) != 0:
            return [(f"first step on {device}", "", "", _last_line(log), "", False)]
        with open(out, encoding="utf-8") as f:
            results[len(results)] = json.load(f)
    cpu, dev = results[0], results[1]
    rows = []
    for key, reference in cpu["first_step"].items():
        rtol = GRAD_RTOL if key == "grad norm" else LOSS_RTOL
        diff, ok = compare(reference, dev["first_step"].get(key, float("nan")), rtol)
        rows.append((key, f"{reference:.6g}", f"{dev['first_step'].get(key, float('nan')):.6g}",
                     f"{diff:.2g}", f"{rtol:g} rel", ok))
    finite = bool(np.isfinite(dev["totals"]).all()) and len(dev["totals"]) == args.steps
    rows.append((f"{args.steps} steps finite", " ".join(f"{v:.4g}" for v in cpu["totals"]),
                 " ".join(f"{v:.4g}" for v in dev["totals"]), "", "", finite))
    return rows


def workflow(args, config, folder):
    """train.py -> eval.py -> export.py -> infer.py on the device; one row per script."""
    out = os.path.join(folder, "workflow")
    common = ["--config", config, "--device_target", args.device_target,
              "--dataset_dir", args.data]
    overrides = _small_overrides(config, args) + [f"train.max_steps={args.steps}",
                                                  f"train.ckpt_interval={args.steps}"] + WORKFLOW_OVERRIDES
    graph = os.path.join(out, "export", "graph")
    steps = [
        ("train.py", ["train.py", "--mode", args.mode, "--output_dir", os.path.join(out, "train")]),
        ("eval.py", ["eval.py", "--mode", args.mode, "--ckpt_path", os.path.join(out, "train", "checkpoints"),
                     "--output_dir", os.path.join(out, "eval")]),
        ("export.py", ["export.py", "--ckpt_path", os.path.join(out, "train", "checkpoints"),
                       "--file_format", "MINDIR", "--output", graph]),
        ("infer.py", ["infer.py", "--mindir", graph + ".mindir", "--input", os.path.join(args.data, "val2017"),
                      "--output", os.path.join(out, "infer")]),
    ]
    rows = []
    for name, command in steps:
        log = os.path.join(folder, name.replace(".py", ".log"))
        status = _run([sys.executable] + command[:1] + common + command[1:] + overrides, log)
        rows.append((f"{name} on {args.device_target}", "", "exit 0" if status == 0 else f"exit {status}",
                     "" if status == 0 else _last_line(log), "", status == 0))
        if status != 0:
            break
    return rows


def _small_overrides(config, args):
    from op_audit import MODEL_SMALL, SMALL
    from mindseg.config import load_config
    if not args.small:
        return ["data.num_workers=0"]
    name = load_config(os.path.join(ROOT, config)).model.name
    return SMALL + MODEL_SMALL.get(name, []) + ["data.num_workers=0"]


def format_rows(rows):
    head = ("config", "check", "CPU", "device", "difference", "tolerance", "verdict")
    body = [tuple(str(c) for c in row[:-1]) + ("ok" if row[-1] else "FAIL",) for row in rows]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + body)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device_target", required=True, choices=("Ascend", "GPU", "CPU"))
    parser.add_argument("--config", action="append", help="a config (repeatable; default: config/shapes/*)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per run")
    parser.add_argument("--small", action="store_true", help="a 64x64 canvas with narrow heads")
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--work", help="folder for data, logs and outputs (default: a temporary one)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("data", "weights", "batch", "out"):
        parser.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from mindseg.runtime import DeviceError, check_device_target
    try:
        check_device_target(args.device_target)
    except DeviceError as err:
        print(f"device_check.py: error: {err}", file=sys.stderr)
        return 1
    work = args.work or tempfile.mkdtemp(prefix="mindseg_device_check_")
    args.data = make_data(os.path.join(work, "data"), 64 if args.small else 256)
    configs = args.config or list(CONFIGS.values())
    rows = []
    for config in configs:
        name = os.path.splitext(os.path.basename(config))[0]
        folder = os.path.join(work, name)
        rows += [(name,) + row for row in compare_config(args, config, folder)]
        rows += [(name,) + row for row in workflow(args, config, folder)]
        print(format_rows(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_rows(rows))
    failed = [row for row in rows if not row[-1]]
    print(f"\nverdict: {'PASS' if not failed else 'FAIL'} on {args.device_target} "
          f"({len(rows) - len(failed)} of {len(rows)} checks; tolerances: losses {LOSS_RTOL:g}, "
          f"gradient norm {GRAD_RTOL:g} relative; logs in {work})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
