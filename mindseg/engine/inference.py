"""What eval.py, export.py and infer.py share: the class count, a network with its trained
weights, raw images through the eval preprocessing, and per-image COCO-style results.

Raw images go through :func:`mindseg.dataset.sample.build_sample` with the eval
:class:`~mindseg.dataset.sample.SampleSpec`, the very function the evaluation pipeline uses, so
infer.py sees exactly what eval.py sees. What a user got wrong (no checkpoint, one of another
model) raises ``ValueError`` naming it; :func:`mindseg.cli.script_errors` prints it in one line.
"""
import numpy as np


def resolve_num_classes(cfg, info):
    """Foreground classes from the dataset; a config that names another count is an error."""
    found = int(info["num_classes"])
    if cfg.model.num_classes and int(cfg.model.num_classes) != found:
        raise ValueError(f"model.num_classes is {cfg.model.num_classes} but the annotations of "
                         f"{cfg.data.dataset_dir} have {found} categories")
    return found


def build_network(cfg, num_classes):
    """``build_model`` with a clear error when the configured model cannot be built yet."""
    from mindseg.models import build_model
    try:
        return build_model(cfg, num_classes=num_classes)
    except ImportError as err:
        raise ValueError(f"model '{cfg.model.name}' cannot be built: {err}") from None


def _describe(model, backbone, num_classes):
    return f"a {model} ({backbone}) with {num_classes} classes"


def checkpoint_classes(cfg, ckpt_path, info=None):
    """``(checkpoint file, class info, num_classes)`` for the network ``ckpt_path`` is loaded into.

    The class count, names and ids come from the checkpoint when it carries them (train.py
    saves them: export and infer then need no dataset), else from ``info`` or the annotations of
    ``cfg.data.dataset_dir``. A checkpoint of another model, backbone or class count than the
    config and ``info`` describe is refused in one line naming both.
    """
    from mindseg.dataset.pipeline import dataset_info
    from mindseg.engine.checkpoint import read_checkpoint_meta, resolve_checkpoint
    if not ckpt_path:
        raise ValueError("no checkpoint given: pass --ckpt_path PATH (a .ckpt file or the "
                         "checkpoints folder of a training run)")
    path = resolve_checkpoint(ckpt_path)
    meta = read_checkpoint_meta(path)
    if meta is None:  # converted or older checkpoints: the classes come from the dataset
        info = info or dataset_info(cfg, "val")
        return path, info, resolve_num_classes(cfg, info)
    theirs = _describe(meta["model"], meta["backbone"], meta["num_classes"])
    wanted = int(cfg.model.num_classes) or int((info or meta)["num_classes"])
    ours = _describe(cfg.model.name, cfg.model.backbone.name, wanted)
    if (meta["model"], meta["backbone"], int(meta["num_classes"])) != \
            (cfg.model.name, cfg.model.backbone.name, wanted):
        raise ValueError(f"{path}: the checkpoint holds {theirs}; the config builds {ours}")
    if info is not None and [int(c) for c in info["category_ids"]] != meta["category_ids"]:
        raise ValueError(f"{path}: the checkpoint was trained on category ids "
                         f"{meta['category_ids']}, the annotations of {cfg.data.dataset_dir} have "
                         f"{list(info['category_ids'])}")
    return path, info or meta, wanted


def load_weights(net, ckpt_path):
    """Load a training checkpoint (weights + optimizer state) or a weights-only one into ``net``;
    a folder means its ``latest`` checkpoint. Returns the file used."""
    from mindseg.engine.checkpoint import load_train_state, resolve_checkpoint
    if not ckpt_path:
        raise ValueError("no checkpoint given: pass --ckpt_path PATH (a .ckpt file or the "
                         "checkpoints folder of a training run)")
    path = resolve_checkpoint(ckpt_path)
    load_train_state(path, net)
    net.set_train(False)
    return path


class NetworkRunner:
    """A MindSpore network at inference, called with numpy: ``runner(image, image_size)``
    returns the contract's five outputs as numpy arrays."""

    def __init__(self, net):
        self.net = net
        self.net.set_train(False)
        self.batch_size = None  # any

    def __call__(self, image, image_size):
        import mindspore as ms
        outputs = self.net(ms.Tensor(np.asarray(image, np.float32)),
                           ms.Tensor(np.asarray(image_size, np.float32)))
        return tuple(o.asnumpy() for o in outputs)


def build_runner(cfg, checkpoint=None, mindir=None):
    """``(runner, sample spec, class names, category ids)`` for an exported graph or for a
    checkpoint (classes from the checkpoint, else the dataset; float16 layers under ``--mix``)."""
    if mindir:
        from mindseg.engine.exporter import ExportedModel
        model = ExportedModel(mindir)
        return (model, spec_from_export(model.spec["preprocess"]), model.spec["class_names"],
                model.spec["category_ids"])
    from mindseg.dataset.sample import sample_spec
    from mindseg.engine import precision
    ckpt, info, num_classes = checkpoint_classes(cfg, checkpoint)
    net = build_network(cfg, num_classes)
    load_weights(net, ckpt)
    precision.for_inference(net, cfg)
    return NetworkRunner(net), sample_spec(cfg, training=False), info["class_names"], info["category_ids"]


# ------------------------------------------------------------------ raw images

def spec_from_export(preprocess, max_instances=1, mask_size=1):
    """The eval :class:`SampleSpec` that an export JSON's ``preprocess`` section describes."""
    from mindseg.dataset.sample import SampleSpec
    return SampleSpec(min_sizes=(int(preprocess["min_size"]),), max_size=int(preprocess["max_size"]),
                      canvas=tuple(int(v) for v in preprocess["canvas"]), flip_prob=0.0,
                      mean=tuple(float(v) for v in preprocess["mean"]),
                      std=tuple(float(v) for v in preprocess["std"]),
                      channel_order=preprocess["channel_order"], max_instances=max_instances,
                      mask_size=mask_size)


def preprocess_image(image_bytes, spec, name=""):
    """Encoded image -> ``(image (3, H, W) float32, size_hw (2,), scale_hw (2,), original
    (h, w, 3) uint8 BGR)`` through the evaluation pipeline's ``build_sample``."""
    from mindseg.dataset.sample import build_sample
    from mindseg.dataset.transforms import decode_image
    original = decode_image(image_bytes, name=name)
    record = {"image_id": 0, "file_name": name, "height": original.shape[0],
              "width": original.shape[1], "image_bytes": image_bytes,
              "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int32),
              "segms": []}
    image, size_hw, scale_hw = build_sample(record, spec)[:3]
    return image, size_hw, scale_hw, original


def preprocess_file(path, spec):
    """:func:`preprocess_image` of the file at ``path``, or ``(None, why)`` when the file
    cannot be read or decoded (infer.py names, skips and counts it)."""
    from mindseg.dataset.transforms import ImageDecodeError
    try:
        with open(path, "rb") as f:
            data = f.read()
        return preprocess_image(data, spec, path), None
    except OSError as err:
        return None, f"cannot read it: {err.strerror or err}"
    except ImageDecodeError:
        return None, f"not a decodable image ({len(data)} bytes)"


def run_batched(runner, images, sizes, batch_size):
    """Run ``runner`` over stacked images in batches of ``batch_size`` (a fixed-batch graph gets
    its last batch padded with copies of the first image); returns the outputs per image."""
    count = len(images)
    step = batch_size or count
    per_output = None
    for start in range(0, count, step):
        image = np.stack(images[start:start + step])
        size = np.stack(sizes[start:start + step])
        real = len(image)
        if batch_size and real < batch_size:
            pad = batch_size - real
            image = np.concatenate([image, np.repeat(image[:1], pad, 0)])
            size = np.concatenate([size, np.repeat(size[:1], pad, 0)])
        outputs = [o[:real] for o in runner(image, size)]
        per_output = outputs if per_output is None else \
            [np.concatenate([a, b]) for a, b in zip(per_output, outputs)]
    return per_output


# ------------------------------------------------------------------ detections of one image

def image_detections(outputs, index, scale_hw, height, width, score_thresh=0.0):
    """Image ``index`` of a batch of network outputs -> its valid detections above
    ``score_thresh`` in original pixels: ``{"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,),
    "masks" (N, h, w) uint8}``, best score first."""
    from mindseg.models.postprocess import paste_masks, to_original
    boxes, scores, classes, valid, mask_probs = (np.asarray(o[index]) for o in outputs[:5])
    keep = np.flatnonzero(valid.astype(bool) & (scores >= score_thresh))
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    boxes = to_original(boxes[keep], scale_hw, height, width)
    detections = {"boxes": boxes, "scores": scores[keep].astype(np.float32),
                  "labels": classes[keep].astype(np.int64),
                  "masks": paste_masks(mask_probs[keep], boxes, height, width)}
    if len(outputs) > 5:  # CenterMask's mask score (box score x predicted mask IoU)
        detections["mask_scores"] = np.asarray(outputs[5][index])[keep].astype(np.float32)
    return detections


def coco_results(detections, category_ids, image_name):
    """One image's detections as COCO result dicts with its file name: ``image``,
    ``category_id`` (original id), ``bbox`` xywh, ``score``, ``segmentation`` (RLE, str counts),
    and ``segm_score`` where the model scores masks apart from boxes (CenterMask)."""
    from mindseg.models.postprocess import mask_to_rle
    results = []
    for i, (box, score, label, mask) in enumerate(zip(detections["boxes"], detections["scores"],
                                                      detections["labels"], detections["masks"])):
        result = {
            "image": image_name,
            "category_id": int(category_ids[int(label)]),
            "bbox": [round(float(v), 2) for v in
                     (box[0], box[1], box[2] - box[0], box[3] - box[1])],
            "score": round(float(score), 5),
            "segmentation": mask_to_rle(mask),
        }
        if "mask_scores" in detections:
            result["segm_score"] = round(float(detections["mask_scores"][i]), 5)
        results.append(result)
    return results


def coco_results_fn(category_ids):
    """The ``postprocess(outputs, batch)`` of :func:`mindseg.engine.evaluator.run_evaluation`:
    COCO results of the real images of a batch (dummy rows, image_id -1, are dropped). The
    original size is recovered from the batch as ``image_size / scale``."""
    from mindseg.models.postprocess import detections_to_coco

    def postprocess(outputs, batch):
        real = batch["image_id"] >= 0
        original_sizes = np.round(batch["image_size"] / batch["scale"]).astype(np.int64)
        return detections_to_coco(tuple(o[real] for o in outputs), batch["scale"][real],
                                   original_sizes[real], batch["image_id"][real], category_ids)
    return postprocess
