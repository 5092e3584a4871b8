"""Data-parallel training of CenterMask (point representation): a plain ``mpirun -n 2 python
train.py`` (through tests/dp_train.py, which also dumps every rank's losses and weights), one image
per rank, 2 steps on its shapes config at 64x64. The ranks see different images, so their losses
differ, yet their weights are identical after the all-reduced steps, and moved from the init."""
import os
import shutil
import sys

import numpy as np
import pytest

from mindseg.dataset.synthetic import make_synthetic_coco
from test_distributed import _free_port
from test_multinode import HELPER, ROOT, _dump, _start, _wait

CONFIG = os.path.join(ROOT, "config", "shapes", "centermask_point_shapes.yml")
SMALL = ["mode=pynative", "data.canvas=[64,64]", "data.min_size=[64]", "data.max_size=64", "data.test_min_size=64",
         "data.test_max_size=64", "data.num_workers=0", "data.shuffle=false", "data.max_instances=8",
         "data.mask_crop=28", "model.centermask_point.head_channels=32",
         "model.centermask_point.shape_size=8", "train.warmup_iters=1", "train.base_lr=0.02", "train.reference_batch_size=2", "train.log_interval=1",
         "train.ckpt_interval=100", "data.batch_size=1", "train.max_steps=2"]


def test_two_ranks_keep_identical_weights_on_different_images(tmp_path):
    if shutil.which("mpirun") is None:
        pytest.skip("needs OpenMPI's mpirun")
    data = make_synthetic_coco(tmp_path / "shapes", num_train=4, num_val=2, seed=2, image_size=64)
    root_args = ["--allow-run-as-root"] if os.getuid() == 0 else []
    proc = _start(["mpirun", "-n", "2", *root_args, "--oversubscribe", "--bind-to", "none",
                   "-x", "PATH", "-x", "PYTHONPATH", "-x", "GLOG_v", "-x", "DUMP_DIR", "-x", "MS_SCHED_PORT",
                   sys.executable, HELPER, "--config", CONFIG, f"data.dataset_dir={data['dataset_dir']}",
                   f"output_dir={tmp_path / 'out'}", *SMALL], tmp_path, "launch",
                  MS_SCHED_PORT=str(_free_port()))
    _wait(proc, tmp_path, "launch")
    (rank0, rank1), (weights0, weights1) = _dump(tmp_path)
    assert [(rank0["rank"], rank0["world"]), (rank1["rank"], rank1["world"])] == [(0, 2), (1, 2)]
    assert rank0["loss_names"] == ["loss_heatmap", "loss_offset", "loss_size", "loss_mask"]
    assert len(rank0["losses"]) == len(rank1["losses"]) == 2
    heatmap = rank0["loss_names"].index("loss_heatmap")
    assert abs(rank0["losses"][0][heatmap] - rank1["losses"][0][heatmap]) > 1e-3  # different images
    for name in weights0:
        np.testing.assert_array_equal(weights0[name], weights1[name], err_msg=name)
    log = (tmp_path / "out" / "train.log").read_text()
    assert "1 node(s) x 2 device(s): global batch 2 (2 rank(s) x 1 images)" in log
    assert (tmp_path / "out" / "checkpoints" / "latest").read_text().strip() == "ckpt_00000002.ckpt"
    # the heatmap's last bias starts at the -2.19 prior everywhere: the steps moved it
    assert np.abs(weights0["heads.heatmap.2.bias"] + 2.19).max() > 1e-4
