"""Where a split's rows come from: the COCO JSON (an index per image, its file read in the batch
workers) or MindRecord shards (the encoded row), with the rows to read after filtering and the
loader that turns one row into a record with ``image_bytes``."""
import os

import numpy as np


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
        from mindseg.dataset.mindrecord.encoding import row_to_record
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


def split_name(cfg, split):
    """The configured split name of "train" or "val"."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return cfg.data.train_split if split == "train" else cfg.data.val_split


def split_paths(cfg, split):
    """``(ann_file, image_dir)`` of ``split`` ("train" or "val"): ``data.<split>_ann`` and
    ``data.<split>_images`` when set (relative paths are taken from ``data.dataset_dir``, so on
    ModelArts they point inside the copied ``data_url``), else the COCO 2017 layout under
    ``data.dataset_dir``."""
    from mindseg.dataset.coco import coco_paths
    default_ann, default_images = coco_paths(cfg.data.dataset_dir, split_name(cfg, split))
    ann_file = cfg.data.train_ann if split == "train" else cfg.data.val_ann
    image_dir = cfg.data.train_images if split == "train" else cfg.data.val_images
    return (os.path.join(cfg.data.dataset_dir, ann_file) if ann_file else default_ann,
            os.path.join(cfg.data.dataset_dir, image_dir) if image_dir else default_images)


def mindrecord_dir(cfg):
    """Where the MindRecord shards are: ``data.mindrecord_dir``, else <dataset_dir>/mindrecord."""
    return cfg.data.mindrecord_dir or os.path.join(cfg.data.dataset_dir, "mindrecord")


def open_coco(cfg, split):
    """The CocoDataset of ``split`` ("train" filters empty images per config, "val" keeps all);
    ``data.strict`` makes bad data an error instead of a skipped, counted problem."""
    from mindseg.dataset.coco import CocoDataset
    ann_file, image_dir = split_paths(cfg, split)
    filter_empty = cfg.data.filter_empty if split == "train" else False
    return CocoDataset(ann_file, image_dir, crowd=cfg.data.crowd, filter_empty=filter_empty,
                       strict=bool(cfg.data.strict))


def _mindrecord_files(cfg, split):
    from mindseg.dataset.mindrecord.paths import find_shards
    directory = mindrecord_dir(cfg)
    files = find_shards(directory, split_name(cfg, split))
    if not files:
        raise FileNotFoundError(f"no MindRecord shards for split {split_name(cfg, split)!r} in "
                                f"{directory}; run scripts/convert_coco.py first")
    return files


def _mindrecord_rows(cfg, split, files):
    """Row positions to read: all, or (``filter_empty`` in training) those with a non-crowd
    annotation, found by reading two small columns (~0.2 ms per row)."""
    import mindspore.dataset as ds
    from mindseg.dataset.mindrecord.paths import load_meta
    meta = load_meta(mindrecord_dir(cfg), split_name(cfg, split))
    if not (split == "train" and cfg.data.filter_empty and meta["num_empty"]):
        return list(range(meta["num_images"]))
    counts = ds.MindDataset(files, columns_list=["num_instances", "num_crowd"], shuffle=False)
    rows = []
    for position, (num_instances, num_crowd) in enumerate(
            counts.create_tuple_iterator(num_epochs=1, output_numpy=True)):
        if int(num_instances) > int(num_crowd):
            rows.append(position)
    return rows


class CocoSource:
    """A COCO JSON split: one index per image, the image file read by the loader."""

    @staticmethod
    def info(cfg, split, report=None):
        """num_classes, class_names, category_ids, num_samples; ``report`` gets the bad data
        (``dataset_info``)."""
        coco = open_coco(cfg, split)
        if report is not None:
            from mindseg.dataset.problems import report_problems
            list_file = os.path.join(cfg.output_dir, f"data_problems_{split}.txt") \
                if cfg.output_dir else None
            report_problems(coco.problems, report, list_file)
        return {"num_classes": coco.num_classes, "class_names": list(coco.class_names),
                "category_ids": list(coco.category_ids), "num_samples": len(coco.records)}

    def __init__(self, cfg, split):
        self.coco = open_coco(cfg, split)
        self.columns, self.loader = ("index",), CocoLoader(self.coco)
        self.positions = list(range(len(self.coco.records)))

    def dataset(self, sampler):
        import mindspore.dataset as ds
        return ds.GeneratorDataset(_IndexSource(len(self.coco.records)), list(self.columns),
                                   sampler=sampler)


class MindRecordSource:
    """MindRecord shards: one encoded row per image (scripts/convert_coco.py)."""

    @staticmethod
    def info(cfg, split, report=None):  # pylint: disable=unused-argument
        """As CocoSource.info, from the shards' metadata (the conversion reported bad data)."""
        from mindseg.dataset.mindrecord.paths import load_meta
        meta = load_meta(mindrecord_dir(cfg), split_name(cfg, split))
        num_samples = meta["num_images"]
        if split == "train" and cfg.data.filter_empty:
            num_samples -= meta["num_empty"]
        return {"num_classes": meta["num_classes"], "class_names": list(meta["class_names"]),
                "category_ids": list(meta["category_ids"]), "num_samples": num_samples}

    def __init__(self, cfg, split):
        from mindseg.dataset.mindrecord.encoding import MINDRECORD_COLUMNS
        self.files = _mindrecord_files(cfg, split)
        self.columns = tuple(MINDRECORD_COLUMNS)
        self.loader = MindRecordLoader(self.columns, cfg.data.crowd)
        self.positions = _mindrecord_rows(cfg, split, self.files)

    def dataset(self, sampler):
        import mindspore.dataset as ds
        return ds.MindDataset(self.files, columns_list=list(self.columns), sampler=sampler)


SOURCES = {"coco": CocoSource, "mindrecord": MindRecordSource}


def source_class(cfg):
    """The source of ``data.format``: each has ``info(cfg, split, report)`` and, built with
    ``(cfg, split)``, ``positions`` (rows to read after filtering), ``columns``, ``loader`` (one
    row -> record) and ``dataset(sampler)``."""
    if cfg.data.format not in SOURCES:
        raise ValueError(f"data.format must be one of {sorted(SOURCES)}, got {cfg.data.format!r}")
    return SOURCES[cfg.data.format]


def open_source(cfg, split):
    """The rows of ``split`` in ``data.format``."""
    return source_class(cfg)(cfg, split)
