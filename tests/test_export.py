"""Export: MINDIR + JSON written by export.py reload in a process that never imports mindseg and
give the checkpoint's outputs, and examples/deploy_mindir.py turns them into mindseg's detections; AIR / ONNX fail clearly; both checkpoint kinds load; raw-image
preprocessing is the eval pipeline's."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from mindseg.config import load_config
from mindseg.dataset.pipeline import create_dataset
from mindseg.dataset.sample import sample_spec
from mindseg.dataset.synthetic import make_synthetic_coco
from mindseg.engine.checkpoint import save_train_state
from mindseg.engine.exporter import (ExportError, check_file_format, describe_preprocess, export_paths,
                                     load_export_spec, spec_from_export)
from mindseg.dataset.sample import preprocess_image
from mindseg.engine.loading import load_weights
from mindseg.engine.runners import run_batched
from mindseg.models.postprocess import image_detections
from toy import ToyNet, net_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CFG = os.path.join(ROOT, "config", "shapes", "mask_rcnn_shapes.yml")
# the smallest Mask R-CNN that still exercises every op of the exported graph
SMALL = ["data.canvas=[128,128]", "data.test_min_size=128", "data.test_max_size=128",
         "data.num_workers=0", "model.rpn.pre_nms_topk_test=100", "model.rpn.post_nms_topk_test=50",
         "model.roi_heads.detections_per_image=10", "model.roi_heads.test_topk_candidates=100"]
SCRIPT_ENV = dict(os.environ, GLOG_v="3", ONEDNN_MAX_CPU_ISA="AVX2")

# Runs with `python -I` from an empty folder: no mindseg on the path, only mindspore + numpy.
CLEAN_RUNNER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import mindspore as ms
    from mindspore import nn
    try:
        import mindseg
        sys.exit("mindseg is importable in the clean process")
    except ImportError:
        pass
    graph_path, json_path, work = sys.argv[1:4]
    spec = json.load(open(json_path))
    inputs = [np.load(f"{work}/in_{t['name']}.npy") for t in spec["inputs"]]
    for t, x in zip(spec["inputs"], inputs):
        assert [list(x.shape), str(x.dtype)] == [t["shape"], t["dtype"]], (t, x.shape, x.dtype)
    outputs = nn.GraphCell(ms.load(graph_path))(*[ms.Tensor(x) for x in inputs])
    for t, out in zip(spec["outputs"], outputs):
        out = out.asnumpy()
        assert [list(out.shape), str(out.dtype)] == [t["shape"], t["dtype"]], (t, out.shape, out.dtype)
        np.save(f"{work}/out_{t['name']}.npy", out)
    print("mindseg" in sys.modules, len(outputs))
""")


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_synthetic_coco(root / "data", num_train=2, num_val=3, image_size=96, seed=3)


def test_file_format_checks():
    assert check_file_format("mindir", "CPU") == "MINDIR"
    assert check_file_format("AIR", "Ascend") == "AIR"
    with pytest.raises(ExportError, match="AIR export needs the Ascend backend"):
        check_file_format("AIR", "CPU")
    with pytest.raises(ExportError, match="ONNX export is not supported"):
        check_file_format("ONNX", "GPU")
    with pytest.raises(ExportError, match="must be one of"):
        check_file_format("TFLITE", "CPU")
    assert export_paths("out/model", "MINDIR") == ("out/model.mindir", "out/model.json")
    assert export_paths("out/model.mindir", "MINDIR") == ("out/model.mindir", "out/model.json")
    assert export_paths("out/m.v2.air", "AIR") == ("out/m.v2.air", "out/m.v2.json")


def test_both_checkpoint_kinds_load(tmp_path):
    """A training checkpoint (weights + momentum + step) and a weights-only one give the same
    weights; a checkpoint missing parameters, or none, is refused."""
    trained = ToyNet()
    for p in trained.trainable_params():
        p.set_data(ms.Tensor(np.random.default_rng(1).standard_normal(p.shape).astype(np.float32)))
    optimizer = nn.Momentum(trained.trainable_params(), learning_rate=0.1, momentum=0.9)
    save_train_state(str(tmp_path / "train.ckpt"), trained, optimizer, step=7)
    ms.save_checkpoint(trained, str(tmp_path / "weights.ckpt"))
    expected = net_weights(trained)
    for name in ("train.ckpt", "weights.ckpt"):
        net = ToyNet()
        assert load_weights(net, str(tmp_path / name)) == str(tmp_path / name)
        got = net_weights(net)
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{name}: {key}")
    ms.save_checkpoint(nn.Dense(2, 2), str(tmp_path / "other.ckpt"))
    with pytest.raises(ValueError, match="lacks"):
        load_weights(ToyNet(), str(tmp_path / "other.ckpt"))
    with pytest.raises(FileNotFoundError):
        load_weights(ToyNet(), str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="no checkpoint given"):  # a library error, not a CLI one
        load_weights(ToyNet(), "")


def test_raw_image_preprocessing_is_the_eval_pipelines(shapes_data):
    """infer.py's preprocessing of an image file equals the eval dataset's sample, both from the
    config's spec and from the spec an export JSON writes (the same SampleSpec, read back)."""
    cfg = load_config(SHAPES_CFG, SMALL + [f"data.dataset_dir={shapes_data['dataset_dir']}",
                                           "data.test_min_size=100", "data.channel_order=RGB"])
    batch = next(create_dataset(cfg, "val").create_dict_iterator(num_epochs=1, output_numpy=True))
    image_id = int(batch["image_id"][0])
    ann = json.load(open(shapes_data["val_json"]))
    name = next(i["file_name"] for i in ann["images"] if i["id"] == image_id)
    data = open(os.path.join(shapes_data["val_dir"], name), "rb").read()
    eval_spec = sample_spec(cfg, training=False)
    exported = json.loads(json.dumps(describe_preprocess(eval_spec)))
    assert exported["min_size"] == 100 and exported["channel_order"] == "RGB"
    assert spec_from_export(exported, eval_spec.max_instances, eval_spec.mask_size) == eval_spec
    for spec in (eval_spec, spec_from_export(exported)):
        image, size_hw, scale_hw, original = preprocess_image(data, spec, name)
        np.testing.assert_array_equal(image, batch["image"][0])
        np.testing.assert_array_equal(size_hw, batch["image_size"][0])
        np.testing.assert_array_equal(scale_hw, batch["scale"][0])
    entry = next(i for i in ann["images"] if i["id"] == image_id)
    assert original.shape == (entry["height"], entry["width"], 3)
    np.testing.assert_allclose(scale_hw, size_hw / np.array(original.shape[:2]), rtol=1e-6)


def test_run_batched_pads_fixed_batch():
    calls = []

    def runner(image, size):
        calls.append(len(image))
        return {"sums": image.sum(axis=(1, 2, 3)), "sizes": size}
    images = [np.full((1, 2, 2), k, np.float32) for k in range(5)]
    sizes = [np.array([k, k], np.float32) for k in range(5)]
    outputs = run_batched(runner, images, sizes, batch_size=2)
    sums, out_sizes = outputs["sums"], outputs["sizes"]
    assert calls == [2, 2, 2]
    np.testing.assert_array_equal(sums, [0, 4, 8, 12, 16])
    np.testing.assert_array_equal(out_sizes[:, 0], [0, 1, 2, 3, 4])


def test_mindir_runs_without_mindseg_and_matches_checkpoint(shapes_data, tmp_path):
    """export.py writes MINDIR + JSON from a weights-only checkpoint; a clean process that cannot
    import mindseg loads it with ms.load + nn.GraphCell and reproduces the checkpoint network."""
    from mindseg.models import build_model
    overrides = SMALL + [f"data.dataset_dir={shapes_data['dataset_dir']}", "export.batch_size=2",
                         "eval.draw_thresh=0"]
    cfg = load_config(SHAPES_CFG, overrides)
    ms.set_seed(0)
    net = build_model(cfg, num_classes=shapes_data["num_classes"])
    ckpt = str(tmp_path / "weights.ckpt")
    ms.save_checkpoint(net, ckpt)

    output = str(tmp_path / "export" / "maskrcnn")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "export.py"), "--config", SHAPES_CFG, "--ckpt_path",
         ckpt, "--file_format", "MINDIR", "--output", output] + overrides,
        cwd=str(tmp_path), env=SCRIPT_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    graph_path, json_path = export_paths(output, "MINDIR")
    spec = load_export_spec(json_path)
    assert spec["class_names"] == shapes_data["class_names"]
    assert spec["category_ids"] == shapes_data["category_ids"]
    assert spec["inputs"][0]["shape"] == [2, 3, 128, 128]
    assert [o["name"] for o in spec["outputs"]] == list(net.output_names)
    assert spec["postprocess"]["mask_threshold"] == net.mask_threshold
    assert spec["postprocess"]["draw_thresh"] == 0.0
    assert spec["outputs"][4]["shape"] == [2, 10, 28, 28]
    assert spec["preprocess"]["canvas"] == [128, 128]
    assert spec["preprocess"]["mean"] == cfg.data.mean

    # two real val images, preprocessed as infer.py does
    images, sizes = [], []
    for name in sorted(os.listdir(shapes_data["val_dir"]))[:2]:
        data = open(os.path.join(shapes_data["val_dir"], name), "rb").read()
        image, size_hw, _, _ = preprocess_image(data, spec_from_export(spec["preprocess"]), name)
        images.append(image)
        sizes.append(size_hw)
    work = tmp_path / "work"
    work.mkdir()
    np.save(work / "in_image.npy", np.stack(images))
    np.save(work / "in_image_size.npy", np.stack(sizes))
    net.set_train(False)
    expected = [o.asnumpy() for o in net(ms.Tensor(np.stack(images)), ms.Tensor(np.stack(sizes)))]
    assert expected[3].any(), "the checkpoint network detects nothing: the comparison is empty"

    runner = tmp_path / "clean_runner.py"
    runner.write_text(CLEAN_RUNNER)
    clean = tmp_path / "clean"
    clean.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "ONEDNN_MAX_CPU_ISA": "AVX2", "GLOG_v": "3"}
    result = subprocess.run([sys.executable, "-I", str(runner), graph_path, json_path, str(work)],
                            cwd=str(clean), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split()[:2] == ["False", "5"]
    for name, want in zip(net.output_names, expected):
        got = np.load(work / f"out_{name}.npy")
        if want.dtype in (np.int32, np.bool_):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)

    # examples/deploy_mindir.py, copied alone into the clean folder, reads the first val image and
    # gives the graph's detections as mindseg's own host postprocessing reads them, at the score
    # threshold of the graph's JSON (0 here) when given none
    shutil.copy(os.path.join(ROOT, "examples", "deploy_mindir.py"), clean / "deploy_mindir.py")
    first = os.path.join(shapes_data["val_dir"], sorted(os.listdir(shapes_data["val_dir"]))[0])
    result = subprocess.run([sys.executable, "-I", "deploy_mindir.py", "--mindir", graph_path,
                             "--image", first, "--json", "dets.json",
                             "--output", "drawn.png"],
                            cwd=str(clean), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    deployed = json.loads((clean / "dets.json").read_text())
    graph_outputs = {name: np.load(work / f"out_{name}.npy") for name in net.output_names}
    _, _, scale_hw, original = preprocess_image(open(first, "rb").read(),
                                                spec_from_export(spec["preprocess"]), first)
    want = image_detections(graph_outputs, 0, scale_hw, *original.shape[:2],
                            mask_threshold=spec["postprocess"]["mask_threshold"])
    assert len(deployed) == len(want["scores"]) > 0
    assert result.stdout.splitlines()[-1] == f"{len(deployed)} detection(s) with score >= 0.0"
    assert [d["class_id"] for d in deployed] == want["labels"].tolist()
    assert [d["class_name"] for d in deployed] == [spec["class_names"][k] for k in want["labels"]]
    np.testing.assert_allclose([d["box"] for d in deployed], want["boxes"], atol=1e-3)
    np.testing.assert_allclose([d["score"] for d in deployed], want["scores"], atol=1e-5)
    assert [d["mask_pixels"] for d in deployed] == want["masks"].reshape(len(deployed), -1).sum(1).tolist()
    assert cv2.imread(str(clean / "drawn.png")).shape == original.shape


def test_export_script_refuses_air_on_cpu(shapes_data, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "export.py"), "--config", SHAPES_CFG, "--ckpt_path",
         str(tmp_path / "none.ckpt"), "--file_format", "AIR",
         f"data.dataset_dir={shapes_data['dataset_dir']}"],
        cwd=str(tmp_path), env=SCRIPT_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "AIR export needs the Ascend backend" in result.stderr
    assert not list(tmp_path.glob("**/*.air"))



def test_draw_instances_marks_mask_box_and_label():
    from mindseg.utils.visualize import MASK_ALPHA, draw_instances, instance_color
    image = np.full((60, 80, 3), 100, np.uint8)
    mask = np.zeros((1, 60, 80), bool)
    mask[0, 30:40, 20:30] = True
    drawn = draw_instances(image, [[10, 25, 50, 55]], [2], [0.9], mask, ["a", "b", "c"])
    color = np.array(instance_color(2), np.float32)
    np.testing.assert_array_equal(drawn[35, 25], (100 * (1 - MASK_ALPHA) + color * MASK_ALPHA)
                                  .astype(np.uint8))
    np.testing.assert_array_equal(drawn[45, 10], color)      # left edge of the box
    np.testing.assert_array_equal(drawn[5, 70], image[5, 70])  # far from everything
    assert (drawn[14:25, 10:40] != 100).any()                # the label above the box
    np.testing.assert_array_equal(image, 100)                # the input is not modified
    with pytest.raises(ValueError, match="differ in number"):
        draw_instances(image, [[0, 0, 1, 1]], [0, 1], [0.5], None)


def test_output_contract_names_are_checked(tmp_path):
    """An output list without a required name (the mask output included), with a name twice or
    with an unknown name is refused in one line naming its source; CenterMask's list passes."""
    from mindseg.models.outputs import check_output_names
    assert check_output_names(("boxes", "scores", "classes", "mask_probs", "valid", "mask_scores")) == \
        ("boxes", "scores", "classes", "mask_probs", "valid", "mask_scores")
    for bad in (("boxes", "scores", "classes", "valid"), ("boxes", "scores", "valid", "mask_probs"),
                ("boxes", "scores", "classes", "valid", "mask_probs", "mask_probs"),
                ("boxes", "scores", "classes", "valid", "mask_probs", "depth")):
        with pytest.raises(ValueError, match="Net.output_names: .* is not an output contract"):
            check_output_names(bad, "Net.output_names")
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"inputs": [], "outputs": [{"name": "boxes"}], "preprocess": {},
                                "postprocess": {}, "class_names": [], "category_ids": []}))
    with pytest.raises(ValueError, match="m.json: outputs: "):
        load_export_spec(str(path))


CM_LITE_CFG = os.path.join(ROOT, "config", "shapes", "centermask_lite_shapes.yml")


def _saved_checkpoint(config, directory, num_classes, with_meta=True):
    """A training checkpoint of ``config``'s model as train.py writes it (with its metadata), or
    a weights-only one (as a converted checkpoint is), for ``num_classes`` classes."""
    from mindseg.engine.checkpoint import CheckpointManager, model_meta
    from mindseg.models import build_model
    cfg = load_config(config, SMALL)
    net = build_model(cfg, num_classes=num_classes)
    if not with_meta:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "weights.ckpt")
        ms.save_checkpoint(net, path)
        return path
    names = [f"class{i}" for i in range(num_classes)]
    meta = model_meta(cfg, {"num_classes": num_classes, "class_names": names,
                            "category_ids": [10 + 2 * i for i in range(num_classes)]})
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
    return CheckpointManager(directory, meta=meta).save(net, optimizer, 3)


def _refusal(capsys, script_main, script, argv):
    with pytest.raises(SystemExit) as info:
        script_main(script)(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and "\n" not in err and "Traceback" not in err, err
    return err


def test_checkpoint_of_another_model_or_class_count_is_one_line(tmp_path, capsys, shapes_data,
                                                                script_main):
    """CenterMask into Mask R-CNN, 5 classes into 3 (metadata) and 7 into 5 (weights only, shapes
    checked): one line naming what the checkpoint holds and what the config builds."""
    centermask = _saved_checkpoint(CM_LITE_CFG, str(tmp_path / "cm"), 5)
    err = _refusal(capsys, script_main, "export",
                   ["--config", SHAPES_CFG, "--ckpt_path", centermask,
                    "--output_dir", str(tmp_path / "out")] + SMALL)
    assert "centermask (vovnet19_slim_dw) with 5 classes" in err
    assert "the config builds a mask_rcnn (resnet18) with 5 classes" in err
    five = _saved_checkpoint(SHAPES_CFG, str(tmp_path / "five"), 5)
    err = _refusal(capsys, script_main, "infer",
                   ["--config", SHAPES_CFG, "--ckpt_path", five, "--input", shapes_data["val_dir"],
                    "--output", str(tmp_path / "i"), "model.num_classes=3"] + SMALL)
    assert "with 5 classes" in err and "with 3 classes" in err
    seven = _saved_checkpoint(SHAPES_CFG, str(tmp_path / "seven"), 7, with_meta=False)
    err = _refusal(capsys, script_main, "eval",
                   ["--config", SHAPES_CFG, "--ckpt_path", seven,
                    "--dataset_dir", shapes_data["dataset_dir"],
                    "--output_dir", str(tmp_path / "e")] + SMALL)
    assert "weights.ckpt" in err and "differ in shape" in err and "class count" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "i").exists()


def test_export_and_infer_from_a_checkpoint_without_the_dataset(tmp_path, shapes_data,
                                                                script_main):
    """The class names and ids travel in the checkpoint: no dataset folder is needed."""
    import shutil
    images = tmp_path / "images"
    shutil.copytree(shapes_data["val_dir"], images)
    ckpt = _saved_checkpoint(SHAPES_CFG, str(tmp_path / "ckpt"), 5)
    gone = ["--dataset_dir", str(tmp_path / "no_such_dataset")]
    graph, spec_path = script_main("export")(["--config", SHAPES_CFG, "--ckpt_path", ckpt,
                                              "--output", str(tmp_path / "m")] + gone + SMALL)
    spec = load_export_spec(spec_path)
    assert spec["class_names"] == [f"class{i}" for i in range(5)]
    assert spec["category_ids"] == [10, 12, 14, 16, 18] and spec["num_classes"] == 5
    counts = script_main("infer")(["--config", SHAPES_CFG, "--ckpt_path", str(tmp_path / "ckpt"),
                                   "--input", str(images), "--output", str(tmp_path / "o"),
                                   "--score_thresh", "0.0"] + gone + SMALL)
    assert sorted(counts) == sorted(os.listdir(images))
    for name in counts:
        dets = json.load(open(tmp_path / "o" / (os.path.splitext(name)[0] + ".json")))
        assert all(d["category_id"] in spec["category_ids"] for d in dets)


def test_infer_names_skips_and_counts_unreadable_images(tmp_path, capsys, shapes_data,
                                                        script_main):
    """A corrupt and an empty file among the images: named, skipped, counted; the others still
    get their outputs. Only a folder where nothing can be read fails."""
    import shutil
    images = tmp_path / "images"
    shutil.copytree(shapes_data["val_dir"], images)
    good = sorted(os.listdir(images))
    (images / "0_corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (images / "zz_empty.png").write_bytes(b"")
    ckpt = _saved_checkpoint(SHAPES_CFG, str(tmp_path / "ckpt"), 5)
    argv = ["--config", SHAPES_CFG, "--ckpt_path", ckpt, "--score_thresh", "0.0",
            "eval.batch_size=2"] + SMALL
    counts = script_main("infer")(argv + ["--input", str(images),
                                          "--output", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert sorted(counts) == good
    assert sorted(os.listdir(tmp_path / "o")) == sorted(
        os.path.splitext(n)[0] + ext for n in good for ext in (".json", ".png"))
    for name in ("0_corrupt.jpg", "zz_empty.png"):
        assert f"skipped {images / name}" in captured.err
    assert f"{len(good) + 2} images, 2 skipped" in captured.out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"junk")
    with pytest.raises(SystemExit) as info:
        script_main("infer")(argv + ["--input", str(bad), "--output", str(tmp_path / "b")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 1 and len(lines) == 2 and "a.jpg" in lines[0]
    assert "none of its 1 image(s) could be read" in lines[1]


class _BoxMaskNet(nn.Cell):
    """A stand-in for a new meta-architecture: one detection per image, box x 32..64, y 16..48
    (resized pixels), mask probability 0.45 over the whole box on an 8 x 8 grid, threshold 0.4."""
    output_names = ("boxes", "scores", "classes", "mask_probs", "valid")
    mask_threshold = 0.4

    def __init__(self):
        super().__init__()
        self.grid = ms.Tensor(np.full((1, 1, 8, 8), 0.45, np.float32))
        self.box = ms.Tensor(np.array([[[32, 16, 64, 48]]], np.float32))

    def construct(self, image, image_size):
        batch = image.shape[0]
        zero = image.mean() * 0.0
        boxes = ms.ops.broadcast_to(self.box, (batch, 1, 4)) + zero
        masks = ms.ops.broadcast_to(self.grid, (batch,) + self.grid.shape[1:]) + zero
        scores = ms.ops.ones((batch, 1), ms.float32) * 0.9
        return boxes, scores, ms.ops.zeros((batch, 1), ms.int32), masks, scores > 0.5


def test_a_meta_architecture_plugs_into_export_infer_and_eval_by_its_output_names(tmp_path):
    """Declaring output_names and mask_threshold is all a new meta-architecture does: its graph is
    exported with its names and threshold, the exported model and the evaluator's conversion read
    its box masks by name, and the threshold decides (0.45 passes 0.4, not 0.5)."""
    from mindseg.engine.evaluator import coco_results_fn
    from mindseg.engine.exporter import export_model
    from mindseg.engine.runners import ExportedModel
    from mindseg.models.postprocess import coco_results, image_detections
    from pycocotools import mask as mask_util
    cfg = load_config(SHAPES_CFG, SMALL)
    net = _BoxMaskNet()
    info = {"num_classes": 1, "class_names": ["a"], "category_ids": [7]}
    graph, json_path = export_model(net, cfg, info, str(tmp_path / "m"), batch_size=1)
    spec = load_export_spec(json_path)
    assert [o["name"] for o in spec["outputs"]] == list(net.output_names)
    assert spec["outputs"][3]["shape"] == [1, 1, 8, 8] and spec["postprocess"]["mask_threshold"] == 0.4
    model = ExportedModel(graph)
    outputs = model(np.zeros((1, 3, 128, 128), np.float32), np.array([[128, 128]], np.float32))
    assert model.output_names == net.output_names and set(outputs) == set(net.output_names)
    # the original image is 256 x 256, resized by 0.5: the box and its mask are x 64..128, y 32..96
    found = image_detections(outputs, 0, (0.5, 0.5), 256, 256, mask_threshold=model.mask_threshold)
    np.testing.assert_allclose(found["boxes"], [[64, 32, 128, 96]])
    mask = found["masks"][0]
    assert mask[36:92, 68:124].all() and not mask[:28].any() and not mask[:, :60].any() and not mask[100:].any()
    assert not image_detections(outputs, 0, (0.5, 0.5), 256, 256, mask_threshold=0.5)["masks"].any()
    infer_result = coco_results(found, info["category_ids"], {"image": "x.png"}, rounded=True)
    assert infer_result[0]["bbox"] == [64.0, 32.0, 64.0, 64.0] and infer_result[0]["category_id"] == 7
    batch = {"image_id": np.array([5]), "image_size": np.array([[128.0, 128.0]]),
             "scale": np.array([[0.5, 0.5]]), "image": np.zeros((1, 3, 128, 128), np.float32)}
    eval_result = coco_results_fn(info["category_ids"], net.mask_threshold)(outputs, batch)
    assert eval_result[0]["image_id"] == 5 and "segm_score" not in eval_result[0]
    rle = dict(eval_result[0]["segmentation"], counts=eval_result[0]["segmentation"]["counts"].encode())
    np.testing.assert_array_equal(mask_util.decode(rle), mask)


@pytest.fixture(scope="module")
def image_mask_graph(tmp_path_factory):
    """``(graph, json)`` of _BoxMaskNet exported as MINDIR: one detection per image, class "a"."""
    from mindseg.engine.exporter import export_model
    return export_model(_BoxMaskNet(), load_config(SHAPES_CFG, SMALL),
                        {"num_classes": 1, "class_names": ["a"], "category_ids": [7]},
                        str(tmp_path_factory.mktemp("image_mask") / "m"))


def test_a_file_that_is_not_an_exported_graph_is_named_in_one_line(tmp_path, capsys, shapes_data,
                                                                   script_main, image_mask_graph):
    """Not a MINDIR (with a good JSON beside it), a MINDIR without its JSON or with a JSON that is
    not JSON, a missing file: infer.py says it in one line naming the file, and Predictor raises an
    error naming it."""
    import shutil
    import mindseg
    graph, json_path = image_mask_graph
    (tmp_path / "junk.mindir").write_bytes(b"not a graph\n")
    shutil.copy(json_path, tmp_path / "junk.json")
    shutil.copy(graph, tmp_path / "lonely.mindir")
    shutil.copy(graph, tmp_path / "text.mindir")
    (tmp_path / "text.json").write_bytes(b"\xff not json")
    cases = {"junk.mindir": ("junk.mindir", "cannot load it as a MINDIR graph"),
             "text.mindir": ("text.json", "not JSON"), "lonely.mindir": ("lonely.mindir", "its description"),
             "missing.mindir": ("missing.mindir", "not found")}
    for name, (culprit, why) in cases.items():
        path, named = str(tmp_path / name), str(tmp_path / culprit)
        err = _refusal(capsys, script_main, "infer",
                       ["--config", SHAPES_CFG, "--mindir", path, "--input", shapes_data["val_dir"],
                        "--output", str(tmp_path / "out")])
        assert err.startswith("infer.py: error: ") and named in err and why in err, err
        with pytest.raises((OSError, ValueError, RuntimeError)) as info:
            mindseg.Predictor(mindir=path)
        message = str(info.value)
        assert named in message and why in message and "\n" not in message, message
    assert not (tmp_path / "out").exists()


def test_infer_keeps_the_outputs_of_images_that_differ_only_in_extension(tmp_path, capsys,
                                                                         script_main,
                                                                         image_mask_graph):
    """x.jpg and x.png keep their extension in their outputs' names, y.png does not; names that
    would still clash are refused before any work."""
    import cv2
    images = tmp_path / "images"
    images.mkdir()
    for name in ("x.jpg", "x.png", "y.png"):
        cv2.imwrite(str(images / name), np.full((64, 64, 3), 120, np.uint8))
    argv = ["--config", SHAPES_CFG, "--mindir", image_mask_graph[0], "--input", str(images)]
    counts = script_main("infer")(argv + ["--output", str(tmp_path / "o")])
    assert counts == {"x.jpg": 1, "x.png": 1, "y.png": 1}
    assert sorted(os.listdir(tmp_path / "o")) == [
        "x.jpg.json", "x.jpg.png", "x.png.json", "x.png.png", "y.json", "y.png"]
    for name in ("x.jpg", "x.png"):
        assert json.load(open(tmp_path / "o" / f"{name}.json"))[0]["image"] == name
    out = capsys.readouterr().out
    assert "x.jpg.png: 1 detection\n" in out and "x.png.png: 1 detection\n" in out
    cv2.imwrite(str(images / "X.jpg.png"), np.full((64, 64, 3), 120, np.uint8))
    err = _refusal(capsys, script_main, "infer", argv + ["--output", str(tmp_path / "o2")])
    assert f"{images / 'X.jpg.png'} and {images / 'x.jpg'} would have the same name" in err, err
    assert not (tmp_path / "o2").exists()
