"""A user's own data, as a user types it: a COCO-format set laid out nothing like COCO
(``labels/train.json``, ``pictures/``) with other class names and ids than the synthetic set the
source model was trained on; ``train.py --pre_trained`` fine-tunes on it with evaluation while
training, and eval.py scores the best checkpoint exactly as the run recorded it. Then the
fine-tuning loader's class matching on the real model's tensors, and evaluation while training
keeping exact resume."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms

from mindseg.config import load_config
from mindseg.dataset.synthetic import CLASS_NAMES, make_synthetic_coco
from small import SHAPES_CONFIG, SHAPES_SMALL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = SHAPES_CONFIG
SMALL = SHAPES_SMALL + ["train.max_steps=2", "train.warmup_iters=1", "train.log_interval=1",
                       "train.ckpt_interval=2"]
# the user's classes: the synthetic shapes renamed and renumbered, one name ("star") shared
OWN_NAMES = {"rectangle": "door", "ellipse": "egg", "triangle": "sail", "star": "star", "cross": "plus"}
OWN_IDS = {"door": 40, "egg": 2, "sail": 77, "star": 9, "plus": 23}
OWN_KEYS = ["data.train_ann=labels/train.json", "data.train_images=pictures",
            "data.val_ann=labels/val.json", "data.val_images=pictures"]


def _run(args, cwd, timeout=600):
    env = dict(os.environ, GLOG_v="3", ONEDNN_MAX_CPU_ISA="AVX2")
    return subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _relayout(coco_dir, own_dir):
    """The synthetic set as a user's own: one picture folder, annotation files under labels/, the
    classes renamed and renumbered (categories listed in another order)."""
    os.makedirs(own_dir / "labels")
    os.makedirs(own_dir / "pictures")
    for split, name in (("train2017", "train"), ("val2017", "val")):
        data = json.loads((coco_dir / "annotations" / f"instances_{split}.json").read_text())
        old_to_new = {c["id"]: OWN_IDS[OWN_NAMES[c["name"]]] for c in data["categories"]}
        data["categories"] = sorted(({"id": OWN_IDS[OWN_NAMES[c["name"]]], "name": OWN_NAMES[c["name"]]}
                                     for c in data["categories"]), key=lambda c: c["name"])
        for ann in data["annotations"]:
            ann["category_id"] = old_to_new[ann["category_id"]]
        (own_dir / "labels" / f"{name}.json").write_text(json.dumps(data))
        for image in data["images"]:
            assert not (own_dir / "pictures" / image["file_name"]).exists()
            shutil.copy(coco_dir / split / image["file_name"], own_dir / "pictures")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A source model trained 2 steps on the synthetic set (COCO layout; PYNATIVE, which compiles
    nothing), and a fine-tuned run of it on the user's set with an evaluation at every step
    (GRAPH, as the config says: the compiled training step and the evaluation take turns)."""
    root = tmp_path_factory.mktemp("custom")
    make_synthetic_coco(root / "coco", num_train=6, num_val=3, image_size=128, seed=3)
    _relayout(root / "coco", root / "own")
    source = _run(["train.py", "--config", CONFIG, "--dataset_dir", str(root / "coco"),
                   "--output_dir", str(root / "source"), "--mode", "pynative"] + SMALL, cwd=ROOT)
    assert source.returncode == 0, source.stderr[-3000:]
    tuned = _run(["train.py", "--config", CONFIG, "--dataset_dir", str(root / "own"),
                  "--output_dir", str(root / "tuned"), "--pre_trained", str(root / "source" / "checkpoints"),
                  "train.eval_interval=1"] + OWN_KEYS + SMALL, cwd=ROOT)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    return {"root": root, "log": tuned.stdout + tuned.stderr}


def test_finetune_on_own_layout_keeps_shared_class_and_records_evaluations(runs):
    root, log = runs["root"], runs["log"]
    summary = [line for line in log.splitlines() if "pre_trained" in line]
    assert len(summary) == 1, log[-3000:]
    assert "1 class(es) kept their rows (star)" in summary[0]
    assert "4 start from the head's initialisation (egg, plus, door, sail)" in summary[0]
    rows = [json.loads(line) for line in (root / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(set(r) == {"step", "bbox_AP", "segm_AP", "seconds"} for r in rows)
    assert "eval at step 2: bbox AP" in log
    from mindseg.engine.checkpoint import read_checkpoint_meta
    meta = read_checkpoint_meta(str(root / "tuned" / "checkpoints" / "best.ckpt"))
    assert meta["class_names"] == ["egg", "star", "plus", "door", "sail"]  # by category id
    assert meta["category_ids"] == sorted(OWN_IDS.values())


def test_eval_scores_best_checkpoint_as_recorded(runs):
    """eval.py on checkpoints/best.ckpt, with the same keys, reproduces the recorded best AP."""
    root = runs["root"]
    rows = [json.loads(line) for line in (root / "tuned" / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: (r["segm_AP"], -r["step"]))
    result = _run(["eval.py", "--config", CONFIG, "--dataset_dir", str(root / "own"),
                   "--ckpt_path", str(root / "tuned" / "checkpoints" / "best.ckpt"),
                   "--output_dir", str(root / "eval")] + OWN_KEYS + SMALL, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["segm"]["AP"] == pytest.approx(best["segm_AP"], abs=1e-3)
    assert metrics["bbox"]["AP"] == pytest.approx(best["bbox_AP"], abs=1e-3)
    assert "labels/val.json" in result.stdout


def test_pre_trained_with_resume_is_refused(runs):
    root = runs["root"]
    result = _run(["train.py", "--config", CONFIG, "--dataset_dir", str(root / "own"),
                   "--output_dir", str(root / "both"), "--pre_trained", str(root / "source" / "checkpoints"),
                   "--resume_ckpt", str(root / "source" / "checkpoints")] + OWN_KEYS + SMALL, cwd=ROOT)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == ["train.py: error: --pre_trained starts a new run and --resume_ckpt continues one: "
                      "give one of them"]


def _net(num_classes, overrides=()):
    from mindseg.models import build_model
    cfg = load_config(CONFIG, SMALL + list(overrides))
    return build_model(cfg, num_classes=num_classes)


def test_load_pretrained_matches_rows_by_class_name(runs):
    """Every tensor of the source lands in the new network; the class-shaped ones row by row."""
    from mindseg.engine.checkpoint import resolve_checkpoint
    from mindseg.engine.finetune import load_pretrained
    path = resolve_checkpoint(str(runs["root"] / "source" / "checkpoints"))
    source = {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items() if hasattr(v, "asnumpy")}
    names = ["star", "kangaroo", "rectangle"]
    net = _net(3)
    init = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    report = load_pretrained(net, path, names)
    got = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert report.kept == ["star", "rectangle"] and report.new == ["kangaroo"]
    star, rect = CLASS_NAMES.index("star"), CLASS_NAMES.index("rectangle")
    cls, deltas, mask = ("roi_heads.box_head.cls_score.weight", "roi_heads.box_head.bbox_pred.weight",
                         "roi_heads.mask_head.predictor.weight")
    np.testing.assert_array_equal(got[cls][0], source[cls][star])
    np.testing.assert_array_equal(got[cls][2], source[cls][rect])
    np.testing.assert_array_equal(got[cls][1], init[cls][1])           # kangaroo: the head's own
    np.testing.assert_array_equal(got[cls][3], source[cls][5])         # background: the last row
    np.testing.assert_array_equal(got[deltas][0:4], source[deltas][4 * star:4 * star + 4])
    np.testing.assert_array_equal(got[deltas][4:8], init[deltas][4:8])
    np.testing.assert_array_equal(got[mask][2], source[mask][rect])
    conv1 = "backbone.body.net.conv1.weight"
    np.testing.assert_array_equal(got[conv1], source[conv1])
    assert report.loaded + report.class_tensors == len(got)


def test_load_pretrained_refuses_another_architecture(runs):
    from mindseg.engine.checkpoint import resolve_checkpoint
    from mindseg.engine.finetune import load_pretrained
    path = resolve_checkpoint(str(runs["root"] / "source" / "checkpoints"))
    with pytest.raises(ValueError, match=r"box_head\.fc1\.weight is \(256, \d+\) in the checkpoint and "
                                         r"\(128, \d+\) in the network"):
        load_pretrained(_net(5, ["model.roi_heads.box_head_fc_dim=128"]), path, list(CLASS_NAMES))
    with pytest.raises(ValueError, match=r"lacks 2 tensor\(s\).*mask_head\.convs\.4\.weight"):
        load_pretrained(_net(5, ["model.roi_heads.mask_head_num_conv=3"]), path, list(CLASS_NAMES))
