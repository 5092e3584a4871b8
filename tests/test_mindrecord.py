"""COCO -> MindRecord -> records round trip, sharding, bad input and interrupted conversions."""
import json
import os

import numpy as np
import pytest

import mindspore.dataset as ds
from mindspore.mindrecord import FileWriter

from mindseg.dataset import mindrecord as mr
from mindseg.dataset.mindrecord import pages
from mindseg.dataset.coco import CocoDataset, DataError, coco_paths
from test_coco import BAD_KINDS, jpeg_bytes, make_coco

GOOD_IDS = [1, 2, 3, 4]


def read_rows(first_shard, **kwargs):
    dataset = ds.MindDataset(first_shard, columns_list=mr.MINDRECORD_COLUMNS, shuffle=False,
                             **kwargs)
    return list(dataset.create_dict_iterator(output_numpy=True, num_epochs=1))


def assert_same_record(from_mr, from_json, image_bytes):
    assert from_mr["image_id"] == from_json["image_id"]
    assert from_mr["file_name"] == from_json["file_name"]
    assert (from_mr["height"], from_mr["width"]) == (from_json["height"], from_json["width"])
    assert from_mr["image_bytes"] == image_bytes
    for key, dtype in (("boxes", np.float32), ("labels", np.int32), ("iscrowd", np.uint8)):
        assert from_mr[key].dtype == dtype, key
        np.testing.assert_array_equal(from_mr[key], from_json[key], err_msg=key)
    assert from_mr["boxes"].shape == from_json["boxes"].shape
    assert from_mr["segms"] == from_json["segms"]


def convert(root, tmp_path, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda message: None)
    return mr.convert_coco_to_mindrecord(root, "train2017", str(tmp_path / "mr" / "train2017"),
                                         **kwargs)


def files_in(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("crowd", ["ignore", "drop"])
def test_roundtrip_equals_json_records(tmp_path, crowd):
    root, split = make_coco(tmp_path / "coco")
    stats = convert(root, tmp_path)
    assert stats["images"] == 4 and stats["problems"] == 0
    direct = CocoDataset(*coco_paths(root, split), crowd=crowd, filter_empty=False)
    rows = read_rows(mr.find_shards(str(tmp_path / "mr"), split)[0])
    records = [mr.row_to_record(row, crowd=crowd) for row in rows]
    assert [r["image_id"] for r in records] == GOOD_IDS
    for from_mr, from_json in zip(records, direct.records):
        assert_same_record(from_mr, from_json, direct.read_image_bytes(from_json))
    assert records[0]["image_bytes"] == jpeg_bytes(1)
    # the counting columns a training filter uses
    assert [int(r["num_instances"]) - int(r["num_crowd"]) for r in rows] == [1, 2, 0, 0]


def test_row_encoding_roundtrip_without_mindrecord():
    record = {"image_id": 5, "file_name": "x.jpg", "height": 4, "width": 6,
              "boxes": np.array([[0, 0, 2, 2], [1, 1, 3, 4]], np.float32),
              "labels": np.array([3, 0], np.int32), "iscrowd": np.array([0, 1], np.uint8),
              "segms": [[[0.0, 0.0, 2.0, 0.0, 2.0, 2.0], [0.5, 0.5, 1.0, 0.5, 1.0, 1.0]],
                        {"size": [4, 6], "counts": b"\x00ab"}]}
    back = mr.row_to_record(mr.record_to_row(record, b"\xff\xd8data\x00"))
    assert_same_record(back, record, b"\xff\xd8data\x00")
    empty = dict(record, boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int32),
                 iscrowd=np.zeros(0, np.uint8), segms=[])
    back = mr.row_to_record(mr.record_to_row(empty, b"img"))
    assert back["boxes"].shape == (0, 4) and back["segms"] == []


def test_meta_sidecar(tmp_path):
    root, _ = make_coco(tmp_path / "coco")
    stats = convert(root, tmp_path)
    meta = mr.load_meta(str(tmp_path / "mr"), "train2017")
    assert meta["num_classes"] == 4
    assert meta["category_ids"] == [3, 7, 12, 20]
    assert meta["class_names"] == ["cat_a", "cat_b", "cat_c", "unused"]
    assert (meta["num_images"], meta["num_instances"], meta["num_crowd"]) == (4, 5, 2)
    assert meta["num_empty"] == 2
    assert stats["meta"] == mr.meta_path(str(tmp_path / "mr" / "train2017"))
    # every way of naming the conversion finds the same shards
    shards = mr.find_shards(str(tmp_path / "mr" / "train2017"))
    assert mr.find_shards(str(tmp_path / "mr")) == shards
    assert mr.find_shards(shards[0]) == shards
    assert mr.find_shards(stats["meta"]) == shards


def test_sharding_and_parallel_workers(tmp_path):
    root, split = make_coco(tmp_path / "coco")
    stats = convert(root, tmp_path, num_shards=3, workers=2)
    shards = mr.find_shards(str(tmp_path / "mr"), split)
    assert [os.path.basename(s) for s in shards] == [f"train2017.mindrecord{i}" for i in range(3)]
    assert shards == stats["shards"]
    assert files_in(tmp_path / "mr") == sorted(
        [os.path.basename(s) for s in shards] + [os.path.basename(s) + ".db" for s in shards]
        + ["train2017.meta.json"])
    rows = read_rows(shards[0])
    assert sorted(int(r["image_id"]) for r in rows) == GOOD_IDS
    one_shard = convert(root, tmp_path / "single")
    single = {int(r["image_id"]): mr.row_to_record(r) for r in read_rows(one_shard["shards"][0])}
    for row in rows:
        record = mr.row_to_record(row)
        assert_same_record(record, single[record["image_id"]], single[record["image_id"]][
            "image_bytes"])
    halves = [read_rows(shards[0], num_shards=2, shard_id=i) for i in range(2)]
    assert sorted(int(r["image_id"]) for half in halves for r in half) == GOOD_IDS


def test_bad_inputs_named_and_counted(tmp_path):
    root, split = make_coco(tmp_path / "coco", bad=BAD_KINDS)
    messages = []
    stats = convert(root, tmp_path, log=messages.append)
    # images 5 (missing), 8 (corrupt), 9 (truncated) skipped; 6 and 7 keep their good annotations
    rows = read_rows(mr.find_shards(str(tmp_path / "mr"), split)[0])
    assert [int(r["image_id"]) for r in rows] == [1, 2, 3, 4, 6, 7]
    assert stats["images"] == 6 and stats["skipped_images"] == 3
    assert stats["problems"] == 8  # 6 load-time (one image has 2 bad polygons) + 2 undecodable
    assert stats["problem_counts"]["unreadable image"] == 2
    for image_id, file_name in ((5, "missing.jpg"), (6, "000006.jpg"), (7, "000007.jpg"),
                                (8, "corrupt.jpg"), (9, "truncated.jpg"),
                                (999, "<unknown image>"), (1, "000001.jpg")):
        assert any(f"image {image_id} ({file_name}):" in m for m in messages), image_id
    assert any("truncated" in m and "truncated.jpg" in m for m in messages)
    meta = mr.load_meta(stats["meta"])
    assert meta["num_problems"] == 8 and len(meta["problems"]) == 8


def test_strict_stops_and_leaves_no_files(tmp_path):
    root, _ = make_coco(tmp_path / "coco", bad=["truncated jpeg"])
    with pytest.raises(DataError, match=r"image 9 \(truncated.jpg\)"):
        convert(root, tmp_path, strict=True)
    assert files_in(tmp_path / "mr") == []
    with pytest.raises(FileNotFoundError, match="no finished MindRecord conversion"):
        mr.find_shards(str(tmp_path / "mr" / "train2017"))


def test_interrupted_conversion_leaves_no_finished_files(tmp_path, monkeypatch):
    root, _ = make_coco(tmp_path / "coco")
    convert(root, tmp_path / "old")  # a finished conversion elsewhere is untouched
    old = files_in(tmp_path / "old" / "mr")

    def fail(self):
        raise KeyboardInterrupt("killed while committing")
    monkeypatch.setattr(FileWriter, "commit", fail)
    with pytest.raises(KeyboardInterrupt):
        convert(root, tmp_path, num_shards=2)
    assert files_in(tmp_path / "mr") == []
    assert files_in(tmp_path / "old" / "mr") == old


def test_failed_reconversion_keeps_previous_result(tmp_path, monkeypatch):
    root, split = make_coco(tmp_path / "coco")
    convert(root, tmp_path, num_shards=2)
    before = files_in(tmp_path / "mr")
    monkeypatch.setattr("mindseg.dataset.mindrecord.convert._prepare_row", lambda record: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        convert(root, tmp_path, num_shards=3)
    assert files_in(tmp_path / "mr") == before
    assert len(read_rows(mr.find_shards(str(tmp_path / "mr"), split)[0])) == 4


def test_reconversion_replaces_and_stale_temp_removed(tmp_path):
    root, split = make_coco(tmp_path / "coco")
    convert(root, tmp_path, num_shards=3)
    for name in ("train2017", "other"):  # killed runs (no such process)
        stale = tmp_path / "mr" / f".{name}.tmp-999999999"
        stale.mkdir()
        (stale / f"{name}.mindrecord0").write_bytes(b"partial")
    with pytest.raises(FileNotFoundError, match="unfinished conversion folder"):
        mr.find_shards(str(tmp_path / "mr" / "other"))
    convert(root, tmp_path, num_shards=1)
    assert files_in(tmp_path / "mr") == [".other.tmp-999999999", "train2017.meta.json",
                                         "train2017.mindrecord", "train2017.mindrecord.db"]
    assert len(read_rows(mr.find_shards(str(tmp_path / "mr"), split)[0])) == 4


def test_script_prints_rate_size_and_skips(tmp_path, capsys):
    import runpy
    root, _ = make_coco(tmp_path / "coco", bad=["corrupt jpeg"])
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "convert_coco.py")
    main = runpy.run_path(script)["main"]
    code = main(["--dataset_dir", root, "--split", "train2017", "--output",
                 str(tmp_path / "out" / "train2017"), "--num_shards", "2", "--no_progress"])
    out = capsys.readouterr()
    assert code == 0
    assert "images/s" in out.out and "KiB per image" in out.out
    assert "skipped: 1 images, 1 problems (1 unreadable image)" in out.out
    assert "image 8 (corrupt.jpg): unreadable image" in out.err
    with open(str(tmp_path / "out" / "train2017.meta.json")) as f:
        assert json.load(f)["num_images"] == 4


def _with_missing_images(root, count):
    """Add ``count`` images whose files do not exist, each with one annotation."""
    ann_file = coco_paths(root, "train2017")[0]
    with open(ann_file, encoding="utf-8") as f:
        data = json.load(f)
    first = data["annotations"][0]
    for k in range(count):
        data["images"].append(dict(data["images"][0], id=1000 + k, file_name=f"gone{k}.jpg"))
        data["annotations"].append(dict(first, id=1000 + k, image_id=1000 + k))
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump(data, f)


def test_script_names_a_few_problems_of_each_kind_and_lists_them_all(tmp_path, capsys):
    import runpy
    root, _ = make_coco(tmp_path / "coco", bad=["corrupt jpeg"])
    _with_missing_images(root, 50)
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "convert_coco.py")
    prefix = tmp_path / "out" / "train2017"
    code = runpy.run_path(script)["main"](["--dataset_dir", root, "--split", "train2017",
                                           "--output", str(prefix), "--no_progress"])
    out = capsys.readouterr()
    assert code == 0
    named = out.err.strip().splitlines()
    assert named[:5] == [f"skipped: image {1000 + k} (gone{k}.jpg): missing image file: "
                         f"{os.path.join(root, 'train2017', f'gone{k}.jpg')}" for k in range(5)]
    assert len(named) == 7 and named[5].startswith("skipped: image 8 (corrupt.jpg): unreadable")
    assert named[6] == "... and 45 more 'missing image file' problems"
    listed = f"{prefix}.problems.txt"
    assert (f"skipped: 51 images, 51 problems (50 missing image file, 1 unreadable image); "
            f"all listed in {listed}") in out.out
    with open(listed, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == 51 and "(corrupt.jpg): unreadable image" in lines[-1]
    assert all(f"(gone{k}.jpg): missing image file" in lines[k] for k in range(50))


def test_page_sizing_pads_little_and_header_holds_many_pages(tmp_path, monkeypatch):
    rows = [30_000 + 1000 * (i % 7) for i in range(50)]
    page, header = pages.page_and_header_size(rows, num_shards=2, batch=64)
    shards = pages.rows_of_shards(rows, 2, 64)
    assert [len(s) for s in shards] == [25, 25]
    padded = sum(pages.padded_bytes(s, page) for s in shards)
    assert padded <= 1.05 * sum(rows)  # a fixed 32 MB page would be ~40x the data
    assert pages.padded_bytes([10, 10], 25) == 25  # one page: the raw page ends the file
    assert pages.padded_bytes([10, 10, 10], 25) == 75  # pages [10, 10] [10] and the raw page
    # many small pages: the header must list them all, or FileWriter fails at commit
    monkeypatch.setattr(pages, "_MAX_PAGE", 1 << 15)
    record = {"image_id": 0, "file_name": "x.jpg", "height": 4, "width": 4,
              "boxes": np.zeros((3, 4), np.float32), "labels": np.zeros(3, np.int32),
              "iscrowd": np.zeros(3, np.uint8), "segms": [[[1.0] * 6]] * 3}
    rows = [dict(mr.record_to_row(record, b"x" * 3000), image_id=i) for i in range(3000)]
    page, header = pages.page_and_header_size([3300] * 3000, num_shards=1, batch=64)
    assert page == 1 << 15
    writer = FileWriter(str(tmp_path / "x.mindrecord"), shard_num=1, overwrite=True)
    writer.set_page_size(page)
    writer.set_header_size(header)
    writer.add_schema(mr.SCHEMA, "test")
    for start in range(0, len(rows), 64):
        writer.write_raw_data(rows[start:start + 64])
    writer.commit()
    assert len(read_rows(str(tmp_path / "x.mindrecord"))) == 3000
