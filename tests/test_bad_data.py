"""train.py and eval.py on the COCO JSON path name and count bad data as convert_coco.py does,
refuse it with --strict, and eval leaves an unreadable image's ground truth out of COCOeval."""
import json
import os

import pytest

from mindseg.config import load_config
from mindseg.dataset.synthetic import make_synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CFG = os.path.join(ROOT, "config", "shapes", "mask_rcnn_shapes.yml")
SMALL = ["mode=pynative", "data.canvas=[64,64]", "data.min_size=[64]", "data.max_size=64",
         "data.test_min_size=64", "data.test_max_size=64", "data.num_workers=0",
         "data.max_instances=4", "data.mask_crop=14", "data.batch_size=1",
         "model.rpn.pre_nms_topk_train=50", "model.rpn.post_nms_topk_train=16",
         "model.rpn.pre_nms_topk_test=50", "model.rpn.post_nms_topk_test=16",
         "model.roi_heads.batch_size_per_image=16", "model.roi_heads.detections_per_image=5",
         "model.roi_heads.test_topk_candidates=50", "train.max_steps=1", "train.warmup_iters=1",
         "train.lr_steps=[100]", "train.ckpt_interval=1", "train.log_interval=1"]


def _edit(path, change):
    with open(path) as f:
        data = json.load(f)
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """Synthetic shapes with, in train: a box wholly outside its image, a zero-size box and an
    annotation of an unknown category; in val: an image file that is missing and one that is
    not an image."""
    root = tmp_path_factory.mktemp("bad")
    info = make_synthetic_coco(str(root / "data"), num_train=3, num_val=3, image_size=64, seed=5)

    def train(data):
        first = data["annotations"][0]
        data["annotations"] += [dict(first, id=9001, bbox=[200, 200, 10, 10]),
                                dict(first, id=9002, bbox=[5, 5, 0, 8]),
                                dict(first, id=9003, category_id=999)]
    _edit(info["train_json"], train)

    def val(data):
        entry = data["images"][0]
        data["images"].append(dict(entry, id=777, file_name="missing.jpg"))
        data["annotations"].append(dict(data["annotations"][0], id=9100, image_id=777))
    _edit(info["val_json"], val)
    with open(info["val_json"]) as f:
        corrupt = json.load(f)["images"][1]
    with open(os.path.join(info["val_dir"], corrupt["file_name"]), "wb") as f:
        f.write(b"\xff\xd8 this is no longer a jpeg")
    info["corrupt"] = corrupt
    return info


def _argv(bad_data, out, *extra):
    return ["--config", SHAPES_CFG, "--dataset_dir", bad_data["dataset_dir"], "--output_dir",
            str(out)] + list(extra) + SMALL


def test_train_reports_bad_data_and_keeps_an_earlier_runs_checkpoints(bad_data, tmp_path, capsys,
                                                                      script_main):
    """train.py names and counts the bad data (--strict refuses it); a second run into the same
    folder stops naming the folder and the choices; --overwrite moves the first run's checkpoint
    aside. Each checkpoint carries the model and the classes."""
    from mindseg.engine.checkpoint import read_checkpoint_meta
    first = script_main("train")(_argv(bad_data, tmp_path / "run"))["last_checkpoint"]
    out = capsys.readouterr().out
    for expected in ("box outside image", "annotation 9001", "bad box", "annotation 9002",
                     "unknown category id: annotation 9003"):
        assert expected in out, out
    summary_line = [line for line in out.splitlines() if line.startswith("skipped: 0 images")]
    assert len(summary_line) == 1 and summary_line[0].startswith("skipped: 0 images, 3 problems (")
    for kind in ("1 unknown category id", "1 bad box", "1 box outside image"):
        assert kind in summary_line[0]
    listed = tmp_path / "run" / "data_problems_train.txt"
    assert summary_line[0].endswith(f"; all listed in {listed}")
    assert len(listed.read_text().splitlines()) == 3
    assert read_checkpoint_meta(first) == {
        "model": "mask_rcnn", "backbone": "resnet18", "num_classes": 5,
        "class_names": bad_data["class_names"], "category_ids": bad_data["category_ids"]}

    with pytest.raises(SystemExit) as info:
        script_main("train")(_argv(bad_data, tmp_path / "strict", "--strict"))
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and "\n" not in err and "instances_train2017.json" in err
    assert not (tmp_path / "strict" / "checkpoints").exists()

    blob = open(first, "rb").read()
    ckpts = tmp_path / "run" / "checkpoints"
    with pytest.raises(SystemExit) as info:
        script_main("train")(_argv(bad_data, tmp_path / "run"))
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and "\n" not in err and str(ckpts) in err
    assert "--resume_ckpt" in err and "--output_dir" in err and "--overwrite" in err
    assert open(first, "rb").read() == blob
    second = script_main("train")(_argv(bad_data, tmp_path / "run", "--overwrite"))
    aside = [p for p in (tmp_path / "run").iterdir() if p.name.startswith("checkpoints.old-")]
    assert len(aside) == 1
    assert open(aside[0] / os.path.basename(first), "rb").read() == blob
    assert os.path.isfile(second["last_checkpoint"])


def test_eval_names_unreadable_images_and_leaves_their_ground_truth_out(bad_data, tmp_path,
                                                                        capsys, script_main):
    from mindseg.engine.checkpoint import CheckpointManager, model_meta
    from mindseg.models import build_model
    from mindspore import nn
    cfg = load_config(SHAPES_CFG, SMALL)
    net = build_model(cfg, num_classes=bad_data["num_classes"])
    ckpt = CheckpointManager(str(tmp_path / "ckpt"), meta=model_meta(cfg, bad_data)).save(
        net, nn.Momentum(net.trainable_params(), 0.1, 0.9), 1)
    # --draw into a path taken by a file: named on stderr, the evaluation still succeeds
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "drawings").write_text("not a folder")
    metrics = script_main("eval")(_argv(bad_data, tmp_path / "eval", "--ckpt_path", ckpt,
                                        "--draw", "2"))
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err.strip().splitlines()[-1].startswith(
        "eval.py: --draw stopped, the evaluation and its metrics stand: FileExistsError")
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert "skipped: image 777 (missing.jpg): missing image file" in out
    assert "skipped: 1 images, 1 problems (1 missing image file)" in out
    corrupt = bad_data["corrupt"]
    assert f"not evaluated: image {corrupt['id']} ({corrupt['file_name']})" in out
    assert "not evaluated: image 777 (missing.jpg)" in out
    assert "evaluated 2 of the 4 images" in out
    assert set(metrics) >= {"bbox", "segm"}
    with pytest.raises(SystemExit):
        script_main("eval")(_argv(bad_data, tmp_path / "strict", "--ckpt_path", ckpt, "--strict"))
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing.jpg" in err


def test_many_problems_print_a_few_lines_and_list_them_all(tmp_path):
    """50 images whose files are missing: 5 named, the rest counted, all in the list file."""
    from mindseg.dataset.pipeline import dataset_info
    info = make_synthetic_coco(str(tmp_path / "data"), num_train=1, num_val=1, image_size=32,
                               seed=2)

    def missing(data):
        for k in range(50):
            data["images"].append(dict(data["images"][0], id=500 + k, file_name=f"gone{k}.jpg"))
            data["annotations"].append(dict(data["annotations"][0], id=500 + k, image_id=500 + k))
    _edit(info["train_json"], missing)
    cfg = load_config(SHAPES_CFG, SMALL + [f"data.dataset_dir={info['dataset_dir']}",
                                           f"output_dir={tmp_path / 'out'}"])
    lines = []
    assert dataset_info(cfg, "train", report=lines.append)["num_samples"] == 1
    listed = tmp_path / "out" / "data_problems_train.txt"
    assert lines[:5] == [f"skipped: image {500 + k} (gone{k}.jpg): missing image file: "
                         f"{os.path.join(info['train_dir'], f'gone{k}.jpg')}" for k in range(5)]
    assert lines[5:] == ["... and 45 more 'missing image file' problems",
                         f"skipped: 50 images, 50 problems (50 missing image file); all listed "
                         f"in {listed}"]
    written = listed.read_text().splitlines()
    assert len(written) == 50 and all(f"(gone{k}.jpg)" in written[k] for k in range(50))
