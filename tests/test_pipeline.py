"""The input pipeline on a tiny synthetic COCO: sample geometry, determinism, JSON == MindRecord,
sharding and bad images."""
import dataclasses
import shutil

import numpy as np
import pytest

from mindseg.config import load_config
from mindseg.dataset import batching, counters, sources
from mindseg.dataset import pipeline as P
from mindseg.dataset import sample as S
from mindseg.dataset import transforms as T
from mindseg.dataset.synthetic import make_synthetic_coco

BASE = "config/base.yml"
COLUMN = {name: k for k, name in enumerate(S.SAMPLE_COLUMNS)}


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_coco(root, num_train=12, num_val=5, seed=7, image_size=96)
    return str(root)


@pytest.fixture(scope="module")
def mindrecord_dir(coco_dir):
    from mindseg.dataset.mindrecord import convert_coco_to_mindrecord
    for split in ("train2017", "val2017"):
        convert_coco_to_mindrecord(coco_dir, split, f"{coco_dir}/mindrecord/{split}",
                                   num_shards=2, progress=False)
    return f"{coco_dir}/mindrecord"


def make_cfg(dataset_dir, *overrides):
    return load_config(BASE, [f"data.dataset_dir={dataset_dir}", "data.canvas=[128,160]",
                              "data.min_size=[64,80,96]", "data.max_size=150",
                              "data.test_min_size=96", "data.test_max_size=150",
                              "data.mask_crop=28", "data.max_instances=12", "data.num_workers=0",
                              "eval.batch_size=2", *overrides])


def run_epochs(dataset, epochs=1):
    """Per epoch, the list of per-image sample tuples in the order the batches give them."""
    iterator = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    result = []
    for _ in range(epochs):
        samples = []
        for batch in iterator:
            samples += [tuple(column[k] for column in batch) for k in range(len(batch[0]))]
        result.append(samples)
    return result


def by_image(samples):
    out = {}
    for sample in samples:
        out.setdefault(int(sample[COLUMN["image_id"]]), sample)
    return out


def assert_samples_equal(left, right):
    for name, a, b in zip(S.SAMPLE_COLUMNS, left, right):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def first_record(cfg, min_instances=1):
    coco = sources.open_coco(cfg, "train")
    loader = sources.CocoLoader(coco)
    for index, record in enumerate(coco.records):
        if len(record["boxes"]) >= min_instances:
            return loader((index,))
    raise AssertionError("no record with enough instances")


# ---------------------------------------------------------------- one sample

def test_eval_sample_geometry(coco_dir):
    cfg = make_cfg(coco_dir)
    spec = S.sample_spec(cfg, training=False)
    record = first_record(cfg, min_instances=2)
    sample = S.build_sample(record, spec)
    height, width = record["height"], record["width"]
    size_hw = T.resized_size(height, width, T.choose_scale(height, width, 96, 150, (128, 160)),
                             (128, 160))
    np.testing.assert_array_equal(sample[COLUMN["image_size"]], size_hw)
    scale_hw = sample[COLUMN["scale"]]
    np.testing.assert_allclose(scale_hw, [size_hw[0] / height, size_hw[1] / width], rtol=1e-6)
    count = len(record["boxes"])
    np.testing.assert_allclose(sample[COLUMN["gt_boxes"]][:count],
                               record["boxes"] * scale_hw[[1, 0, 1, 0]], rtol=1e-6)
    assert sample[COLUMN["gt_valid"]].sum() == count
    np.testing.assert_array_equal(sample[COLUMN["gt_labels"]][:count], record["labels"])
    for k in range(count):
        np.testing.assert_array_equal(
            sample[COLUMN["gt_masks"]][k],
            T.mask_crop(record["segms"][k], record["boxes"][k], height, width, 28))
    image = sample[COLUMN["image"]]
    expected = T.normalize_image(T.resize_image(T.decode_image(record["image_bytes"]), size_hw),
                                 cfg.data.mean, cfg.data.std, "BGR")
    np.testing.assert_array_equal(image[:, :size_hw[0], :size_hw[1]], expected)
    assert not image[:, size_hw[0]:].any() and not image[:, :, size_hw[1]:].any()
    assert sample[COLUMN["image_id"]] == record["image_id"]


def test_flip_in_sample_mirrors_image_boxes_and_masks(coco_dir):
    cfg = make_cfg(coco_dir, "data.min_size=[80]")
    record = first_record(cfg, min_instances=2)
    rng = np.random.default_rng(0)
    plain = S.build_sample(record, S.sample_spec(make_cfg(coco_dir, "data.min_size=[80]",
                                                          "data.flip_prob=0.0"), True), rng)
    flipped = S.build_sample(record, S.sample_spec(make_cfg(coco_dir, "data.min_size=[80]",
                                                            "data.flip_prob=1.0"), True), rng)
    height, width = (int(v) for v in plain[COLUMN["image_size"]])
    np.testing.assert_array_equal(flipped[COLUMN["image"]][:, :height, :width],
                                  plain[COLUMN["image"]][:, :height, ::-1][:, :, -width:])
    assert not flipped[COLUMN["image"]][:, :, width:].any()
    valid = plain[COLUMN["gt_valid"]]
    np.testing.assert_allclose(flipped[COLUMN["gt_boxes"]][valid],
                               T.hflip_boxes(plain[COLUMN["gt_boxes"]][valid], width), rtol=1e-6)
    np.testing.assert_array_equal(flipped[COLUMN["gt_masks"]],
                                  plain[COLUMN["gt_masks"]][..., ::-1])


def fixed_sequence_sample(record, spec, rng=None):
    """The sample as build_sample made it before ``data.transforms``: decode, draw scale and
    flip, crop masks, then resize, flip, normalize, pad in that fixed order."""
    height, width = int(record["height"]), int(record["width"])
    image = T.decode_image(record["image_bytes"], height, width)
    if rng is None:
        min_size, flip = spec.min_sizes[0], False
    else:
        min_size = spec.min_sizes[int(rng.integers(len(spec.min_sizes)))]
        flip = bool(rng.random() < spec.flip_prob)
    boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
    labels = np.asarray(record["labels"], np.int32).reshape(-1)
    crowd = np.asarray(record.get("iscrowd", np.zeros(len(boxes))), np.bool_).reshape(-1)
    keep = T.keep_largest(boxes, spec.max_instances)
    crops = np.zeros((len(keep), spec.mask_size, spec.mask_size), np.uint8)
    for row, k in enumerate(keep):
        crops[row] = T.mask_crop(record["segms"][k], boxes[k], height, width, spec.mask_size)
    scale = T.choose_scale(height, width, min_size, spec.max_size, spec.canvas)
    size_hw = T.resized_size(height, width, scale, spec.canvas)
    scale_hw = (size_hw[0] / height, size_hw[1] / width)
    image = T.resize_image(image, size_hw)
    boxes = T.scale_boxes(boxes[keep], scale_hw)
    if flip:
        image, boxes = T.hflip_image(image), T.hflip_boxes(boxes, size_hw[1])
        crops = T.hflip_crops(crops)
    image = T.normalize_image(image, spec.mean, spec.std, spec.channel_order)
    image = T.pad_image(image, spec.canvas)
    gt = T.pad_instances(boxes, labels[keep], crowd[keep], crops, spec.max_instances)
    return (image, np.array(size_hw, np.float32), np.array(scale_hw, np.float32),
            np.array(record["image_id"], np.int32)) + gt


@pytest.mark.parametrize("config", [BASE, "config/shapes/mask_rcnn_shapes.yml"])
def test_default_transforms_give_the_fixed_sequence_samples_bit_exactly(coco_dir, config):
    """resize, flip, normalize, pad from data.transforms == the fixed sequence they replaced, on
    every training image of the shapes data, in training (multi-scale, flip) and evaluation."""
    cfg = make_cfg(coco_dir) if config == BASE else \
        load_config(config, [f"data.dataset_dir={coco_dir}", "data.min_size=[64,96,128]"])
    assert tuple(cfg.data.transforms) == ("resize", "flip", "normalize", "pad")
    coco = sources.open_coco(cfg, "train")
    loader = sources.CocoLoader(coco)
    train_spec, eval_spec = S.sample_spec(cfg, training=True), S.sample_spec(cfg, training=False)
    flips = 0
    for index, record in enumerate(coco.records):
        record = loader((index,))
        assert_samples_equal(S.build_sample(record, eval_spec),
                             fixed_sequence_sample(record, eval_spec))
        for epoch in range(2):
            rng = lambda: S.sample_rng(cfg.seed, epoch, record["image_id"])  # noqa: E731
            got = S.build_sample(record, train_spec, rng())
            assert_samples_equal(got, fixed_sequence_sample(record, train_spec, rng()))
            flips += not np.array_equal(got[COLUMN["image"]], fixed_sequence_sample(
                record, dataclasses.replace(train_spec, flip_prob=0.0), rng())[COLUMN["image"]])
    assert 0 < flips < 2 * len(coco.records)  # both branches of the flip were compared


def test_a_transform_added_through_the_config_changes_the_sample(coco_dir, monkeypatch):
    """A new augmentation is one function in SAMPLE_TRANSFORMS and its name in data.transforms."""
    def invert(sample, spec, rng):
        sample["image"] = 255 - sample["image"]
        return sample

    monkeypatch.setitem(T.SAMPLE_TRANSFORMS, "invert", invert)
    plain_cfg = make_cfg(coco_dir)
    cfg = make_cfg(coco_dir, "data.transforms=[resize,invert,flip,normalize,pad]")
    record = first_record(cfg, min_instances=2)
    plain = S.build_sample(record, S.sample_spec(plain_cfg, training=False))
    inverted = S.build_sample(record, S.sample_spec(cfg, training=False))
    height, width = (int(v) for v in plain[COLUMN["image_size"]])
    resized = T.resize_image(T.decode_image(record["image_bytes"]), (height, width))
    expected = T.pad_image(T.normalize_image(255 - resized, cfg.data.mean, cfg.data.std, "BGR"),
                           cfg.data.canvas)
    np.testing.assert_array_equal(inverted[COLUMN["image"]], expected)
    assert not np.array_equal(inverted[COLUMN["image"]], plain[COLUMN["image"]])
    for name in S.SAMPLE_COLUMNS[1:]:  # the gt and sizes are untouched
        np.testing.assert_array_equal(inverted[COLUMN[name]], plain[COLUMN[name]], err_msg=name)


def test_transform_list_errors_name_the_key(coco_dir):
    with pytest.raises(ValueError, match=r"data.transforms: unknown transform\(s\) \['blur'\]"):
        S.sample_spec(make_cfg(coco_dir, "data.transforms=[resize,blur,normalize,pad]"), True)
    with pytest.raises(ValueError, match="must have 'normalize' and, after it, 'pad'"):
        S.sample_spec(make_cfg(coco_dir, "data.transforms=[resize,pad,normalize]"), True)


def test_unknown_data_format_is_one_line_naming_the_formats(coco_dir):
    cfg = make_cfg(coco_dir, "data.format=tfrecord")
    for call in (lambda: P.dataset_info(cfg), lambda: P.create_dataset(cfg)):
        with pytest.raises(ValueError, match=r"^data.format must be one of \['coco', 'mindrecord'\], got 'tfrecord'$"):
            call()


def test_truncation_keeps_largest_and_is_counted(coco_dir):
    cfg = make_cfg(coco_dir, "data.max_instances=2")
    record = first_record(cfg, min_instances=3)
    before = counters.truncated_image_count()
    sample = S.build_sample(record, S.sample_spec(cfg, training=False))
    assert counters.truncated_image_count() == before + 1
    areas = T.box_areas(record["boxes"])
    largest = np.sort(np.argsort(-areas, kind="stable")[:2])
    scale_hw = sample[COLUMN["scale"]]
    np.testing.assert_allclose(sample[COLUMN["gt_boxes"]],
                               record["boxes"][largest] * scale_hw[[1, 0, 1, 0]], rtol=1e-6)
    assert sample[COLUMN["gt_valid"]].all()


def test_sample_rng_depends_only_on_seed_epoch_image():
    draw = lambda *key: S.sample_rng(*key).random(3)
    np.testing.assert_array_equal(draw(0, 1, 5), draw(0, 1, 5))
    assert not np.array_equal(draw(0, 1, 5), draw(0, 2, 5))
    assert not np.array_equal(draw(0, 1, 5), draw(1, 1, 5))
    assert not np.array_equal(draw(0, 1, 5), draw(0, 1, 6))


# ---------------------------------------------------------------- whole pipeline

def test_batches_have_static_shapes_and_dtypes(coco_dir):
    cfg = make_cfg(coco_dir)
    batch = next(P.create_dataset(cfg, "train").create_tuple_iterator(num_epochs=1,
                                                                       output_numpy=True))
    expected = {"image": ("float32", (2, 3, 128, 160)), "image_size": ("float32", (2, 2)),
                "scale": ("float32", (2, 2)), "image_id": ("int32", (2,)),
                "gt_boxes": ("float32", (2, 12, 4)), "gt_labels": ("int32", (2, 12)),
                "gt_valid": ("bool", (2, 12)), "gt_crowd": ("bool", (2, 12)),
                "gt_masks": ("uint8", (2, 12, 28, 28))}
    for name, column in zip(S.SAMPLE_COLUMNS, batch):
        assert (str(column.dtype), column.shape) == expected[name], name
    assert batch[COLUMN["gt_valid"]].any(axis=1).all()       # filter_empty: every image has gt


def test_two_runs_identical_with_and_without_workers(coco_dir):
    first = run_epochs(P.create_dataset(make_cfg(coco_dir), "train"), epochs=2)
    second = run_epochs(P.create_dataset(make_cfg(coco_dir, "data.num_workers=2"), "train"),
                        epochs=2)
    for epoch_a, epoch_b in zip(first, second):
        assert len(epoch_a) == len(epoch_b) == 10                # 11 images, batch 2, drop last
        for a, b in zip(epoch_a, epoch_b):
            assert_samples_equal(a, b)
    ids = [[int(s[COLUMN["image_id"]]) for s in epoch] for epoch in first]
    sizes = [[tuple(s[COLUMN["image_size"]]) for s in epoch] for epoch in first]
    assert ids[0] != ids[1] or sizes[0] != sizes[1]             # epochs are reshuffled/redrawn
    other_seed = run_epochs(P.create_dataset(make_cfg(coco_dir, "seed=1"), "train"))[0]
    assert [int(s[COLUMN["image_id"]]) for s in other_seed] != ids[0]


def test_json_and_mindrecord_give_identical_samples(coco_dir, mindrecord_dir):
    for split, crowd in (("train", "ignore"), ("val", "drop")):
        # batch 1: no incomplete batch is dropped, so both sources show every image
        json_cfg = make_cfg(coco_dir, f"data.crowd={crowd}", "data.batch_size=1")
        record_cfg = make_cfg(coco_dir, f"data.crowd={crowd}", "data.batch_size=1",
                              "data.format=mindrecord")
        assert P.dataset_info(json_cfg, split) == P.dataset_info(record_cfg, split)
        epochs = 2 if split == "train" else 1
        from_json = run_epochs(P.create_dataset(json_cfg, split), epochs)
        from_record = run_epochs(P.create_dataset(record_cfg, split), epochs)
        for json_epoch, record_epoch in zip(from_json, from_record):
            json_images, record_images = by_image(json_epoch), by_image(record_epoch)
            assert sorted(json_images) == sorted(record_images)
            for image_id, sample in json_images.items():
                assert_samples_equal(sample, record_images[image_id])
        if split == "val":                                       # eval order is the file order
            for a, b in zip(from_json[0], from_record[0]):
                assert_samples_equal(a, b)
        if crowd == "ignore":
            assert any(s[COLUMN["gt_crowd"]].any() for s in from_json[0])


@pytest.mark.parametrize("data_format", ["coco", "mindrecord"])
def test_training_shards_cover_every_image_with_equal_steps(coco_dir, mindrecord_dir, data_format):
    world = 3
    cfg = make_cfg(coco_dir, f"data.format={data_format}", "data.batch_size=1")
    all_ids = set(range(1, 13)) - {4}                             # synthetic image 4 is empty
    parts = [run_epochs(P.create_dataset(cfg, "train", rank=r, world=world), epochs=2)
             for r in range(world)]
    for epoch in range(2):
        ids = [[int(s[COLUMN["image_id"]]) for s in part[epoch]] for part in parts]
        assert [len(i) for i in ids] == [4, 4, 4]                 # ceil(11 / 3) steps each
        merged = sum(ids, [])
        assert set(merged) == all_ids
        assert len(merged) - len(set(merged)) == 1                # one image repeated to fill


@pytest.mark.parametrize("data_format", ["coco", "mindrecord"])
def test_eval_shards_partition_and_pad_with_dummies(coco_dir, mindrecord_dir, data_format):
    world = 2
    cfg = make_cfg(coco_dir, f"data.format={data_format}")
    ids = []
    for rank in range(world):
        samples = run_epochs(P.create_dataset(cfg, "val", rank=rank, world=world))[0]
        rank_ids = [int(s[COLUMN["image_id"]]) for s in samples]
        ids += [i for i in rank_ids if i != -1]
        dummies = [s for s in samples if int(s[COLUMN["image_id"]]) == -1]
        assert len(samples) % 2 == 0 and len(dummies) == (1 if rank == 0 else 0)  # 3 + 2 images
        for dummy in dummies:
            assert not dummy[COLUMN["image"]].any() and not dummy[COLUMN["gt_valid"]].any()
    assert sorted(ids) == list(range(100001, 100006))


def test_bad_image_is_skipped_and_counted(coco_dir, tmp_path):
    broken = tmp_path / "coco"
    shutil.copytree(coco_dir, broken, ignore=shutil.ignore_patterns("mindrecord"))
    (broken / "train2017" / "000000000002.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (broken / "val2017" / "000000100003.jpg").write_bytes(b"")
    before = counters.bad_sample_count()
    cfg = make_cfg(str(broken), "data.batch_size=1")
    for samples in run_epochs(P.create_dataset(cfg, "train"), epochs=2):
        ids = [int(s[COLUMN["image_id"]]) for s in samples]
        assert len(ids) == 11 and 2 not in ids and -1 not in ids
        assert ids.count(3) == 2                                  # image 2 replaced by the next
    assert counters.bad_sample_count() == before + 2                     # once per epoch
    samples = run_epochs(P.create_dataset(cfg, "val"))[0]
    ids = [int(s[COLUMN["image_id"]]) for s in samples]
    assert 100003 not in ids and ids.count(-1) == 2              # the bad one + the padding
    assert counters.bad_sample_count() == before + 3


class FakeBatchInfo:
    def __init__(self, epoch):
        self.epoch = epoch

    def get_epoch_num(self):
        return self.epoch


class NoRandomAccessLoader:
    """Like the MindRecord loader: no ``alternatives``; row (k,) with k < 0 is unreadable."""

    def __init__(self, coco_loader):
        self.coco_loader = coco_loader

    def __call__(self, row):
        if int(row[0]) < 0:
            raise OSError("unreadable row")
        return self.coco_loader(row)

    def describe(self, row):
        return f"row {int(row[0])}"


def test_batch_builder_replacement_without_random_access_and_start_epoch(coco_dir):
    cfg = make_cfg(coco_dir)
    loader = NoRandomAccessLoader(sources.CocoLoader(sources.open_coco(cfg, "train")))
    spec = S.sample_spec(cfg, training=True)
    builder = batching.BatchBuilder(loader, 1, spec, True, seed=0, batch_size=2)
    before = counters.bad_sample_count()
    batch = builder([np.array(0), np.array(-1)], FakeBatchInfo(0))
    first_id = loader((0,))["image_id"]
    np.testing.assert_array_equal(batch[COLUMN["image_id"]], [first_id, first_id])
    alone = builder([np.array(-1), np.array(-1)], FakeBatchInfo(0))
    np.testing.assert_array_equal(alone[COLUMN["image_id"]], [-1, -1])
    assert not alone[COLUMN["gt_valid"]].any()
    assert counters.bad_sample_count() == before + 3
    shifted = batching.BatchBuilder(loader, 1, spec, True, seed=0, batch_size=2, start_epoch=1)
    rows = [np.array(0), np.array(1)]
    for a, b in zip(shifted(rows, FakeBatchInfo(2)), builder(rows, FakeBatchInfo(3))):
        np.testing.assert_array_equal(a, b)
