"""mindseg.Predictor on the three models (Mask R-CNN and CenterMask-Lite shapes configs,
CenterMask V-39) with random weights and thresholds at 0 so that they detect: the detections of a
BGR array, an RGB array and a path agree with infer.py's on the same image, in the image's own
pixels; a checkpoint and its exported MINDIR give the same detections; the drawing is
draw_instances'."""
import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

import mindspore as ms

import mindseg
from mindseg.dataset.pipeline import dataset_info
from mindseg.dataset.synthetic import make_synthetic_coco
from mindseg.engine.exporter import export_model
from mindseg.engine.loading import load_weights
from mindseg.models import build_model
from mindseg.models.mask_ops import mask_to_rle
from mindseg.utils.visualize import draw_instances

# eval.draw_thresh=0: the Predictor, infer.py and an exported graph's JSON default to it, so the
# tests below that give no threshold see every detection of the random weights
SMALL = ["data.canvas=[128,128]", "data.test_min_size=128", "data.test_max_size=128",
         "data.num_workers=0", "mode=pynative", "eval.draw_thresh=0"]
MODELS = {
    "mask_rcnn": ("shapes/mask_rcnn_shapes", [
        "model.rpn.pre_nms_topk_test=100", "model.rpn.post_nms_topk_test=50",
        "model.roi_heads.detections_per_image=10", "model.roi_heads.test_topk_candidates=100",
        "model.roi_heads.score_thresh_test=0.0"]),
    "centermask_lite": ("shapes/centermask_lite_shapes", [
        "model.fcos.score_thresh=0.0", "model.fcos.pre_nms_topk=100",
        "model.fcos.post_nms_topk_test=10"]),
    "centermask": ("centermask/centermask_V_39_eSE_FPN_ms_3x", [
        "model.fcos.score_thresh=0.0", "model.fcos.pre_nms_topk=100",
        "model.fcos.post_nms_topk_test=10"]),
}
HEIGHT, WIDTH = 96, 160  # not the canvas, not square: detections must come back in these pixels


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic annotations (class names) and one 96x160 image made from a val image."""
    root = tmp_path_factory.mktemp("predictor")
    info = make_synthetic_coco(root / "data", num_train=1, num_val=1, image_size=128, seed=5)
    val = os.path.join(info["val_dir"], sorted(os.listdir(info["val_dir"]))[0])
    image = cv2.resize(cv2.imread(val), (WIDTH, HEIGHT))
    path = str(root / "image.png")
    cv2.imwrite(path, image)
    return dict(info, root=root, image=image, path=path)


def _random_net(cfg, num_classes, seed):
    """Random weights, nudged so that masks have pixels above 0.5 and FCOS boxes have an area
    (its ReLU'd distances are 0 for half the random outputs)."""
    ms.set_seed(seed)
    net = mindseg.build_model(cfg, num_classes=num_classes)
    nudges = {"roi_heads.mask_head.predictor.bias": 0.2, "fcos_head.bbox_pred.bias": 1.0}
    for p in net.get_parameters():
        if p.name in nudges:
            p.set_data(ms.Tensor(np.full(p.shape, nudges[p.name], np.float32)))
    return net


def _overrides(model, data):
    return SMALL + MODELS[model][1] + [f"data.dataset_dir={data['dataset_dir']}"]


@pytest.fixture(scope="module")
def checkpoint(data):
    """``checkpoint(model) -> (config, overrides, path)`` of a random-weights checkpoint, made once
    per model."""
    made = {}

    def get(model):
        if model not in made:
            overrides = _overrides(model, data)
            cfg = mindseg.load_config(MODELS[model][0], overrides)
            path = str(data["root"] / f"{model}.ckpt")
            ms.save_checkpoint(_random_net(cfg, data["num_classes"], seed=0), path)
            made[model] = cfg, overrides, path
        return made[model]
    return get


def _assert_same(got, want, atol=0.0):
    assert got["class_ids"].tolist() == want["class_ids"].tolist()
    assert got["class_names"] == want["class_names"]
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=atol)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=atol)
    for a, b in zip(got["masks"], want["masks"]):
        union = (a | b).sum()
        assert union == 0 or (a & b).sum() / union >= (1.0 if atol == 0 else 0.97)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_predictor_agrees_with_infer_in_original_pixels(model, checkpoint, data, tmp_path):
    import infer
    cfg, overrides, ckpt = checkpoint(model)
    predictor = mindseg.Predictor(cfg, checkpoint=ckpt)
    assert predictor.class_names == data["class_names"]
    found = predictor(data["image"])
    count = len(found["scores"])
    assert count == 10, f"{model}: random weights at threshold 0 should fill every slot"
    assert found["masks"].shape == (count, HEIGHT, WIDTH) and found["masks"].dtype == bool
    assert found["masks"].any() and found["image_size"] == (HEIGHT, WIDTH)
    assert (found["boxes"] >= 0).all() and (found["boxes"][:, [0, 2]] <= WIDTH).all() \
        and (found["boxes"][:, [1, 3]] <= HEIGHT).all()
    assert found["class_names"] == [data["class_names"][k] for k in found["class_ids"]]
    assert ("mask_scores" in found) == model.startswith("centermask")

    _assert_same(predictor(data["path"]), found)

    out = tmp_path / "infer"
    infer.main(["--config", MODELS[model][0], "--ckpt_path", ckpt, "--input", data["path"],
                "--output", str(out)] + overrides)
    results = json.loads((out / "image.json").read_text())
    assert [r["category_id"] for r in results] == \
        [data["category_ids"][k] for k in found["class_ids"]]
    np.testing.assert_allclose([r["bbox"] for r in results],
                               [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in found["boxes"]],
                               atol=0.006)
    np.testing.assert_allclose([r["score"] for r in results], found["scores"], atol=1e-5)
    assert [r["segmentation"] for r in results] == [mask_to_rle(m) for m in found["masks"]]


# CenterMask's graph is CenterMask-Lite's with other widths and backbone (its export costs 40 s)
@pytest.mark.parametrize("model", ["mask_rcnn", "centermask_lite"])
def test_checkpoint_and_its_mindir_give_the_same_detections(model, checkpoint, data, tmp_path):
    cfg, _, ckpt = checkpoint(model)
    net = build_model(cfg, num_classes=data["num_classes"])
    load_weights(net, ckpt)
    graph, _ = export_model(net, cfg, dataset_info(cfg, "val"), str(tmp_path / model))
    from_ckpt = mindseg.Predictor(cfg, checkpoint=ckpt, score_thresh=0.0)(data["image"])
    from_mindir = mindseg.Predictor(mindir=graph)(data["image"])  # the graph's JSON says 0
    assert len(from_ckpt["scores"]) == 10
    _assert_same(from_mindir, from_ckpt, atol=0.02)


def test_rgb_rle_and_drawing_in_the_predictors_format(data):
    """format="RGB" reads and draws RGB arrays, mask_format="rle" gives the bitmasks' RLE, and
    draw() is draw_instances on the image's BGR pixels."""
    model = "mask_rcnn"
    ckpt = str(data["root"] / "draw.ckpt")
    cfg = mindseg.load_config(MODELS[model][0], _overrides(model, data))
    ms.save_checkpoint(_random_net(cfg, data["num_classes"], seed=1), ckpt)
    bgr = mindseg.Predictor(cfg, checkpoint=ckpt, score_thresh=0.29)
    found = bgr(data["image"])
    assert 0 < len(found["scores"]) < 10  # the threshold drops some
    want = draw_instances(data["image"], found["boxes"], found["class_ids"], found["scores"],
                          found["masks"], data["class_names"])
    assert (want != data["image"]).any()
    np.testing.assert_array_equal(bgr.draw(data["image"], found), want)
    np.testing.assert_array_equal(bgr.draw(data["path"], found), want)
    rgb = mindseg.Predictor(MODELS[model][0], checkpoint=ckpt, score_thresh=0.29, format="RGB",
                            mask_format="rle", overrides=_overrides(model, data))
    found_rle = rgb(np.ascontiguousarray(data["image"][:, :, ::-1]))
    assert found_rle["masks"] == [mask_to_rle(m) for m in found["masks"]]
    _assert_same(dict(found_rle, masks=found["masks"]), found)
    np.testing.assert_array_equal(rgb.draw(data["path"], found_rle), want[:, :, ::-1])
    np.testing.assert_array_equal(rgb.draw(data["image"][:, :, ::-1], found), want[:, :, ::-1])


def test_predictor_refuses_what_it_cannot_run(data):
    cfg = mindseg.load_config(MODELS["mask_rcnn"][0], _overrides("mask_rcnn", data))
    with pytest.raises(ValueError, match="exactly one of checkpoint"):
        mindseg.Predictor(cfg)
    with pytest.raises(ValueError, match="format must be one of"):
        mindseg.Predictor(cfg, checkpoint="x.ckpt", format="YUV")
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        mindseg.Predictor(cfg, checkpoint=str(data["root"] / "missing.ckpt"))
    ckpt = str(data["root"] / "refuse.ckpt")
    ms.save_checkpoint(mindseg.build_model(cfg, num_classes=2), ckpt)  # weights only, no classes
    nowhere = mindseg.load_config(MODELS["mask_rcnn"][0], SMALL + [
        f"data.dataset_dir={data['root'] / 'nowhere'}"])
    with pytest.raises(ValueError, match="carries no class names: pass class_names"):
        mindseg.Predictor(nowhere, checkpoint=ckpt)
    predictor = mindseg.Predictor(cfg, checkpoint=ckpt, class_names=["a", "b"])
    assert predictor.class_names == ["a", "b"]
    # a checkpoint that carries its classes (as train.py writes them) needs no dataset
    from mindseg.engine.checkpoint import CheckpointManager, model_meta
    from mindseg.engine.train_step import build_optimizer
    net = mindseg.build_model(cfg, num_classes=2)
    info = {"class_names": ["disc", "bar"], "category_ids": [3, 7], "num_classes": 2}
    saved = CheckpointManager(str(data["root"] / "with_meta"), meta=model_meta(cfg, info)).save(
        net, build_optimizer(net, np.full(1, 0.01, np.float32)), 1)
    assert mindseg.Predictor(nowhere, checkpoint=saved).class_names == ["disc", "bar"]
    with pytest.raises(ValueError, match=r"got \(96, 160\) uint8"):
        predictor(data["image"][:, :, 0])
    for array, problem in [(np.zeros((0, 0, 3), np.uint8), "no pixels"),
                           (np.zeros((4, 4, 3, 1), np.uint8), "4 dimensions instead of 3"),
                           (np.zeros((4, 4, 4), np.uint8), "4 channels instead of 3"),
                           (np.zeros((4, 4, 3), np.float32), "float32 pixels instead of uint8")]:
        with pytest.raises(ValueError, match=problem):
            predictor(array)


# A library user's program: its own unraisable exceptions are printed, MindSpore's Cell.__del__
# complaints at exit are not.
QUIET_EXIT = textwrap.dedent("""
    import sys
    import numpy as np
    import mindseg
    config, ckpt, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    predictor = mindseg.Predictor(config, checkpoint=ckpt, class_names=list("abcde"),
                                  score_thresh=0.0, overrides=overrides)
    print(len(predictor(np.full((40, 60, 3), 100, np.uint8))["scores"]))

    class Noisy:
        def __del__(self):
            raise ValueError("a user's own unraisable error")
    kept = Noisy()
""")


def test_a_library_users_program_exits_without_cell_teardown_tracebacks(checkpoint):
    _, overrides, ckpt = checkpoint("mask_rcnn")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, GLOG_v="3")
    result = subprocess.run([sys.executable, "-c", QUIET_EXIT, MODELS["mask_rcnn"][0], ckpt]
                            + overrides, cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.split() == ["10"], result.stderr
    assert "Cell.__del__" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.count("Exception ignored in") == 1, result.stderr[-2000:]
    assert "ValueError: a user's own unraisable error" in result.stderr
