"""CenterMask (point representation) through the unchanged scripts, in subprocesses at the
smallest size that still checks them: train.py -> eval.py -> export.py (MINDIR) -> infer.py
--mindir, and the exported graph run without mindseg against the checkpoint's network."""
import json
import os
import sys

import numpy as np
import pytest

from test_workflow import CATEGORY_IDS, ROOT, _losses, _run

CONFIG = os.path.join(ROOT, "config", "shapes", "centermask_point_shapes.yml")
STEPS = 2
DETECTIONS = 10
SMALL = ["mode=pynative", "data.canvas=[64,64]", "data.min_size=[64]", "data.max_size=64", "data.test_min_size=64",
         "data.test_max_size=64", "data.num_workers=0", "data.max_instances=8", "data.mask_crop=28",
         "model.centermask_point.head_channels=32", "model.centermask_point.shape_size=8",
         f"model.centermask_point.max_detections={DETECTIONS}", "model.centermask_point.score_thresh=0.0",
         f"train.max_steps={STEPS}", "train.warmup_iters=1", "train.log_interval=1",
         f"train.ckpt_interval={STEPS}"]


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    """The four scripts once on a 2 + 2 image synthetic set; returns the folders."""
    from mindseg.dataset.synthetic import make_synthetic_coco
    root = tmp_path_factory.mktemp("point_workflow")
    data, out = root / "data", root / "out"
    make_synthetic_coco(data, num_train=2, num_val=2, image_size=64, seed=3)
    common = ["--config", CONFIG, "--device_target", "CPU", "--dataset_dir", str(data)]
    ckpts = str(out / "checkpoints")
    (out / "infer_input").mkdir(parents=True)
    for name in sorted(os.listdir(data / "val2017")):
        (out / "infer_input" / name).write_bytes((data / "val2017" / name).read_bytes())
    commands = [["train.py", "--output_dir", str(out)],
                ["eval.py", "--ckpt_path", ckpts, "--output_dir", str(out / "eval")],
                ["export.py", "--ckpt_path", ckpts, "--file_format", "MINDIR", "--output", str(out / "export" / "cmp")],
                ["infer.py", "--mindir", str(out / "export" / "cmp.mindir"), "--input", str(out / "infer_input"),
                 "--output", str(out / "infer"), "--score_thresh", "0.0"]]
    for script, *args in commands:
        result = _run([sys.executable, os.path.join(ROOT, script)] + common + args + SMALL, cwd=str(root),
                      timeout=900)
        assert result.returncode == 0, (script, (result.stdout + result.stderr)[-4000:])
    return {"root": root, "data": data, "out": out}


def test_train_logs_the_four_losses_and_writes_a_checkpoint(scripts):
    out = scripts["out"]
    assert (out / "checkpoints" / "latest").read_text().strip() == f"ckpt_{STEPS:08d}.ckpt"
    log = (out / "train.log").read_text()
    assert len(_losses(log)) == STEPS and np.isfinite(_losses(log)).all()
    for name in ("loss_heatmap", "loss_offset", "loss_size", "loss_mask"):
        assert name in log


def test_eval_writes_coco_results_with_masks(scripts):
    metrics = json.loads((scripts["out"] / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    results = json.loads((scripts["out"] / "eval" / "results.json").read_text())
    assert results and {r["category_id"] for r in results} <= CATEGORY_IDS
    per_image = {}
    for r in results:
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
        assert isinstance(r["segmentation"]["counts"], str) and r["bbox"][2] > 0 and r["bbox"][3] > 0
    assert max(per_image.values()) <= DETECTIONS


def test_exported_graph_runs_without_mindseg_and_matches_the_checkpoint(scripts):
    out = scripts["out"]
    spec = json.loads((out / "export" / "cmp.json").read_text())
    assert [o["name"] for o in spec["outputs"]] == ["boxes", "scores", "classes", "valid", "mask_probs"]
    assert spec["outputs"][4]["shape"] == [1, DETECTIONS, 28, 28]
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32) * 50
    size = np.array([[64, 64]], np.float32)
    code = f"""
import json, sys, numpy as np, mindspore as ms
assert "mindseg" not in sys.modules
graph = ms.nn.GraphCell(ms.load({str(out / "export" / "cmp.mindir")!r}))
outs = graph(ms.Tensor(np.load(sys.argv[1])), ms.Tensor(np.load(sys.argv[2])))
np.savez(sys.argv[3], *[o.asnumpy() for o in outs])
"""
    np.save(scripts["root"] / "image.npy", image)
    np.save(scripts["root"] / "size.npy", size)
    result = _run([sys.executable, "-c", code, "image.npy", "size.npy", "graph.npz"], cwd=str(scripts["root"]))
    assert result.returncode == 0, result.stderr[-3000:]
    graph_outs = np.load(scripts["root"] / "graph.npz")
    import mindspore as ms
    from mindseg.config import load_config
    from mindseg.engine.checkpoint import load_train_state
    from mindseg.models import build_model
    net = build_model(load_config(CONFIG, SMALL), num_classes=5)
    load_train_state(str(out / "checkpoints" / f"ckpt_{STEPS:08d}.ckpt"), net)
    net.set_train(False)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ours = [o.asnumpy() for o in net(ms.Tensor(image), ms.Tensor(size))]
    for i, mine in enumerate(ours):
        np.testing.assert_allclose(graph_outs[f"arr_{i}"], mine, atol=1e-4)
    assert spec["postprocess"]["mask_threshold"] == 0.4  # the paper's threshold on shape x saliency


def test_infer_draws_and_writes_detections_inside_the_images(scripts):
    out = scripts["out"]
    names = sorted(os.listdir(out / "infer_input"))
    for name in names:
        stem = os.path.splitext(name)[0]
        assert (out / "infer" / f"{stem}.png").stat().st_size > 0
        dets = json.loads((out / "infer" / f"{stem}.json").read_text())
        assert len(dets) <= DETECTIONS
        for det in dets:
            x, y, w, h = det["bbox"]
            assert det["category_id"] in CATEGORY_IDS and 0 <= x <= x + w <= 64 + 1e-3 and 0 <= y <= y + h <= 64 + 1e-3
