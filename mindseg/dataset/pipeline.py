"""The input pipeline: COCO JSON or MindRecord records -> batched samples with static shapes.

``create_dataset(cfg, split, rank, world)`` returns a ``mindspore.dataset`` whose columns are
``SAMPLE_COLUMNS`` (docs/contracts.md), batched: B images on an (H, W) canvas, G padded gt, M mask
crop. It joins a split's rows (:mod:`~mindseg.dataset.sources`), a sampler, and the python
``per_batch_map`` (:mod:`~mindseg.dataset.batching`) that decodes and builds each sample
(:mod:`~mindseg.dataset.sample`) in ``data.num_workers`` worker processes (0: in the main process).

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
logged with its image id and file and counted (:func:`mindseg.dataset.counters.bad_sample_count`,
shared with the forked workers). In training it is replaced by the next good record (JSON
source) or, without random access (MindRecord, whose conversion already drops undecodable
images), by another image of the same batch, else a dummy row; an evaluation batch gets a dummy
row (image_id -1) in its place.
"""

from mindseg.dataset.batching import BatchBuilder
from mindseg.dataset.sample import SAMPLE_COLUMNS, sample_spec
from mindseg.dataset.sources import open_source, source_class


def dataset_info(cfg, split="train", report=None):
    """num_classes, class_names, category_ids and num_samples (the whole split, all ranks).
    ``report`` (e.g. print): where the COCO JSON source names and counts its bad data, as
    convert_coco.py does (MindRecord shards hold only what the conversion kept); the whole list
    goes to ``<output_dir>/data_problems_<split>.txt``."""
    return source_class(cfg).info(cfg, split, report)


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

    source = open_source(cfg, split)
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
