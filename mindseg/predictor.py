"""``Predictor``: a trained model (checkpoint or exported MINDIR) called on one image at a time,
returning its detections in the image's own pixels, like detectron2's ``DefaultPredictor``.

It is what infer.py runs: the model of :func:`mindseg.engine.loading.load_trained_model`, the
eval preprocessing of :func:`mindseg.dataset.sample.preprocess_image` (the evaluation pipeline's
``build_sample``), the network or the graph, and
:func:`~mindseg.models.postprocess.image_detections`; the drawing is
:func:`mindseg.utils.visualize.draw_instances`.
"""
import os

import numpy as np

FORMATS = ("BGR", "RGB")
MASK_FORMATS = ("bitmask", "rle")


class Predictor:
    """Load a model once and run it on images.

    ``config``: a config file, a shipped config's name (``mindseg.model_zoo.list_configs()``) or a
    loaded Config; it may be None with ``mindir``, whose JSON holds the preprocessing and class
    names. Give exactly one of ``checkpoint`` (a .ckpt or a training run's checkpoints folder) and
    ``mindir`` (a graph written by export.py). ``class_names`` names the classes of a checkpoint;
    without it they are read from the annotations under the config's ``data.dataset_dir``.
    ``format`` is the channel order of the numpy images given and returned; ``mask_format``
    "bitmask" returns (N, h, w) bool masks, "rle" COCO compressed RLE dicts. ``overrides`` are
    ``key=value`` config overrides. Detections scored below ``score_thresh`` are dropped; it
    defaults to the config's ``eval.draw_thresh``, or with a graph and no config to the one the
    graph was exported with (0.5 for a graph whose JSON does not say).

    Boxes and masks refer to the image's stored pixel frame, as COCO annotations and the
    evaluation pipeline do: a path is decoded with its EXIF orientation ignored. ``cv2.imread``
    applies that orientation unless given ``cv2.IMREAD_IGNORE_ORIENTATION``, so read an array
    with it (below) or pass the path.

    >>> import cv2, mindseg
    >>> names = ["rectangle", "ellipse", "triangle", "star", "cross"]
    >>> predictor = mindseg.Predictor("shapes/mask_rcnn_shapes", checkpoint="run/checkpoints",
    ...                               class_names=names)
    >>> image = cv2.imread("image.jpg", cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # BGR
    >>> detections = predictor(image)                    # or predictor("image.jpg")
    >>> detections["boxes"], detections["class_names"], detections["masks"].shape
    >>> cv2.imwrite("drawn.png", predictor.draw(image, detections))
    """

    def __init__(self, config=None, checkpoint=None, mindir=None, *, class_names=None,
                 format="BGR", score_thresh=None, mask_format="bitmask", overrides=()):
        from mindseg.engine.checkpoint import resolve_checkpoint
        from mindseg.engine.loading import load_trained_model
        from mindseg.model_zoo import _as_config
        from mindseg.runtime import set_device_and_mode
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if mask_format not in MASK_FORMATS:
            raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
        if (checkpoint is None) == (mindir is None):
            raise ValueError("give exactly one of checkpoint (a .ckpt) and mindir (an exported "
                             "graph)")
        if config is None and mindir is None:
            raise ValueError("a checkpoint needs its config (a file, a shipped config's name or a "
                             "Config)")
        self.format, self.mask_format = format, mask_format
        self.cfg = None if config is None else _as_config(config, overrides)
        if self.cfg is not None:
            set_device_and_mode(self.cfg.device_target, self.cfg.mode)
        names = None if class_names is None or mindir is not None else self._given_class_names(class_names)
        checkpoint = None if checkpoint is None else resolve_checkpoint(checkpoint)
        try:
            model = load_trained_model(self.cfg, checkpoint, mindir, class_names=names)
        except FileNotFoundError as err:
            if mindir is not None:  # the graph or its JSON: the error names the file
                raise
            raise ValueError(f"{checkpoint} carries no class names: pass class_names=[...] "
                             f"or have the annotations under data.dataset_dir ({err})") from None
        self.runner, self.spec, self.checkpoint = model.runner, model.spec, model.checkpoint
        self.class_names, self.category_ids = model.class_names, model.category_ids
        self.batch_size = getattr(self.runner, "batch_size", None)
        self.score_thresh = float(self._default_score_thresh() if score_thresh is None else score_thresh)

    def _default_score_thresh(self):
        if self.cfg is not None:
            return self.cfg.eval.draw_thresh
        from mindseg.utils.visualize import SCORE_THRESH
        return self.runner.spec["postprocess"].get("draw_thresh", SCORE_THRESH)

    def _given_class_names(self, class_names):
        names = [str(n) for n in class_names]
        if self.cfg.model.num_classes and int(self.cfg.model.num_classes) != len(names):
            raise ValueError(f"model.num_classes is {self.cfg.model.num_classes} but "
                             f"{len(names)} class_names were given")
        return names

    def _read(self, image):
        """``(encoded bytes, name)`` of a path or of a numpy image in ``self.format`` order."""
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image not found: {path}")
            with open(path, "rb") as f:
                return f.read(), path
        array = np.asarray(image)
        _check_image(array, self.format)
        import cv2
        bgr = array[:, :, ::-1] if self.format == "RGB" else array
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))  # lossless
        if not ok:
            raise ValueError(f"cannot encode the {array.shape} image")
        return encoded.tobytes(), "<array>"

    def __call__(self, image):
        """Detections of one image (a numpy array in ``format`` order, or a path), best first:
        ``boxes`` (N, 4) float x0 y0 x1 y1 in the image's pixels, ``scores`` (N,), ``class_ids``
        (N,) contiguous indices, ``class_names`` (N names), ``masks`` (N, h, w) bool or N RLE
        dicts, ``image_size`` (h, w), and for CenterMask ``mask_scores`` (N,), the masks' score."""
        from mindseg.dataset.sample import preprocess_image
        from mindseg.engine.runners import run_batched
        from mindseg.models.mask_ops import mask_to_rle
        from mindseg.models.postprocess import image_detections
        encoded, name = self._read(image)
        tensor, size_hw, scale_hw, original = preprocess_image(encoded, self.spec, name)
        outputs = run_batched(self.runner, [tensor], [size_hw], self.batch_size)
        height, width = original.shape[:2]
        found = image_detections(outputs, 0, scale_hw, height, width, score_thresh=self.score_thresh,
                                 mask_threshold=self.runner.mask_threshold)
        masks = found["masks"].astype(bool)
        detections = {
            "boxes": found["boxes"].astype(np.float32), "scores": found["scores"],
            "class_ids": found["labels"], "class_names": [self._name(k) for k in found["labels"]],
            "masks": [mask_to_rle(m) for m in masks] if self.mask_format == "rle" else masks,
            "image_size": (height, width),
        }
        if "mask_scores" in found:
            detections["mask_scores"] = found["mask_scores"]
        return detections

    def _name(self, class_id):
        return self.class_names[class_id] if 0 <= class_id < len(self.class_names) \
            else f"class {class_id}"

    def draw(self, image, detections):
        """The image (numpy in ``format`` order, or a path) with the detections' masks, boxes and
        ``name score`` labels drawn on it, in ``format`` order."""
        from mindseg.dataset.transforms import decode_image
        from mindseg.utils.visualize import draw_instances
        encoded, name = self._read(image)
        bgr = decode_image(encoded, name=name)
        masks = detections["masks"]
        if len(masks) and isinstance(masks[0], dict):  # mask_format="rle"
            masks = _decode_rles(masks)
        drawn = draw_instances(bgr, detections["boxes"], detections["class_ids"],
                               detections["scores"], masks, self.class_names)
        return np.ascontiguousarray(drawn[:, :, ::-1]) if self.format == "RGB" else drawn


def _check_image(array, channel_order):
    """A ValueError naming what keeps ``array`` from being an (h, w, 3) uint8 image with pixels."""
    if array.ndim != 3:
        problem = f"{array.ndim} dimensions instead of 3"
    elif array.shape[2] != 3:
        problem = f"{array.shape[2]} channels instead of 3"
    elif array.dtype != np.uint8:
        problem = f"{array.dtype} pixels instead of uint8 (0..255)"
    elif array.size == 0:
        problem = "no pixels"
    else:
        return
    raise ValueError(f"Predictor needs an (h, w, 3) uint8 {channel_order} image or a path, "
                     f"got {array.shape} {array.dtype}: {problem}")


def _decode_rles(rles):
    from pycocotools import mask as mask_util
    return np.stack([mask_util.decode({"size": r["size"], "counts": r["counts"].encode("ascii")})
                     for r in rles]).astype(bool)
