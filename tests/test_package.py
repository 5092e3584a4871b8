"""mindseg as an installed library: ``import mindseg`` is cheap and exports only the public names;
configs are found by name from any folder; the wheel (pip wheel of pyproject.toml) installed into
a fresh venv outside the repository runs mindseg-infer like infer.py; an editable install runs the
checkout."""
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLIC = {"Predictor", "model_zoo", "build_model", "load_config", "create_dataset"}
SCRIPTS = ("train", "eval", "export", "infer")
# what the wheel is built from: the package, its configs and the entry scripts
SOURCES = ("mindseg", "config", "pyproject.toml", "README.md", "LICENSE") + tuple(f"{s}.py" for s in SCRIPTS)
SMALL = ["data.canvas=[128,128]", "data.test_min_size=128", "data.test_max_size=128",
         "data.num_workers=0", "mode=pynative", "model.rpn.pre_nms_topk_test=100",
         "model.rpn.post_nms_topk_test=50", "model.roi_heads.detections_per_image=10",
         "model.roi_heads.test_topk_candidates=100", "model.roi_heads.score_thresh_test=0.0"]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ONEDNN_MAX_CPU_ISA")}
    env["GLOG_v"] = "3"
    return env


def _run(args, cwd, timeout=300):
    return subprocess.run([str(a) for a in args], cwd=str(cwd), env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_import_is_cheap_and_exports_the_public_names_only():
    code = ("import json, os, sys\n"
            "import mindseg\n"
            "state = {'mindspore': 'mindspore' in sys.modules,\n"
            "         'isa': os.environ.get('ONEDNN_MAX_CPU_ISA'), 'dir': dir(mindseg),\n"
            "         'all': mindseg.__all__,\n"
            "         'docs': {n: getattr(mindseg, n).__doc__ or '' for n in mindseg.__all__}}\n"
            "try:\n"
            "    mindseg.trainer\n"
            "except AttributeError as err:\n"
            "    state['missing'] = str(err)\n"
            "print(json.dumps(state))\n")
    result = _run([sys.executable, "-c", code], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout.splitlines()[-1])
    assert state["mindspore"] is False and state["isa"] == "AVX2"
    assert set(state["all"]) == PUBLIC
    assert state["dir"] == sorted(PUBLIC | {"__version__"})
    for name, doc in state["docs"].items():
        assert ">>>" in doc, f"mindseg.{name} has no example in its docstring"
    assert "no attribute 'trainer'" in state["missing"]


def test_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from mindseg.config import ConfigError, load_config
    shipped = load_config(os.path.join(ROOT, "config", "shapes", "mask_rcnn_shapes.yml"))
    monkeypatch.chdir(tmp_path)
    assert load_config("config/shapes/mask_rcnn_shapes.yml") == shipped
    assert load_config("shapes/mask_rcnn_shapes") == shipped
    with pytest.raises(ConfigError, match="config file not found: config/shapes/nope.yml"):
        load_config("config/shapes/nope.yml")
    # a file at the path as typed wins over the shipped config of that name
    import yaml
    local = tmp_path / "config" / "shapes"
    local.mkdir(parents=True)
    with open(os.path.join(ROOT, "config", "base.yml"), encoding="utf-8") as f:
        base = yaml.safe_load(f)
    (local / "mask_rcnn_shapes.yml").write_text(yaml.safe_dump(dict(base, seed=7)))
    assert load_config("config/shapes/mask_rcnn_shapes.yml").seed == 7


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    """The files the wheel is made of, copied out of the repository (a build writes build/ and
    *.egg-info beside pyproject.toml)."""
    pytest.importorskip("setuptools", minversion="64")
    src = tmp_path_factory.mktemp("package") / "src"
    src.mkdir()
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    return src


def _fresh_venv(path):
    """A venv on this interpreter that sees this environment's packages (MindSpore etc.) through
    a .pth after its own site-packages, so that nothing is downloaded or reinstalled."""
    result = _run([sys.executable, "-m", "venv", "--without-pip", path], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    python = path / "bin" / "python"
    own = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], ROOT)
    own_site = own.stdout.strip()
    with open(os.path.join(own_site, "host_packages.pth"), "w", encoding="utf-8") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    return python


def _pip(python, *args):
    result = _run([sys.executable, "-m", "pip", "--python", python, *args], cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Synthetic annotations, a 96x160 image and a random-weights Mask R-CNN checkpoint."""
    import cv2
    import mindspore as ms
    import mindseg
    from mindseg.dataset.synthetic import make_synthetic_coco
    root = tmp_path_factory.mktemp("synthetic")
    info = make_synthetic_coco(root / "data", num_train=1, num_val=1, image_size=128, seed=2)
    val = os.path.join(info["val_dir"], sorted(os.listdir(info["val_dir"]))[0])
    image_dir = root / "images"
    image_dir.mkdir()
    cv2.imwrite(str(image_dir / "sample.png"), cv2.resize(cv2.imread(val), (160, 96)))
    ms.set_seed(0)
    cfg = mindseg.load_config("shapes/mask_rcnn_shapes", SMALL)
    ckpt = root / "weights.ckpt"
    ms.save_checkpoint(mindseg.build_model(cfg, num_classes=info["num_classes"]), str(ckpt))
    return dict(info, images=image_dir, ckpt=ckpt)


def test_wheel_in_a_fresh_venv_runs_mindseg_infer_outside_the_repo(source_copy, synthetic,
                                                                   tmp_path):
    import mindseg
    dist = tmp_path / "dist"
    result = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                   "--no-index", "-w", dist, source_copy], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = dist.glob("mindseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, _, files in os.walk(os.path.join(ROOT, "mindseg")):
        for file in files:
            if file.endswith((".py", ".yml")):
                rel = os.path.relpath(os.path.join(folder, file), ROOT).replace(os.sep, "/")
                assert rel in names, f"{rel} is missing from the wheel (pyproject.toml packages)"
    for folder, _, files in os.walk(os.path.join(ROOT, "config")):
        for file in files:
            rel = os.path.relpath(os.path.join(folder, file), os.path.join(ROOT, "config"))
            assert "mindseg/configs/" + rel.replace(os.sep, "/") in names
    assert {f"mindseg_tools/{s}.py" for s in SCRIPTS} <= names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in SCRIPTS:
        assert f"mindseg-{script} = mindseg.console:" in entry_points

    python = _fresh_venv(tmp_path / "venv")
    _pip(python, "install", "--no-deps", "--no-index", wheel)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    where = _run([python, "-c", "import sys, mindseg, mindseg_tools.infer as i; "
                                "from mindseg.config import config_root; "
                                "print(mindseg.__file__, i.__file__, config_root(), "
                                f"any(p.rstrip('/') == {ROOT!r} for p in sys.path))"], cwd)
    assert where.returncode == 0, where.stderr
    package, script, configs, repo_on_path = where.stdout.split()
    venv = str(tmp_path / "venv")
    assert package.startswith(venv) and script.startswith(venv) and configs.startswith(venv)
    assert repo_on_path == "False"

    bin_dir = tmp_path / "venv" / "bin"
    out = tmp_path / "out"
    result = _run([bin_dir / "mindseg-infer", "--config", "config/shapes/mask_rcnn_shapes.yml",
                   "--ckpt_path", synthetic["ckpt"], "--dataset_dir", synthetic["dataset_dir"],
                   "--input", synthetic["images"], "--output", out, "--score_thresh", "0.0"]
                  + SMALL, cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 images, 0 skipped; 10 detection(s) with score >= 0.0" in result.stdout
    assert (out / "sample.png").is_file()
    results = json.loads((out / "sample.json").read_text())
    # the repository's Predictor on the same image gives the installed script's detections
    overrides = SMALL + [f"data.dataset_dir={synthetic['dataset_dir']}"]
    predictor = mindseg.Predictor("shapes/mask_rcnn_shapes", checkpoint=str(synthetic["ckpt"]),
                                  score_thresh=0.0, mask_format="rle", overrides=overrides)
    found = predictor(str(synthetic["images"] / "sample.png"))
    assert [r["segmentation"] for r in results] == found["masks"]
    assert [r["category_id"] for r in results] == \
        [synthetic["category_ids"][k] for k in found["class_ids"]]
    np.testing.assert_allclose([r["score"] for r in results], found["scores"], atol=1e-5)

    # the other console scripts are the other entry scripts, errors included
    for script in ("train", "eval", "export"):
        result = _run([bin_dir / f"mindseg-{script}", "--help"], cwd)
        assert result.returncode == 0, result.stderr
        with open(os.path.join(ROOT, f"{script}.py"), encoding="utf-8") as f:
            assert f.read().split('"""')[1].splitlines()[0] in " ".join(result.stdout.split())
    result = _run([bin_dir / "mindseg-eval", "--config", "shapes/none"], cwd)
    assert result.returncode == 2 and "config file not found: shapes/none" in result.stderr
    assert "Traceback" not in result.stderr


def test_editable_install_runs_the_checkout(source_copy, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    _pip(python, "install", "--no-deps", "--no-build-isolation", "--no-index", "-e", source_copy)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    where = _run([python, "-c", "import mindseg, mindseg_tools.train as t; "
                                "from mindseg.config import config_root; "
                                "print(mindseg.__file__, t.__file__, config_root())"], cwd)
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(source_copy / "mindseg" / "__init__.py"),
                                    str(source_copy / "train.py"), str(source_copy / "config")]
    result = _run([tmp_path / "venv" / "bin" / "mindseg-train", "--help"], cwd)
    assert result.returncode == 0 and "--resume_ckpt" in result.stdout, result.stderr
