"""Data-parallel training of the toy network under msrun, the mpirun script (with and without a
hostfile) and a plain ``mpirun python``, 2 CPU workers: identical trainable weights on both ranks,
data sharded by rank, only rank 0 writes."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "tests", "toy.py")
NUM_IMAGES = 16


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toy_args(out):
    return ["--per_rank_dir", f"--num_images={NUM_IMAGES}", f"output_dir={out}", "train.max_steps=6",
            "train.ckpt_interval=3", "train.log_interval=3"]


def _launch(script, tmp_path, port_var, cmd=None, extra_args=(), **extra_env):
    """Run ``scripts/<script> 2`` on the toy (or ``cmd``, given the output folder); returns it."""
    out = tmp_path / "out"
    env = dict(os.environ, GLOG_v="3", TRAIN_SCRIPT=TOY, LOG_DIR=str(tmp_path / "logs"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               **extra_env)
    env[port_var] = str(_free_port())
    if cmd is None:
        cmd = ["bash", os.path.join(ROOT, "scripts", script), "2"] + _toy_args(out) + list(extra_args)
    else:
        cmd = cmd(out)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    logs = ""
    for folder, _, names in os.walk(tmp_path / "logs"):
        for name in sorted(names):
            path = os.path.join(folder, name)
            logs += f"--- {path}\n" + open(path, errors="replace").read()[-3000:]
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{logs}"
    return out


def _check_run(out, checkpoints=(3, 6)):
    rank0, rank1 = out / "rank0", out / "rank1"
    weights = [np.load(d / "weights.npz") for d in (rank0, rank1)]
    seen = [json.loads((d / "seen.json").read_text()) for d in (rank0, rank1)]
    assert [s["world"] for s in seen] == [2, 2]
    ids0, ids1 = set(seen[0]["image_ids"]), set(seen[1]["image_ids"])
    assert len(ids0) == len(ids1) == NUM_IMAGES // 2
    assert not ids0 & ids1 and ids0 | ids1 == set(range(1, NUM_IMAGES + 1))
    trainable = [k for k in weights[0].files if "moving_" not in k]  # BN statistics stay local
    for name in trainable:
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)
    initial = np.load(rank0 / "initial_weights.npz")
    assert not np.allclose(initial["conv.weight"], weights[0]["conv.weight"])
    assert sorted(os.listdir(rank0 / "checkpoints")) == [f"ckpt_{s:08d}.ckpt" for s in checkpoints] + ["latest"]
    assert (rank0 / "train.log").is_file() and (rank0 / "config.yml").is_file()
    assert not (rank1 / "checkpoints").exists()
    assert not (rank1 / "train.log").exists() and not (rank1 / "config.yml").exists()
    log = (rank0 / "train.log").read_text()
    assert "1 node(s) x 2 device(s): global batch 4 (2 rank(s) x 2 images)" in log
    # the two ranks share the cores instead of each running a thread per core
    assert f", {max(1, os.cpu_count() // 2)} CPU kernel thread(s) per rank" in log


def test_msrun_two_cpu_workers(tmp_path):
    if shutil.which("msrun", path=os.path.dirname(sys.executable) + os.pathsep
                    + os.environ.get("PATH", "")) is None:
        pytest.skip("msrun (from the mindspore wheel) is not on PATH")
    out = _launch("run_msrun_train.sh", tmp_path, "MASTER_PORT", extra_args=["--fake_eval=5,3,1"])
    # evaluation while training: rank 0 evaluates at steps 2 and 4; no improvement at 4 stops both
    # ranks there (rank 1 waits for rank 0's result instead of training on or hanging)
    _check_run(out, checkpoints=(3, 4))
    summaries = [json.loads((out / f"rank{r}" / "seen.json").read_text())["summary"] for r in (0, 1)]
    assert [s["steps_run"] for s in summaries] == [4, 4]
    assert all("not improved for 1 evaluation" in s["stopped_early"] for s in summaries)
    rows = [json.loads(line) for line in (out / "rank0" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["segm_AP"]) for r in rows] == [(2, 5.0), (4, 3.0)]
    assert not (out / "rank1" / "metrics.jsonl").exists()


def _need_mpirun():
    if shutil.which("mpirun") is None:
        pytest.skip("OpenMPI is not installed (apt-get install -y openmpi-bin)")


def test_mpirun_script_with_a_hostfile(tmp_path):
    """Two slots of a localhost hostfile: the ranks' local ranks and rank 0's host from OpenMPI."""
    _need_mpirun()
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# one server, two slots\nlocalhost slots=2\n")
    _check_run(_launch("run_distribute_train.sh", tmp_path, "MS_SCHED_PORT", HOSTFILE=str(hostfile)))


def test_plain_mpirun_python_without_the_script(tmp_path):
    """`mpirun -n 2 python toy.py`: each rank joins MindSpore's dynamic cluster by itself."""
    _need_mpirun()
    root = ["--allow-run-as-root"] if os.getuid() == 0 else []
    _check_run(_launch("plain mpirun", tmp_path, "MS_SCHED_PORT", cmd=lambda out: [
        "mpirun", "-n", "2", *root, "--oversubscribe", "--bind-to", "none", "-x", "PATH",
        "-x", "PYTHONPATH", "-x", "GLOG_v", "-x", "MS_SCHED_PORT", sys.executable, TOY]
        + _toy_args(out)))


def test_mpirun_script_takes_the_scheduler_host_from_the_hostfile(tmp_path):
    """Several servers: the hostfile goes to mpirun and world rank 0's host (the hostfile's first)
    becomes MS_SCHED_HOST, which mpirun passes on (a stand-in mpirun records what it got)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "mpirun").write_text('#!/bin/bash\necho "MS_SCHED_HOST=$MS_SCHED_HOST ARGS=$*"\n')
    (fake_bin / "mpirun").chmod(0o755)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two servers\n\n10.1.2.3 slots=8\n10.1.2.4 slots=8\n")
    script = os.path.join(ROOT, "scripts", "run_distribute_train.sh")
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", HOSTFILE=str(hostfile),
               LOG_DIR=str(tmp_path / "logs"))
    env.pop("MS_SCHED_HOST", None)
    out = subprocess.run(["bash", script, "16", "--config", "C"], env=env, capture_output=True,
                         text=True, timeout=30).stdout
    assert out.startswith("MS_SCHED_HOST=10.1.2.3 ")
    assert f"--hostfile {hostfile} " in out and "-n 16 " in out and "-x MS_SCHED_HOST" in out
    assert out.rstrip().endswith("python train.py --config C")
    env["MS_SCHED_HOST"] = "10.9.9.9"
    out = subprocess.run(["bash", script, "16"], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("MS_SCHED_HOST=10.9.9.9 ")
    env["HOSTFILE"] = str(tmp_path / "missing")
    bad = subprocess.run(["bash", script, "16"], env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("no such file")
    assert len(bad.stderr.strip().splitlines()) == 1
