"""One image's sample: what it is made of (:class:`SampleSpec`, from ``cfg.data``), its
randomness, and :func:`build_sample`, a record through the ``data.transforms`` list into the
arrays of ``SAMPLE_COLUMNS`` (docs/contracts.md).

Shape shorthand: N instances of the record, G padded gt (``max_instances``), M mask crop size,
H W the canvas.
"""
import dataclasses

import numpy as np

from mindseg.dataset import transforms as T
from mindseg.dataset.counters import count_truncation

SAMPLE_COLUMNS = ("image", "image_size", "scale", "image_id", "gt_boxes", "gt_labels", "gt_valid",
                  "gt_crowd", "gt_masks")


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """What a sample is made of: scales, canvas, normalization, gt padding and the sample
    transforms applied in order (names of :data:`mindseg.dataset.transforms.SAMPLE_TRANSFORMS`)."""
    min_sizes: tuple
    max_size: int
    canvas: tuple
    flip_prob: float
    mean: tuple
    std: tuple
    channel_order: str
    max_instances: int
    mask_size: int
    transforms: tuple = T.DEFAULT_TRANSFORMS


def check_transforms(names):
    """``names`` as a tuple; unknown names, or no "normalize" before "pad", are an error."""
    names = tuple(names)
    unknown = [n for n in names if n not in T.SAMPLE_TRANSFORMS]
    if unknown:
        raise ValueError(f"data.transforms: unknown transform(s) {unknown}; known: "
                         f"{sorted(T.SAMPLE_TRANSFORMS)}")
    if "normalize" not in names or "pad" not in names or \
            names.index("normalize") > names.index("pad"):
        raise ValueError(f"data.transforms {list(names)} must have 'normalize' and, after it, "
                         f"'pad': the network takes a normalized image on the canvas")
    return names


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
                      mask_size=int(data.mask_crop), transforms=check_transforms(data.transforms))


def sample_rng(seed, epoch, image_id):
    """The random generator of one sample: a function of (seed, epoch, image_id) only."""
    return np.random.default_rng([int(seed), int(epoch), int(image_id)])


def record_name(record):
    return record.get("file_path") or record.get("file_name") or "?"


def build_sample(record, spec, rng=None):
    """One record -> the tuple of ``SAMPLE_COLUMNS`` arrays of one image (not batched).
    At most G gt are kept (the largest), their masks cropped over their boxes in the original
    image; then ``spec.transforms`` run in order. ``rng`` None means evaluation."""
    height, width = int(record["height"]), int(record["width"])
    image = T.decode_image(record["image_bytes"], height, width, name=record_name(record))
    boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
    labels = np.asarray(record["labels"], np.int32).reshape(-1)
    crowd = np.asarray(record.get("iscrowd", np.zeros(len(boxes))), np.bool_).reshape(-1)
    keep = T.keep_largest(boxes, spec.max_instances)
    if len(keep) < len(boxes):
        count_truncation(record["image_id"], record_name(record), len(boxes), spec.max_instances)
    segms = record["segms"]
    crops = np.zeros((len(keep), spec.mask_size, spec.mask_size), np.uint8)
    for row, k in enumerate(keep):
        crops[row] = T.mask_crop(segms[k], boxes[k], height, width, spec.mask_size)

    sample = {"image": image, "size_hw": (height, width), "scale_hw": (1.0, 1.0),
              "boxes": boxes[keep], "masks": crops, "labels": labels[keep], "crowd": crowd[keep]}
    for name in spec.transforms:
        sample = T.SAMPLE_TRANSFORMS[name](sample, spec, rng)
    gt = T.pad_instances(sample["boxes"], sample["labels"], sample["crowd"], sample["masks"],
                         spec.max_instances)
    return (sample["image"], np.array(sample["size_hw"], np.float32),
            np.array(sample["scale_hw"], np.float32), np.array(record["image_id"], np.int32)) + gt


def dummy_sample(spec, image_id=-1):
    """A zero image covering the canvas with no gt: fills an evaluation batch."""
    height, width = spec.canvas
    size, masks = spec.max_instances, spec.mask_size
    return (np.zeros((3, height, width), np.float32), np.array([height, width], np.float32),
            np.ones(2, np.float32), np.array(image_id, np.int32),
            np.zeros((size, 4), np.float32), np.zeros(size, np.int32), np.zeros(size, np.bool_),
            np.zeros(size, np.bool_), np.zeros((size, masks, masks), np.uint8))


def preprocess_image(image_bytes, spec, name=""):
    """Encoded image -> ``(image (3, H, W) float32, size_hw (2,), scale_hw (2,), original
    (h, w, 3) uint8 BGR)`` through the evaluation pipeline's ``build_sample``."""
    original = T.decode_image(image_bytes, name=name)
    record = {"image_id": 0, "file_name": name, "height": original.shape[0],
              "width": original.shape[1], "image_bytes": image_bytes,
              "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int32),
              "segms": []}
    image, size_hw, scale_hw = build_sample(record, spec)[:3]
    return image, size_hw, scale_hw, original


def preprocess_file(path, spec):
    """:func:`preprocess_image` of the file at ``path``, or ``(None, why)`` when the file
    cannot be read or decoded (infer.py names, skips and counts it)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        return preprocess_image(data, spec, path), None
    except OSError as err:
        return None, f"cannot read it: {err.strerror or err}"
    except T.ImageDecodeError:
        return None, f"not a decodable image ({len(data)} bytes)"
