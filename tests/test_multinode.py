"""Training across servers, on the CPU with CenterMask-Lite's shapes config (2 steps, 128 canvas):

- one node with 2 workers (1 image each; a plain ``mpirun -n 2 python train.py``, no wrapper)
  against two msrun "nodes" on localhost
  (NUM_NODES=2, NODE_RANK 0 / 1, one worker each, on ModelArts with a stand-in moxing and one
  cache folder per "server"): the same weights on every rank of both launches;
- FCOS's normalisers are global: the mean over the 2 ranks of each FCOS loss of the first step
  equals the loss of one process on the 2-image batch (the mask and MaskIoU losses are per-device
  means in centermask2, so they are not compared);
- the first log line, the cluster variables of a plain mpirun and the local layout.

tests/dp_train.py is train.py writing every rank's losses and weights.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mindseg.dataset.synthetic import make_synthetic_coco
from mindseg.runtime import RuntimeInfo, cpu_threads_per_rank, local_layout, mpirun_cluster_env
from test_distributed import _free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "config", "shapes", "centermask_lite_shapes.yml")
HELPER = os.path.join(ROOT, "tests", "dp_train.py")
MSRUN = os.path.join(ROOT, "scripts", "run_msrun_train.sh")
# no shuffle and no flip: one process on images (0, 1) sees what ranks 0 and 1 see in their first step
SMALL = ["mode=pynative", "data.canvas=[128,128]", "data.min_size=[128]", "data.max_size=128", "data.test_min_size=128",
         "data.test_max_size=128", "data.num_workers=0", "data.shuffle=false", "data.flip_prob=0.0",
         "data.max_instances=8", "data.mask_crop=28", "model.fcos.pre_nms_topk=100",
         "model.fcos.post_nms_topk_train=20", "train.warmup_iters=1", "train.lr_schedule=step", "train.lr_steps=[100]",
         "train.base_lr=0.02", "train.reference_batch_size=4", "train.log_interval=1",
         "train.ckpt_interval=100"]
FCOS_LOSSES = ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr")
FAKE_MOXING = '''import json, os, shutil, types
def _copy_parallel(src_url, dst_url):
    with open(os.environ["MOX_CALLS"], "a") as f:
        f.write(json.dumps([int(os.environ.get("RANK_ID", "0")), src_url, dst_url]) + "\\n")
    shutil.copytree(src_url, dst_url, dirs_exist_ok=True)
file = types.SimpleNamespace(copy_parallel=_copy_parallel)
'''


def _start(args, root, name, **env):
    """Popen of ``args`` in ``root`` writing ``root/name.log``; ``DUMP_DIR`` is ``root/dump``."""
    full_env = dict(os.environ, GLOG_v="3", TRAIN_SCRIPT=HELPER, DUMP_DIR=str(root / "dump"),
                    PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    full_env.update(env)
    log = open(root / f"{name}.log", "w")
    return subprocess.Popen(args, cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT)


def _wait(proc, root, name, timeout=420, check=True):
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    text = (root / f"{name}.log").read_text(errors="replace")
    for folder, _, names in os.walk(root):
        text += "".join(f"\n--- {folder}/{n}\n" + open(os.path.join(folder, n), errors="replace").read()[-2500:]
                        for n in names if n.startswith(("worker_", "scheduler")))
    assert not check or proc.returncode == 0, f"{name} exited {proc.returncode}:\n{text[-12000:]}"
    return proc.returncode, text


def _wait_listening(port, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"no scheduler listening on port {port}")


def _dump(root):
    ranks = sorted(n for n in os.listdir(root / "dump") if n.endswith(".json"))
    return ([json.loads((root / "dump" / n).read_text()) for n in ranks],
            [dict(np.load(root / "dump" / n.replace(".json", ".npz"))) for n in ranks])


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    bin_path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("mpirun") is None or shutil.which("msrun", path=bin_path) is None:
        pytest.skip("needs OpenMPI's mpirun and msrun (from the mindspore wheel)")
    base = tmp_path_factory.mktemp("multinode")
    data = make_synthetic_coco(base / "obs" / "shapes", num_train=8, num_val=2, seed=1, image_size=128)
    common = ["--config", CONFIG, f"data.dataset_dir={data['dataset_dir']}", *SMALL]
    one, single, two = base / "one_node", base / "single", base / "two_nodes"
    for folder in (one, single, two):
        folder.mkdir()

    # one node x 2 workers by a plain `mpirun -n 2 python train.py`, and beside it one process
    # with the 2-image batch (first step only)
    root_args = ["--allow-run-as-root"] if os.getuid() == 0 else []
    one_proc = _start(["mpirun", "-n", "2", *root_args, "--oversubscribe", "--bind-to", "none",
                       "-x", "PATH", "-x", "PYTHONPATH", "-x", "GLOG_v", "-x", "DUMP_DIR",
                       "-x", "MS_SCHED_PORT", sys.executable, HELPER, *common,
                       f"output_dir={one / 'out'}", "data.batch_size=1", "train.max_steps=2"],
                      one, "launch", MS_SCHED_PORT=str(_free_port()))
    single_proc = _start([sys.executable, HELPER, *common, f"output_dir={single / 'out'}",
                          "data.batch_size=2", "train.max_steps=1"], single, "launch")
    _wait(single_proc, single, "launch")
    _wait(one_proc, one, "launch")

    # two "servers" on ModelArts: each its own cache folder, a stand-in moxing recording its copies
    (two / "moxing.py").write_text(FAKE_MOXING)
    port = _free_port()
    nodes = []
    for node in (0, 1):
        node_args = ["bash", MSRUN, "1", *common, "data.batch_size=1", "train.max_steps=2",
                     "enable_modelarts=True", f"data_url={data['dataset_dir']}",
                     f"train_url={two / 'obs_out'}"]
        nodes.append(_start(node_args, two, f"node{node}", NUM_NODES="2", NODE_RANK=str(node),
                            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                            LOG_DIR=str(two / f"logs{node}"), MINDSEG_CACHE_DIR=str(two / f"cache{node}"),
                            MOX_CALLS=str(two / f"mox_calls{node}.jsonl"),
                            PYTHONPATH=os.pathsep.join([str(two), ROOT, os.environ.get("PYTHONPATH", "")])))
        if node == 0:
            _wait_listening(port, nodes[0])
    _wait(nodes[0], two, "node0")
    # both "servers" have MASTER_ADDR's address, so msrun starts a scheduler on each; the second
    # cannot take the port and that msrun exits 1 once its worker is done
    node1_rc, node1_log = _wait(nodes[1], two, "node1", check=False)
    assert node1_rc == 0 or "Scheduler process" in node1_log, node1_log[-6000:]
    return {"one": one, "single": single, "two": two, "data": data}


def test_two_nodes_train_like_one_node_with_two_workers(launches):
    one_meta, one_weights = _dump(launches["one"])
    two_meta, two_weights = _dump(launches["two"])
    assert [(m["rank"], m["world"]) for m in two_meta] == [(0, 2), (1, 2)]
    assert [m["nodes"] for m in one_meta] == [1, 1] and [m["nodes"] for m in two_meta] == [2, 2]
    assert [m["local_rank"] for m in one_meta] == [0, 1] and [m["local_rank"] for m in two_meta] == [0, 0]
    np.testing.assert_array_equal(one_meta[0]["losses"], two_meta[0]["losses"])
    np.testing.assert_array_equal(one_meta[1]["losses"], two_meta[1]["losses"])
    single_weights = _dump(launches["single"])[1][0]
    trained = [k for k in one_weights[0] if not np.array_equal(one_weights[0][k], single_weights[k])]
    assert len(trained) > 10  # 2 steps moved the weights (the single run took 1 step)
    for name in one_weights[0]:
        np.testing.assert_array_equal(two_weights[0][name], two_weights[1][name], err_msg=name)
        np.testing.assert_array_equal(one_weights[0][name], one_weights[1][name], err_msg=name)
        np.testing.assert_array_equal(one_weights[0][name], two_weights[0][name], err_msg=name)


def test_fcos_normalisers_are_averaged_over_the_job(launches):
    (rank0, rank1), _ = _dump(launches["one"])
    single = _dump(launches["single"])[0][0]
    names = single["loss_names"]
    for name in FCOS_LOSSES:
        i = names.index(name)
        two_ranks = (rank0["losses"][0][i] + rank1["losses"][0][i]) / 2
        assert two_ranks == pytest.approx(single["losses"][0][i], rel=2e-5), name
    cls = names.index("loss_fcos_cls")
    # the two images differ, so per-rank normalisers would not give the batch's loss
    assert abs(rank0["losses"][0][cls] - rank1["losses"][0][cls]) > 0.05 * single["losses"][0][cls]


def test_first_log_line_reports_the_whole_job(launches):
    one_log = (launches["one"] / "out" / "train.log").read_text()
    two_log = (launches["two"] / "obs_out" / "train.log").read_text()
    assert "on 1 node(s) x 2 device(s): global batch 2 (2 rank(s) x 1 images), peak lr 0.01," in one_log
    assert "on 2 node(s) x 1 device(s): global batch 2 (2 rank(s) x 1 images), peak lr 0.01," in two_log
    # 8 images, one without annotations: 7, padded to 8 for 2 ranks, 4 steps of the global batch
    assert "training 2 steps (4 per epoch)" in two_log


def test_modelarts_copies_once_per_server_and_back_from_rank_zero(launches):
    two, data_url = launches["two"], launches["data"]["dataset_dir"]
    calls = [[json.loads(line) for line in (two / f"mox_calls{n}.jsonl").read_text().splitlines()]
             for n in (0, 1)]
    # one data copy per server (by its only rank), into that server's own cache
    data_copies = [[c for c in node if c[1] == data_url] for node in calls]
    assert [[c[0] for c in node] for node in data_copies] == [[0], [1]]
    assert [node[0][2].startswith(str(two / f"cache{n}")) for n, node in enumerate(data_copies)] == [True, True]
    back = [c for node in calls for c in node if c[2] == str(two / "obs_out")]
    assert len(back) == 1 and back[0][0] == 0
    assert sorted(os.listdir(two / "obs_out" / "checkpoints")) == ["ckpt_00000002.ckpt", "latest"]
    assert not os.path.exists(two / "cache1" / "output" / "checkpoints")


def test_plain_mpirun_maps_onto_the_dynamic_cluster():
    env = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
           "MS_SCHED_PORT": "9001"}
    assert mpirun_cluster_env(env) == {"MS_WORKER_NUM": "4", "MS_NODE_ID": "3", "MS_ROLE": "MS_WORKER",
                                       "MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": "9001"}
    several_hosts = dict(env, OMPI_COMM_WORLD_LOCAL_SIZE="2")
    with pytest.raises(ValueError, match="MS_SCHED_HOST"):
        mpirun_cluster_env(several_hosts)
    assert mpirun_cluster_env(dict(several_hosts, MS_SCHED_HOST="10.0.0.1"))["MS_SCHED_HOST"] == "10.0.0.1"
    assert local_layout(dict(several_hosts, OMPI_COMM_WORLD_LOCAL_RANK="1"), "mpirun", 3, 4) == (1, 2)
    assert local_layout({"DEVICE_ID": "0", "LOCAL_WORLD_SIZE": "1"}, "msrun", 1, 2) == (0, 1)
    assert RuntimeInfo(rank=5, world=16, local_rank=5, local_world=8).nodes == 2


def test_cpu_ranks_on_one_server_share_its_cores():
    # an equal share of the cores, at least one thread
    assert [cpu_threads_per_rank(c, n) for c, n in [(2, 2), (16, 8), (16, 3), (2, 4), (None, 2)]] == [1, 2, 5, 1, 1]
