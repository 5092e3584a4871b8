"""Config merge and override rules and their errors."""
from pathlib import Path

import pytest
import yaml

from mindseg.config import ConfigError, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "seed": 0,
    "data": {"canvas": [800, 1344], "mean": [1.0, 2.0, 3.0], "batch_size": 2},
    "model": {"name": "mask_rcnn", "rpn": {"nms_thresh": 0.7, "post_nms_topk": 1000},
              "backbone": {"checkpoint_path": "", "weights": None}},
    "train": {"base_lr": 0.02, "mix": False},
}


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def base_file(tmp_path):
    return write(tmp_path / "base.yml", BASE)


def test_child_overrides_only_what_it_names(tmp_path, base_file):
    child = write(tmp_path / "child.yml",
                  {"__BASE__": "base.yml", "model": {"rpn": {"nms_thresh": 0.6}}})
    cfg = load_config(str(child))
    assert cfg.model.rpn.nms_thresh == 0.6
    assert cfg.model.rpn.post_nms_topk == 1000          # sibling key kept from the base
    assert cfg.data.canvas == [800, 1344]
    assert cfg["train"]["base_lr"] == 0.02               # dict and attribute access agree


def test_command_line_overrides_win_over_files(tmp_path, base_file):
    child = write(tmp_path / "child.yml", {"__BASE__": "base.yml", "train": {"base_lr": 0.01}})
    cfg = load_config(str(child), ["train.base_lr=0.005", "data.canvas=[256, 320]",
                                   "train.mix=True", "model.name=centermask"])
    assert cfg.train.base_lr == 0.005
    assert cfg.data.canvas == [256, 320]
    assert cfg.train.mix is True
    assert cfg.model.name == "centermask"


def test_int_is_accepted_for_a_float_key_and_converted(tmp_path, base_file):
    cfg = load_config(str(base_file), ["train.base_lr=1"])
    assert isinstance(cfg.train.base_lr, float) and cfg.train.base_lr == 1.0


def test_null_default_accepts_any_value(tmp_path, base_file):
    cfg = load_config(str(base_file), ["model.backbone.weights=abc"])
    assert cfg.model.backbone.weights == "abc"


def test_unknown_key_in_file_names_key_and_file(tmp_path, base_file):
    child = write(tmp_path / "child.yml",
                  {"__BASE__": "base.yml", "model": {"rpn": {"nms_tresh": 0.6}}})
    with pytest.raises(ConfigError) as err:
        load_config(str(child))
    assert "model.rpn.nms_tresh" in str(err.value)
    assert "child.yml" in str(err.value)


def test_unknown_key_on_command_line(tmp_path, base_file):
    with pytest.raises(ConfigError, match=r"command line.*unknown key 'train\.lr'"):
        load_config(str(base_file), ["train.lr=0.1"])


def test_wrong_type_names_key_and_file(tmp_path, base_file):
    child = write(tmp_path / "child.yml", {"__BASE__": "base.yml", "data": {"batch_size": "two"}})
    with pytest.raises(ConfigError) as err:
        load_config(str(child))
    message = str(err.value)
    assert "data.batch_size" in message and "child.yml" in message and "int" in message


@pytest.mark.parametrize("override", ["train.mix=1", "seed=0.5", "data.canvas=800",
                                      "model.rpn=3"])
def test_wrong_types_on_command_line(base_file, override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config(str(base_file), [override])


@pytest.mark.parametrize("override, wanted", [
    ("data.min_size=[[192]]", "a list of int"), ("data.min_size=[abc]", "a list of int"),
    ("data.min_size=[600.5]", "a list of int"), ("data.canvas=[192]", "a list of 2 items (H, W)"),
    ("data.mean=[1, 2]", "a list of 3 items one per channel"),
    ("model.rpn.iou_thresholds=[0.3, true]", "a list of float"),
    ("model.rpn.bbox_reg_weights=[1, 1, 1]", "a list of 4 items"),
    ("model.fcos.size_ranges=[[0, 64], [64]]", "a list of 2-item lists"),
    ("model.fcos.size_ranges=[[0, 64], [64, x]]", "lists of number"),
    ("data.transforms=[resize, 3]", "a list of str")])
def test_list_items_and_fixed_lengths_follow_the_shipped_base(override, wanted):
    """A list's items must be of the kind of its default's items in config/base.yml, nested
    lists of its inner length; canvas, mean, std, the box weights keep their length."""
    with pytest.raises(ConfigError) as err:
        load_config("shapes/mask_rcnn_shapes", [override])
    message = str(err.value)
    assert f"key '{override.split('=')[0]}' must be {wanted}" in message, message
    assert override in message and "\n" not in message


def test_list_values_in_a_file_are_checked_and_named_with_the_file(tmp_path, base_file):
    child = write(tmp_path / "child.yml", {"__BASE__": "base.yml", "data": {"canvas": [800]}})
    with pytest.raises(ConfigError, match=r"child\.yml: key 'data\.canvas' must be a list of 2"):
        load_config(str(child))
    cfg = load_config("shapes/mask_rcnn_shapes", [
        "data.mean=[1, 2, 3]", "data.min_size=[160, 192]", "train.lr_steps=[]",
        "model.fcos.size_ranges=[[0, 64], [64, .inf]]", "data.transforms=[resize, pad]"])
    assert cfg.data.mean == [1.0, 2.0, 3.0] and all(isinstance(v, float) for v in cfg.data.mean)
    assert cfg.data.min_size == [160, 192] and cfg.train.lr_steps == []
    assert cfg.model.fcos.size_ranges == [[0, 64], [64, float("inf")]]
    assert cfg.data.transforms == ["resize", "pad"]


def test_override_without_equals_is_rejected(base_file):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(str(base_file), ["train.base_lr"])


def test_only_one_level_of_base(tmp_path, base_file):
    middle = write(tmp_path / "middle.yml", {"__BASE__": "base.yml", "seed": 1})
    top = write(tmp_path / "top.yml", {"__BASE__": "middle.yml", "seed": 2})
    assert load_config(str(middle)).seed == 1
    with pytest.raises(ConfigError, match="one level"):
        load_config(str(top))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yml"))
    bad = tmp_path / "bad.yml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yml"):
        load_config(str(bad))


def test_dump_round_trips(tmp_path, base_file):
    cfg = load_config(str(base_file), ["model.rpn.nms_thresh=0.5"])
    path = dump_config(cfg, str(tmp_path / "out"))
    again = load_config(path)
    assert again == cfg and again.model.rpn.nms_thresh == 0.5


def test_every_shipped_config_loads():
    paths = sorted((ROOT / "config").rglob("*.yml"))
    assert paths, "no configs shipped"
    for path in paths:
        cfg = load_config(str(path))
        assert cfg.model.name in ("mask_rcnn", "centermask", "centermask_point"), path
        h, w = cfg.data.canvas
        assert h % 32 == 0 and w % 32 == 0, f"{path}: canvas must be a multiple of 32"


def test_string_keys_keep_the_text_as_typed(base_file):
    cfg = load_config(str(base_file), ["model.backbone.checkpoint_path=2024"])
    assert cfg.model.backbone.checkpoint_path == "2024"


def test_script_flags_map_onto_config_keys():
    from mindseg.cli import build_parser, config_from_args
    parser = build_parser("train", "test")
    args = parser.parse_args(["--config", str(ROOT / "config" / "base.yml"), "--mix", "True",
                              "--output_dir", "/tmp/x", "--dataset_dir", "/data/coco",
                              "train.base_lr=0.001"])
    cfg = config_from_args(args)
    assert cfg.train.mix is True and cfg.output_dir == "/tmp/x"
    assert cfg.data.dataset_dir == "/data/coco" and cfg.train.base_lr == 0.001


@pytest.mark.parametrize("script", ["train", "eval", "export", "infer"])
def test_every_script_accepts_every_flag_and_names_the_ignored_ones(script, capsys):
    """The model zoos' commands pass --mix to eval and the ModelArts flags everywhere: a flag a
    script has no use for is dropped with one line, never an argparse error."""
    from mindseg.cli import FLAG_KEYS, FLAGS_BY_SCRIPT, SWITCHES, parse
    argv = ["--config", str(ROOT / "config" / "base.yml")]
    for flag in FLAG_KEYS:
        if flag in SWITCHES:  # --overwrite, --strict take no value
            argv += [f"--{flag}"]
        else:
            value = {"mix": "True", "enable_modelarts": "True", "draw_thresh": "0.4", "score_thresh": "0.4"}
            argv += [f"--{flag}", value.get(flag, "/tmp/given")]
    argv += ["--device_target", "CPU", "--mode", "graph", "--file_format", "MINDIR"]
    _, cfg = parse(script, "test", argv)
    err = capsys.readouterr().err
    used = FLAGS_BY_SCRIPT[script]
    assert "mix" in used and cfg.train.mix is True  # float16 inference for eval, export, infer
    for flag in FLAG_KEYS:
        line = f"{script}.py: --{flag} is ignored"
        assert (line in err) == (flag not in used), (flag, err)
    assert cfg.train.resume_ckpt == ("/tmp/given" if "resume_ckpt" in used else "")
    assert cfg.eval.draw_thresh == (0.4 if {"draw_thresh", "score_thresh"} & set(used) else 0.5)
    assert err.count("\n") == len(set(FLAG_KEYS) - set(used))
