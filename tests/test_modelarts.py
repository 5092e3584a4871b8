"""ModelArts sync with a stand-in ``moxing`` that copies local folders and records its calls."""
import os
import shutil
import sys
import threading
import types

import pytest

from mindseg.config import to_config
from mindseg.runtime import RuntimeInfo
from mindseg.utils import modelarts


@pytest.fixture()
def fake_moxing(monkeypatch):
    calls = []

    def copy_parallel(src_url, dst_url):
        calls.append((src_url, dst_url))
        shutil.copytree(src_url, dst_url, dirs_exist_ok=True)

    module = types.ModuleType("moxing")
    module.file = types.SimpleNamespace(copy_parallel=copy_parallel)
    monkeypatch.setitem(sys.modules, "moxing", module)
    return calls


@pytest.fixture()
def obs(tmp_path):
    data = tmp_path / "obs" / "coco"
    (data / "annotations").mkdir(parents=True)
    (data / "annotations" / "instances_train2017.json").write_text("{}")
    return data


def _cfg(obs, tmp_path, enable=True):
    return to_config({"enable_modelarts": enable, "data_url": str(obs),
                      "train_url": str(tmp_path / "obs" / "out"), "output_dir": "outputs/run",
                      "data": {"dataset_dir": "datasets/coco", "train_split": "train2017",
                               "val_split": "val2017", "train_ann": "", "train_images": "",
                               "val_ann": "", "val_images": ""}})


def test_one_copy_per_server_others_wait(fake_moxing, obs, tmp_path):
    local = str(tmp_path / "cache" / "data")
    waited = {}

    def other_rank():
        waited["dir"] = modelarts.sync_from_obs(str(obs), local, local_rank=1, timeout_s=30,
                                                poll_s=0.05)

    thread = threading.Thread(target=other_rank)
    thread.start()
    assert modelarts.sync_from_obs(str(obs), local, local_rank=0) == local
    thread.join(timeout=30)
    assert waited["dir"] == local
    assert fake_moxing == [(str(obs), local)]
    assert os.path.isfile(os.path.join(local, "annotations", "instances_train2017.json"))
    modelarts.sync_from_obs(str(obs), local, local_rank=0)  # a second job step: no new copy
    assert len(fake_moxing) == 1


def test_waiting_rank_times_out_with_a_clear_error(fake_moxing, tmp_path):
    with pytest.raises(TimeoutError, match="local rank 3"):
        modelarts.sync_from_obs("obs://bucket/data", str(tmp_path / "c"), local_rank=3,
                                timeout_s=0.2, poll_s=0.05)
    assert fake_moxing == []


def test_prepare_and_finish_redirect_paths(fake_moxing, obs, tmp_path):
    cfg = _cfg(obs, tmp_path)
    cache = str(tmp_path / "cache")
    main = RuntimeInfo(rank=0, world=2, local_rank=0)
    modelarts.prepare_modelarts(cfg, main, cache_dir=cache)
    assert cfg.data.dataset_dir == os.path.join(cache, "data", modelarts.data_cache_name(str(obs)))
    assert cfg.output_dir == os.path.join(cache, "output")
    # datasets by path: relative annotation and image paths point inside the copied data_url
    from mindseg.dataset.sources import split_paths
    cfg.data.train_ann, cfg.data.train_images = "labels/train.json", "pictures"
    assert split_paths(cfg, "train") == (os.path.join(cfg.data.dataset_dir, "labels", "train.json"),
                                         os.path.join(cfg.data.dataset_dir, "pictures"))
    assert split_paths(cfg, "val") == (os.path.join(cfg.data.dataset_dir, "annotations", "instances_val2017.json"),
                                       os.path.join(cfg.data.dataset_dir, "val2017"))
    os.makedirs(cfg.output_dir)
    (tmp_path / "cache" / "output" / "train.log").write_text("done")
    modelarts.finish_modelarts(cfg, RuntimeInfo(rank=1, world=2, local_rank=1, is_main=False))
    assert len(fake_moxing) == 1  # rank 1 copies nothing back
    modelarts.finish_modelarts(cfg, main)
    assert fake_moxing[-1] == (cfg.output_dir, str(tmp_path / "obs" / "out"))
    assert (tmp_path / "obs" / "out" / "train.log").read_text() == "done"


def test_disabled_or_incomplete_settings(fake_moxing, obs, tmp_path):
    cfg = _cfg(obs, tmp_path, enable=False)
    assert modelarts.prepare_modelarts(cfg, RuntimeInfo()).output_dir == "outputs/run"
    modelarts.finish_modelarts(cfg, RuntimeInfo())
    assert fake_moxing == []
    cfg = _cfg(obs, tmp_path)
    cfg.train_url = ""
    with pytest.raises(ValueError, match="train_url"):
        modelarts.prepare_modelarts(cfg, RuntimeInfo(), cache_dir=str(tmp_path / "c"))


def test_another_data_url_copies_again(fake_moxing, obs, tmp_path):
    """A second job on the same server with another data_url trains on that dataset, not on the
    copy of the first one left in the cache."""
    other = tmp_path / "obs" / "other"
    (other / "annotations").mkdir(parents=True)
    (other / "annotations" / "instances_train2017.json").write_text('{"other": 1}')
    cache = str(tmp_path / "cache")
    first = modelarts.prepare_modelarts(_cfg(obs, tmp_path), RuntimeInfo(), cache_dir=cache)
    cfg = _cfg(obs, tmp_path)
    cfg.data_url = str(other)
    second = modelarts.prepare_modelarts(cfg, RuntimeInfo(), cache_dir=cache)
    assert [src for src, _ in fake_moxing] == [str(obs), str(other)]
    assert first.data.dataset_dir != second.data.dataset_dir
    ann = os.path.join(second.data.dataset_dir, "annotations", "instances_train2017.json")
    assert open(ann).read() == '{"other": 1}'
    modelarts.prepare_modelarts(_cfg(obs, tmp_path), RuntimeInfo(), cache_dir=cache)
    assert len(fake_moxing) == 2  # the first url again: its copy is still there


def test_marker_of_another_url_means_copy_again(fake_moxing, obs, tmp_path):
    local = tmp_path / "cache" / "data"
    local.mkdir(parents=True)
    (local / modelarts.DONE_MARKER).write_text("obs://bucket/old\n")
    modelarts.sync_from_obs(str(obs), str(local), local_rank=0)
    assert fake_moxing == [(str(obs), str(local))]
    assert (local / modelarts.DONE_MARKER).read_text().strip() == str(obs)
