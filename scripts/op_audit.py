"""Audit the primitives of every compiled graph of every model for Ascend and GPU.

    python scripts/op_audit.py [--config CFG ...] [--small] [--json FILE] [--keep_ir DIR | --from_ir DIR]

For each config (default: the three of config/shapes/ and CenterMask V-39) this compiles, on
synthetic data, the training step (forward, backward and optimizer, as train.py builds it in
GRAPH mode) in float32 and with --mix, and the inference graph export.py writes, in float32 and
with --mix; MindSpore saves each graph's IR (mindseg/utils/op_audit.py reads it). It prints, per
config, the table primitive | nodes per graph | Ascend | GPU | CPU, as the installed MindSpore
documents them, and the dynamic-shape nodes of the inference graphs. It exits 1 when a primitive
is not documented on Ascend and GPU and mindseg/utils/op_allowlist.py neither says why it is safe
(ALLOWLIST) nor lists it as a known gap (KNOWN_GAPS, printed), or when a training graph has a
dynamic shape. ``--small`` compiles at a 64x64 canvas with narrow heads: the same primitives, a
fraction of the time.
"""
import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
_DUMP = os.path.join(tempfile.gettempdir(), f"mindseg_ir_{os.getpid()}")  # IR saving: see main()
import mindseg  # noqa: E402,F401  (before mindspore: fast oneDNN CPU kernels)

sys.unraisablehook = lambda unraisable: None

# every model: the three shapes configs, and CenterMask (VoVNetV2-39), which has none
CONFIGS = {"mask_rcnn": "config/shapes/mask_rcnn_shapes.yml",
           "centermask_lite": "config/shapes/centermask_lite_shapes.yml",
           "centermask_point": "config/shapes/centermask_point_shapes.yml",
           "centermask": "config/centermask/centermask_V_39_eSE_FPN_ms_3x.yml"}
NUM_CLASSES = 5  # mindseg.dataset.synthetic's shapes
SMALL = ["data.canvas=[64,64]", "data.min_size=[64]", "data.max_size=64", "data.test_min_size=64",
         "data.test_max_size=64", "data.max_instances=4", "data.mask_crop=28", "data.batch_size=1"]
MODEL_SMALL = {
    "mask_rcnn": ["model.rpn.pre_nms_topk_train=100", "model.rpn.post_nms_topk_train=32",
                  "model.rpn.pre_nms_topk_test=100", "model.rpn.post_nms_topk_test=32",
                  "model.roi_heads.batch_size_per_image=32", "model.roi_heads.detections_per_image=10",
                  "model.roi_heads.test_topk_candidates=50", "model.fpn.out_channels=32",
                  "model.roi_heads.box_head_fc_dim=64", "model.roi_heads.mask_head_conv_dim=32"],
    "centermask": ["model.fpn.out_channels=32", "model.fcos.pre_nms_topk=100",
                   "model.fcos.post_nms_topk_train=20", "model.fcos.post_nms_topk_test=10",
                   "model.centermask.mask_head_conv_dim=32", "model.centermask.maskiou_conv_dim=32",
                   "model.centermask.maskiou_fc_dim=64"],
    "centermask_point": ["model.centermask_point.head_channels=32", "model.centermask_point.shape_size=8",
                         "model.centermask_point.max_detections=10"],
}
GRAPHS = ("train", "train_mix", "infer", "infer_mix")
TRAINING_GRAPHS = ("train", "train_mix")


def load_small_config(config, data_dir, small, extra=()):
    """The config at ``config`` on the synthetic data in ``data_dir``; ``small``: at 64x64 with
    narrow heads (MODEL_SMALL)."""
    from mindseg.config import load_config
    overrides = [f"data.dataset_dir={data_dir}", "data.num_workers=0", f"model.num_classes={NUM_CLASSES}",
                 "train.warmup_iters=1", "train.max_steps=10"]
    cfg = load_config(os.path.join(ROOT, config), overrides + list(extra))
    if small:
        cfg = load_config(os.path.join(ROOT, config), SMALL + MODEL_SMALL.get(cfg.model.name, [])
                          + overrides + list(extra))
    return cfg


def make_data(folder, image_size=64):
    from mindseg.dataset.synthetic import make_synthetic_coco
    make_synthetic_coco(folder, num_train=2, num_val=1, image_size=image_size, seed=5)
    return folder


def first_batch(cfg):
    """The first training batch of ``cfg``'s dataset, as numpy arrays in the trainer's order."""
    from mindseg.dataset.pipeline import create_dataset
    from mindseg.engine.trainer import TRAIN_INPUTS
    batch = next(create_dataset(cfg, "train").create_dict_iterator(num_epochs=1, output_numpy=True))
    return [batch[c] for c in TRAIN_INPUTS]


def build_train_step(cfg, mix, jit=True):
    """``(net, TrainStep)`` as the trainer builds them (optimizer, clip, loss scale with mix)."""
    from mindseg.engine.lr_schedule import LRSettings, build_lr_schedule
    from mindseg.engine.precision import apply_mixed_precision
    from mindseg.engine.train_step import LossScaleSettings, TrainStep, optimizer_from_config
    from mindseg.models import build_model
    tcfg = cfg.train
    net = build_model(cfg, NUM_CLASSES)
    if mix:
        net = apply_mixed_precision(net, tcfg.amp_level)
    net.set_train(True)
    settings = dataclasses.replace(LRSettings.from_config(tcfg), warmup_iters=1, steps=(100,))
    lr = build_lr_schedule(settings, cfg.data.batch_size, 10)
    step = TrainStep(net, optimizer_from_config(net, lr, tcfg),
                     loss_scaling=LossScaleSettings(tcfg.loss_scale) if mix else None,
                     clip_grad_norm=tcfg.clip_grad_norm, jit=jit)
    return net, step


def _collect(folder):
    """Move the IR files written since the last call into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(_DUMP):
        shutil.move(os.path.join(_DUMP, name), os.path.join(folder, name))
    return folder


def record_graphs(cfg, out_dir):
    """Compile ``cfg``'s four graphs (GRAPHS) with IR saving on; ``{graph: IR folder}``."""
    import mindspore as ms
    from mindseg.engine.exporter import dummy_inputs
    from mindseg.engine.precision import apply_mixed_precision
    from mindseg.models import build_model
    batch = [ms.Tensor(x) for x in first_batch(cfg)]
    folders = {}
    _collect(os.path.join(out_dir, "before"))
    for mix in (False, True):
        ms.set_context(mode=ms.GRAPH_MODE)
        _, step = build_train_step(cfg, mix)
        step(*batch)
        folders["train_mix" if mix else "train"] = _collect(os.path.join(out_dir, "train_mix" if mix else "train"))
        ms.set_context(mode=ms.PYNATIVE_MODE)  # as export.py runs
        net = build_model(cfg, NUM_CLASSES)
        if mix:
            apply_mixed_precision(net, cfg.train.amp_level)
        net.set_train(False)
        inputs = [ms.Tensor(x) for x in dummy_inputs(1, cfg.data.canvas)]
        ms.export(net, *inputs, file_name=os.path.join(out_dir, "graph"), file_format="MINDIR")
        folders["infer_mix" if mix else "infer"] = _collect(os.path.join(out_dir, "infer_mix" if mix else "infer"))
    return folders


def audit_config(name, config, data_dir, work, small, from_ir=None):
    """Record (or, with ``from_ir``, re-read the IR folders kept there) and audit one config;
    ``(rows, problems, graphs)`` (see :func:`audit`)."""
    from mindseg.utils.op_allowlist import ALLOWLIST, KNOWN_GAPS
    from mindseg.utils.op_audit import audit, read_graph
    if from_ir:
        folders = {g: os.path.join(from_ir, name, g) for g in GRAPHS}
    else:
        folders = record_graphs(load_small_config(config, data_dir, small), os.path.join(work, name))
    graphs = {g: read_graph(folders[g], ROOT) for g in GRAPHS}
    empty = [g for g in GRAPHS if not graphs[g][0]]
    rows, problems = audit(graphs, ALLOWLIST, TRAINING_GRAPHS, KNOWN_GAPS)
    problems += [f"{g}: MindSpore saved no IR for this graph" for g in empty]
    return rows, problems, graphs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="a config (repeatable; default: config/shapes/*)")
    parser.add_argument("--small", action="store_true", help="compile at 64x64 with narrow heads")
    parser.add_argument("--json", help="write the primitives recorded (per config and graph) here")
    parser.add_argument("--keep_ir", help="keep the IR folders here (default: a temporary folder)")
    parser.add_argument("--from_ir", help="audit the IR folders an earlier --keep_ir run kept there, "
                                          "without compiling")
    args = parser.parse_args(argv)
    if os.environ.get("MS_DEV_SAVE_GRAPHS_PATH") != _DUMP:
        sys.exit("op_audit.py: run it as a script (MindSpore must be imported after it sets "
                 "MS_DEV_SAVE_GRAPHS)")
    from mindseg.utils.op_audit import format_table
    configs = {os.path.splitext(os.path.basename(c))[0]: c for c in args.config or CONFIGS.values()}
    work = args.keep_ir or tempfile.mkdtemp(prefix="mindseg_audit_")
    data_dir = None if args.from_ir else make_data(os.path.join(work, "data"), 64 if args.small else 256)
    report, all_problems = {}, []
    for name, config in configs.items():
        rows, problems, graphs = audit_config(name, config, data_dir, work, args.small, args.from_ir)
        report[name] = {"config": config, "graphs": {g: {"counts": dict(sorted(c.items())), "dynamic": d}
                                                     for g, (c, d) in graphs.items()}}
        dynamic = {g: graphs[g][1] for g in GRAPHS if g not in TRAINING_GRAPHS}
        if args.json:  # after each config: a later one that fails keeps the earlier ones
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=1)
        all_problems += [f"{name}: {p}" for p in problems]
        print(f"\n== {config}: {len(rows)} primitives")
        print(format_table(rows, GRAPHS))
        for row in rows:
            if row["known_gap"]:
                print(f"known gap: {row['primitive']}: {row['known_gap']}")
        for graph, places in dynamic.items():
            for prim, where in places.items():
                print(f"dynamic shape in {graph}: {prim} at {', '.join(where) or 'MindSpore internals'}")
    if not args.keep_ir:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(_DUMP, ignore_errors=True)
    for problem in all_problems:
        print(f"op_audit: {problem}", file=sys.stderr)
    print(f"\n{len(all_problems)} problem(s)")
    return 1 if all_problems else 0


if __name__ == "__main__":
    if "mindspore" not in sys.modules:  # MindSpore reads these once, at import
        os.makedirs(_DUMP, exist_ok=True)
        os.environ.update(MS_DEV_SAVE_GRAPHS="1", MS_DEV_SAVE_GRAPHS_PATH=_DUMP,
                          MS_DEV_DUMP_IR_PASSES="validate")
        os.environ.setdefault("GLOG_v", "3")
    sys.exit(main())
