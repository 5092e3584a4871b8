"""scripts/device_check.py run on the CPU against itself (the command a user runs on a GPU or
Ascend server), its tolerance test, and the one-line refusal of a device_target this MindSpore
cannot run on."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, GLOG_v="3", ONEDNN_MAX_CPU_ISA="AVX2")


def _load_device_check():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    spec = importlib.util.spec_from_file_location("device_check", os.path.join(ROOT, "scripts", "device_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("target,names", [("Ascend", ("CANN", "libge_runner.so")),
                                          ("GPU", ("CUDA", "libcudnn"))])
def test_a_device_this_mindspore_cannot_run_on_is_refused_in_one_line(tmp_path, target, names):
    from mindseg.runtime import _backend_missing
    if not _backend_missing(target):
        pytest.skip(f"this MindSpore runs on {target} here")
    result = subprocess.run([sys.executable, "train.py", "--config", "config/shapes/mask_rcnn_shapes.yml",
                             "--device_target", target, "--output_dir", str(tmp_path / "out"),
                             f"data.dataset_dir={tmp_path / 'none'}"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"train.py: error: --device_target {target}: MindSpore ")
    assert "runs only on CPU" in lines[0] and all(name in lines[0] for name in names), lines[0]
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_tolerances_accept_rounding_and_refuse_a_real_difference():
    compare = _load_device_check().compare
    assert compare(2.0, 2.0 + 0.009 * 2.0, 1e-2) == (pytest.approx(0.018), True)
    assert compare(2.0, 2.03, 1e-2)[1] is False
    assert compare(0.0, 5e-5, 1e-2)[1] is True   # the absolute floor for losses near zero
    assert compare(1.0, float("nan"), 1e-2)[1] is False


def test_device_check_on_the_cpu_against_itself(tmp_path):
    result = subprocess.run([sys.executable, "scripts/device_check.py", "--device_target", "CPU", "--small",
                             "--mode", "pynative", "--steps", "1", "--config",
                             "config/shapes/centermask_point_shapes.yml", "--work", str(tmp_path)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout
    assert "verdict: PASS on CPU" in table
    for check in ("total loss", "grad norm", "loss_heatmap", "loss_mask", "1 steps finite",
                  "train.py on CPU", "eval.py on CPU", "export.py on CPU", "infer.py on CPU"):
        assert f"centermask_point_shapes  {check}" in table, check
    assert (tmp_path / "centermask_point_shapes" / "workflow" / "export" / "graph.mindir").is_file()
    assert os.listdir(tmp_path / "centermask_point_shapes" / "workflow" / "infer")
