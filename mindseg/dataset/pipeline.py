"""The input pipeline: COCO JSON or MindRecord records -> batched samples with static shapes.

``create_dataset(cfg, split, rank, world)`` returns a ``mindspore.dataset`` whose columns are
``SAMPLE_COLUMNS`` (docs/contracts.md), batched: B images on an (H, W) canvas, G padded gt, M mask
crop. Decoding and all transforms run in one python ``per_batch_map`` per batch, in
``data.num_workers`` worker processes (0: in the main process).

Determinism: a sample's randomness (scale choice, flip) is drawn from ``(cfg.seed, epoch,
image_id)`` only, so it does not depend on the source (JSON or MindRecord), on the worker that
builds it or on its position. The epoch comes from MindSpore's ``BatchInfo``: iterate one
iterator over all epochs (``create_tuple_iterator(num_epochs=E)``), and pass ``start_epoch`` when
resuming (it shifts the randomness; MindSpore's shuffle order restarts from its first epoch).
The shuffle is MindSpore's, seeded by ``cfg.seed`` (``ds.config.set_seed``, a global setting);
parallel workers keep the row order, so two runs give the same batches. The JSON and MindRecord
sources shuffle differently (MindDataset has its own sampler), so only their per-image samples
are equal, and their order when shuffle is off.

Sharding, training: a distributed sampler shuffles the split each epoch and deals it to the
ranks; when ``world`` does not divide N it repeats a few samples so that every rank gets
ceil(N / world), and the last incomplete batch is dropped, so all ranks run the same number of
steps (ceil(N / world) // B). Evaluation: rank r reads images r, r + world, ... of the split once,
and its last batch is filled with dummy rows whose ``image_id`` is -1 (ranks may differ by one
batch).

Bad samples: an image that cannot be read or decoded, or a record whose transform fails, is
logged with its image id and file and counted (``bad_sample_count()``, shared with the forked
workers). In training it is replaced by the next good record (JSON source) or, without random
access (MindRecord, whose conversion already drops undecodable images), by another image of the
same batch, else a dummy row; an evaluation batch gets a dummy row (image_id -1) in its place.
"""
import dataclasses
import inspect
import logging
import multiprocessing
import os

import numpy as np

from mindseg.dataset import transforms as T

logger = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("image", "image_size", "scale", "image_id", "gt_boxes", "gt_labels", "gt_valid",
                  "gt_crowd", "gt_masks")

# Shared with forked worker processes, so the main process sees the workers' counts.
_BAD_SAMPLES = multiprocessing.Value("l", 0)
_TRUNCATED_IMAGES = multiprocessing.Value("l", 0)
_MAX_BAD_BEFORE_FIRST_GOOD = 16


def bad_sample_count():
    """How many samples were skipped (unreadable or failing images) in this process tree."""
    return _BAD_SAMPLES.value


def truncated_image_count():
    """How many samples had more than ``max_instances`` gt and lost their smallest ones."""
    return _TRUNCATED_IMAGES.value


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """What a sample is made of: scales, canvas, normalization, gt padding (from ``cfg.data``)."""
    min_sizes: tuple
    max_size: int
    canvas: tuple
    flip_prob: float
    mean: tuple
    std: tuple
    channel_order: str
    max_instances: int
    mask_size: int


def sample_spec(cfg, training):
    """The :class:`SampleSpec` for training (multi-scale, flip) or evaluation (test size)."""
    data = cfg.data
    if training:
        min_sizes = data.min_size if isinstance(data.min_size, (list, tuple)) else [data.min_size]
        max_size, flip_prob = data.max_size, data.flip_prob
    else:
        min_sizes, max_size, flip_prob = [data.test_min_size], data.test_max_size, 0.0
    canvas = tuple(int(v) for v in data.canvas)
    if len(canvas) != 2 or any(v % 32 for v in canvas):
        raise ValueError(f"data.canvas must be [H, W], multiples of 32, got {data.canvas}")
    return SampleSpec(min_sizes=tuple(int(v) for v in min_sizes), max_size=int(max_size),
                      canvas=canvas, flip_prob=float(flip_prob),
                      mean=tuple(float(v) for v in data.mean),
                      std=tuple(float(v) for v in data.std),
                      channel_order=data.channel_order, max_instances=int(data.max_instances),
                      mask_size=int(data.mask_crop))


def sample_rng(seed, epoch, image_id):
    """The random generator of one sample: a function of (seed, epoch, image_id) only."""
    return np.random.default_rng([int(seed), int(epoch), int(image_id)])


def _record_name(record):
    return record.get("file_path") or record.get("file_name") or "?"


def build_sample(record, spec, rng=None):
    """One record -> the tuple of ``SAMPLE_COLUMNS`` arrays of one image (not batched).
    ``rng`` None means evaluation: first min size, no flip."""
    height, width = int(record["height"]), int(record["width"])
    image = T.decode_image(record["image_bytes"], height, width, name=_record_name(record))
    if rng is None:
        min_size, flip = spec.min_sizes[0], False
    else:
        min_size = spec.min_sizes[int(rng.integers(len(spec.min_sizes)))]
        flip = bool(rng.random() < spec.flip_prob)

    boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
    labels = np.asarray(record["labels"], np.int32).reshape(-1)
    crowd = np.asarray(record.get("iscrowd", np.zeros(len(boxes))), np.bool_).reshape(-1)
    keep = T.keep_largest(boxes, spec.max_instances)
    if len(keep) < len(boxes):
        _note_truncation(record, len(boxes), spec.max_instances)
    segms = record["segms"]
    crops = np.zeros((len(keep), spec.mask_size, spec.mask_size), np.uint8)
    for row, k in enumerate(keep):
        crops[row] = T.mask_crop(segms[k], boxes[k], height, width, spec.mask_size)

    scale = T.choose_scale(height, width, min_size, spec.max_size, spec.canvas)
    size_hw = T.resized_size(height, width, scale, spec.canvas)
    scale_hw = (size_hw[0] / height, size_hw[1] / width)
    image = T.resize_image(image, size_hw)
    boxes = T.scale_boxes(boxes[keep], scale_hw)
    if flip:
        image = T.hflip_image(image)
        boxes = T.hflip_boxes(boxes, size_hw[1])
        crops = T.hflip_crops(crops)
    image = T.pad_image(T.normalize_image(image, spec.mean, spec.std, spec.channel_order),
                        spec.canvas)
    gt = T.pad_instances(boxes, labels[keep], crowd[keep], crops, spec.max_instances)
    return (image, np.array(size_hw, np.float32), np.array(scale_hw, np.float32),
            np.array(record["image_id"], np.int32)) + gt


def dummy_sample(spec, image_id=-1):
    """A zero image covering the canvas with no gt: fills an evaluation batch."""
    height, width = spec.canvas
    size, masks = spec.max_instances, spec.mask_size
    return (np.zeros((3, height, width), np.float32), np.array([height, width], np.float32),
            np.ones(2, np.float32), np.array(image_id, np.int32),
            np.zeros((size, 4), np.float32), np.zeros(size, np.int32), np.zeros(size, np.bool_),
            np.zeros(size, np.bool_), np.zeros((size, masks, masks), np.uint8))


_truncation_logged = False


def _note_truncation(record, count, max_instances):
    global _truncation_logged
    with _TRUNCATED_IMAGES.get_lock():
        _TRUNCATED_IMAGES.value += 1
    if not _truncation_logged:
        _truncation_logged = True
        logger.warning("image %s (%s) has %d instances; only the %d largest are kept (logged once; "
                       "see truncated_image_count())", record["image_id"], _record_name(record),
                       count, max_instances)


class BatchBuilder:
    """The ``per_batch_map``: rows of the source -> one batch of ``SAMPLE_COLUMNS``.

    ``load(row)`` turns one source row (a tuple of column values) into a record with
    ``image_bytes``. Picklable, so it can run in worker processes."""

    def __init__(self, load, num_columns, spec, training, seed, batch_size, start_epoch=0):
        # batch() checks the arity of per_batch_map: one parameter per column + BatchInfo.
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(f"column{i}", inspect.Parameter.POSITIONAL_ONLY)
             for i in range(num_columns)] +
            [inspect.Parameter("batch_info", inspect.Parameter.POSITIONAL_ONLY)])
        self.load = load
        self.spec = spec
        self.training = training
        self.seed = seed
        self.batch_size = batch_size
        self.start_epoch = start_epoch
        self.num_good = 0
        self.num_bad = 0

    def __call__(self, *columns_and_info):
        *columns, batch_info = columns_and_info
        epoch = self.start_epoch + batch_info.get_epoch_num()
        samples = [self._sample_or_replacement(row, epoch) for row in zip(*columns)]
        good = [s for s in samples if s is not None]
        for k, sample in enumerate(samples):
            if sample is None:
                samples[k] = good[k % len(good)] if self.training and good \
                    else dummy_sample(self.spec)
        samples += [dummy_sample(self.spec)] * (self.batch_size - len(samples))
        return tuple(np.stack(column) for column in zip(*samples))

    def _sample_or_replacement(self, row, epoch):
        """The row's sample; in training a bad row is replaced by the first good one of the
        loader's ``alternatives`` (if it has random access), each with its own randomness."""
        sample = self._try_sample(row, epoch)
        if sample is None and self.training and hasattr(self.load, "alternatives"):
            for other in self.load.alternatives(row):
                sample = self._try_sample(other, epoch)
                if sample is not None:
                    break
        return sample

    def _try_sample(self, row, epoch):
        record = None
        try:
            record = self.load(row)
            rng = sample_rng(self.seed, epoch, record["image_id"]) if self.training else None
            sample = build_sample(record, self.spec, rng)
        except Exception as err:  # one bad sample must not end the epoch; counted and logged
            self.num_bad += 1
            with _BAD_SAMPLES.get_lock():
                _BAD_SAMPLES.value += 1
                total = _BAD_SAMPLES.value
            image_id = record["image_id"] if record else "?"
            name = _record_name(record) if record else self.load.describe(row)
            logger.warning("skipping image %s (%s): %s: %s [%d skipped so far]", image_id, name,
                           type(err).__name__, err, total)
            if self.num_good == 0 and self.num_bad >= _MAX_BAD_BEFORE_FIRST_GOOD:
                raise RuntimeError(f"the first {self.num_bad} samples all failed; last: "
                                   f"image {image_id} ({name})") from err
            return None
        self.num_good += 1
        return sample


class CocoLoader:
    """Row (index,) of the JSON source -> record with image bytes read from disk."""

    def __init__(self, coco):
        self.coco = coco

    def __call__(self, row):
        record = dict(self.coco.records[int(row[0])])
        record["image_bytes"] = self.coco.read_image_bytes(record)
        return record

    def describe(self, row):
        return f"record #{int(row[0])}"

    def alternatives(self, row, count=8):
        """Rows to try in place of a bad one: the next records, in order."""
        size = len(self.coco.records)
        return [((int(row[0]) + k) % size,) for k in range(1, min(count, size - 1) + 1)]


class MindRecordLoader:
    """Row of MindRecord columns -> record; crowd annotations dropped or kept per config."""

    def __init__(self, columns, crowd):
        self.columns = tuple(columns)
        self.crowd = crowd

    def __call__(self, row):
        from mindseg.dataset.mindrecord import row_to_record
        return row_to_record(dict(zip(self.columns, row)), crowd=self.crowd)

    def describe(self, row):
        return "a MindRecord row"


class _IndexSource:
    """Random-access source of record indices for GeneratorDataset (the records stay in the
    batch workers)."""

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return (np.array(index, np.int64),)


def _split_name(cfg, split):
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return cfg.data.train_split if split == "train" else cfg.data.val_split


def mindrecord_dir(cfg):
    return cfg.data.mindrecord_dir or os.path.join(cfg.data.dataset_dir, "mindrecord")


def open_coco(cfg, split):
    """The CocoDataset of ``split`` ("train" filters empty images per config, "val" keeps all);
    ``data.strict`` makes bad data an error instead of a skipped, counted problem."""
    from mindseg.dataset.coco import CocoDataset, coco_paths
    ann_file, image_dir = coco_paths(cfg.data.dataset_dir, _split_name(cfg, split))
    filter_empty = cfg.data.filter_empty if split == "train" else False
    return CocoDataset(ann_file, image_dir, crowd=cfg.data.crowd, filter_empty=filter_empty,
                       strict=bool(cfg.data.strict))


def _mindrecord_files(cfg, split):
    from mindseg.dataset.mindrecord import find_shards
    directory = mindrecord_dir(cfg)
    files = find_shards(directory, _split_name(cfg, split))
    if not files:
        raise FileNotFoundError(f"no MindRecord shards for split {_split_name(cfg, split)!r} in "
                                f"{directory}; run scripts/convert_coco.py first")
    return files


def _mindrecord_rows(cfg, split, files):
    """Row positions to read: all, or (``filter_empty`` in training) those with a non-crowd
    annotation, found by reading two small columns (~0.2 ms per row)."""
    import mindspore.dataset as ds
    from mindseg.dataset.mindrecord import load_meta
    meta = load_meta(mindrecord_dir(cfg), _split_name(cfg, split))
    if not (split == "train" and cfg.data.filter_empty and meta["num_empty"]):
        return list(range(meta["num_images"]))
    counts = ds.MindDataset(files, columns_list=["num_instances", "num_crowd"], shuffle=False)
    rows = []
    for position, (num_instances, num_crowd) in enumerate(
            counts.create_tuple_iterator(num_epochs=1, output_numpy=True)):
        if int(num_instances) > int(num_crowd):
            rows.append(position)
    return rows


class _Source:
    """A split's rows: ``positions`` to read (after filtering), the ``columns`` the MindSpore
    source yields, the ``loader`` of one row and ``dataset(sampler)``, the source itself."""

    def __init__(self, cfg, split):
        self.format = cfg.data.format
        if self.format == "coco":
            self.coco = open_coco(cfg, split)
            self.columns, self.loader = ("index",), CocoLoader(self.coco)
            self.positions = list(range(len(self.coco.records)))
        elif self.format == "mindrecord":
            from mindseg.dataset.mindrecord import MINDRECORD_COLUMNS
            self.files = _mindrecord_files(cfg, split)
            self.columns = tuple(MINDRECORD_COLUMNS)
            self.loader = MindRecordLoader(self.columns, cfg.data.crowd)
            self.positions = _mindrecord_rows(cfg, split, self.files)
        else:
            raise ValueError(f"data.format must be 'coco' or 'mindrecord', got {self.format!r}")

    def dataset(self, sampler):
        import mindspore.dataset as ds
        if self.format == "coco":
            return ds.GeneratorDataset(_IndexSource(len(self.coco.records)), list(self.columns),
                                       sampler=sampler)
        return ds.MindDataset(self.files, columns_list=list(self.columns), sampler=sampler)


def dataset_info(cfg, split="train", report=None):
    """num_classes, class_names, category_ids and num_samples (the whole split, all ranks).
    ``report`` (e.g. print): where the COCO JSON source names and counts its bad data, as
    convert_coco.py does (MindRecord shards hold only what the conversion kept)."""
    if cfg.data.format == "coco":
        coco = open_coco(cfg, split)
        if report is not None:
            from mindseg.dataset.problems import report_problems
            report_problems(coco.problems, report)
        return {"num_classes": coco.num_classes, "class_names": list(coco.class_names),
                "category_ids": list(coco.category_ids), "num_samples": len(coco.records)}
    if cfg.data.format == "mindrecord":
        from mindseg.dataset.mindrecord import load_meta
        meta = load_meta(mindrecord_dir(cfg), _split_name(cfg, split))
        num_samples = meta["num_images"]
        if split == "train" and cfg.data.filter_empty:
            num_samples -= meta["num_empty"]
        return {"num_classes": meta["num_classes"], "class_names": list(meta["class_names"]),
                "category_ids": list(meta["category_ids"]), "num_samples": num_samples}
    raise ValueError(f"data.format must be 'coco' or 'mindrecord', got {cfg.data.format!r}")


def create_dataset(cfg, split="train", rank=0, world=1, training=None, start_epoch=0):
    """Batched ``mindspore.dataset`` of ``split`` ("train" or "val") for rank ``rank`` of
    ``world``. ``training`` (default: split == "train") turns on shuffle, multi-scale and flip,
    equal steps per rank and dropping the last incomplete batch; otherwise every image of the
    rank's part is seen once and the last batch is padded with image_id -1 rows.

    >>> import mindseg
    >>> cfg = mindseg.load_config("shapes/mask_rcnn_shapes", ["data.dataset_dir=datasets/shapes"])
    >>> batch = next(mindseg.create_dataset(cfg, "val").create_dict_iterator(output_numpy=True))
    >>> batch["image"].shape, batch["gt_boxes"].shape     # (B, 3, H, W), (B, max_instances, 4)
    """
    import mindspore.dataset as ds

    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    training = split == "train" if training is None else training
    batch_size = cfg.data.batch_size if training else cfg.eval.batch_size
    spec = sample_spec(cfg, training)
    ds.config.set_seed(int(cfg.seed))
    shuffle = bool(cfg.data.shuffle) if training else False

    source = _Source(cfg, split)
    positions = source.positions
    if len(positions) < world:
        raise ValueError(f"split {split!r} of {cfg.data.dataset_dir} has {len(positions)} images "
                         f"to read, fewer than the {world} ranks")
    if training:
        sampler = ds.DistributedSampler(world, rank, shuffle=shuffle)
        sampler.add_child(ds.SubsetSampler(positions))
    else:
        sampler = ds.SubsetSampler(positions[rank::world])
    dataset = source.dataset(sampler)

    workers = int(cfg.data.num_workers)
    builder = BatchBuilder(source.loader, len(source.columns), spec, training, cfg.seed,
                           batch_size, start_epoch)
    return dataset.batch(batch_size, drop_remainder=training, per_batch_map=builder,
                         input_columns=list(source.columns), output_columns=list(SAMPLE_COLUMNS),
                         num_parallel_workers=max(workers, 1), python_multiprocessing=workers > 0)
