"""The model zoo: the shipped configs by name, models built from a name, a file or a Config, and
the weight table that docs/model_zoo.md shows (one source: mindseg/zoo_weights.yml)."""
import os

import pytest

from mindseg import model_zoo
from mindseg.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(net, name):
    return {p.name: p.shape for p in net.get_parameters()}[name]


def test_list_configs_names_every_shipped_config():
    on_disk = set()
    for folder, _, files in os.walk(os.path.join(ROOT, "config")):
        for file in files:
            rel = os.path.relpath(os.path.join(folder, file), os.path.join(ROOT, "config"))
            on_disk.add(rel[:-len(".yml")].replace(os.sep, "/"))
    names = model_zoo.list_configs()
    assert names == sorted(on_disk - {"base"})
    assert {"maskrcnn/mask_rcnn_resnet50_fpn_1x", "shapes/mask_rcnn_shapes",
            "centermask/centermask_lite_V_39_eSE_FPN_ms_4x"} <= set(names)


def test_get_config_by_name_is_the_file_with_overrides():
    by_name = model_zoo.get_config("maskrcnn/mask_rcnn_resnet50_fpn_1x", ["data.canvas=[320,320]"])
    by_file = load_config(os.path.join(ROOT, "config", "maskrcnn", "mask_rcnn_resnet50_fpn_1x.yml"),
                          ["data.canvas=[320,320]"])
    assert by_name == by_file and by_name.data.canvas == [320, 320]
    assert model_zoo.get_config_file("shapes/mask_rcnn_shapes") == \
        os.path.join(ROOT, "config", "shapes", "mask_rcnn_shapes.yml")


def test_unknown_config_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="no shipped config named 'maskrcnn/mask_rcnn_r50'.*"
                                          "did you mean maskrcnn/mask_rcnn_resnet50"):
        model_zoo.get_config("maskrcnn/mask_rcnn_r50")


def test_build_model_from_a_name_a_file_or_a_config():
    net = model_zoo.build_model("shapes/mask_rcnn_shapes", num_classes=3)
    assert _params(net, "roi_heads.box_head.cls_score.weight")[0] == 4  # 3 classes + background
    lite = os.path.join(ROOT, "config", "shapes", "centermask_lite_shapes.yml")
    net = model_zoo.build_model(lite, num_classes=2)
    assert _params(net, "fcos_head.cls_logits.weight")[0] == 2
    net = model_zoo.build_model(load_config(lite, ["model.num_classes=4"]))
    assert _params(net, "fcos_head.cls_logits.weight")[0] == 4
    with pytest.raises(ValueError, match="num_classes is 0"):
        model_zoo.build_model("shapes/mask_rcnn_shapes")


def test_weight_table_names_shipped_configs_and_convert_commands():
    from mindseg.utils.convert_weights import SOURCES
    weights = model_zoo.list_weights()
    configs = set(model_zoo.list_configs())
    assert len(weights) == 12
    for w in weights:
        assert w["config"] in configs, w
        assert w["source"] in SOURCES, w
        assert w["box_ap"] is None or 0 < w["mask_ap"] < w["box_ap"] < 100, w
        assert w["parity"].startswith(("PARITY OK (dev/check_parity_", "not run (")), w
        assert f"--source {w['source']} " in w["convert"]
        assert f"--config config/{w['config']}.yml" in w["convert"]
        assert os.path.isfile(os.path.join(ROOT, "config", w["config"] + ".yml"))
    d2_3x = [w for w in weights if w["file"] == "model_final_f10217.pkl"]
    assert [(w["box_ap"], w["mask_ap"]) for w in d2_3x] == [(41.0, 37.2)]


def test_docs_weights_table_is_generated_from_the_zoo(tmp_path):
    with open(os.path.join(ROOT, "docs", "model_zoo.md"), encoding="utf-8") as f:
        doc = f.read()
    assert model_zoo.weights_markdown() in doc, \
        "docs/model_zoo.md is stale: run python -m mindseg.model_zoo --markdown docs/model_zoo.md"
    stale = tmp_path / "model_zoo.md"
    stale.write_text(doc.replace("| 41.0 / 37.2 |", "| 1.0 / 0.5 |"), encoding="utf-8")
    assert model_zoo.write_markdown(str(stale))
    assert stale.read_text(encoding="utf-8") == doc
