"""What eval.py, export.py and infer.py share: the class count, a network with its trained
weights, raw images through the eval preprocessing, and runners that return the network's
outputs by name (docs/contracts.md; :mod:`mindseg.models.postprocess` turns them into
detections and COCO results).

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
        raise ValueError(f"model.num_classes is {cfg.model.num_classes} but the annotations "
                         f"have {found} categories")
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
                         f"{meta['category_ids']}, the annotations have "
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


def release_freed_heap():
    """Hand the heap memory that glibc keeps after ``free`` back to the system (``malloc_trim``);
    a no-op where the C library has no such call. Returns whether it ran (not whether there was
    memory to hand back)."""
    import ctypes
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols, libc among them
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def compile_network(net, *inputs):
    """Compile ``net`` for ``inputs`` (GRAPH mode; PYNATIVE has nothing to compile) and give
    the memory the compiler freed back before the first run.

    Graph compilation of a detector frees hundreds of MB that glibc keeps for later ``malloc``s,
    while the graph's run draws from MindSpore's own memory pool: without the release the two
    add up (Mask R-CNN R50-FPN at 800x1216 on the CPU: the release takes 8% off the peak RSS;
    ``scripts/benchmark.py --task infer``).
    """
    import mindspore as ms
    if ms.get_context("mode") != ms.GRAPH_MODE:
        return False
    net.compile(*inputs)
    release_freed_heap()
    return True


class NetworkRunner:
    """A MindSpore network at inference, called with numpy: ``runner(image, image_size)``
    returns ``{output name: numpy array}`` for the network's ``output_names``."""

    def __init__(self, net):
        from mindseg.models.outputs import check_output_names
        self.net = net
        self.net.set_train(False)
        self.batch_size = None  # any
        self.output_names = check_output_names(net.output_names, f"{type(net).__name__}.output_names")
        self.mask_threshold = float(net.mask_threshold)
        self._compiled = False

    def __call__(self, image, image_size):
        import mindspore as ms
        from mindseg.models.outputs import named_outputs
        inputs = (ms.Tensor(np.asarray(image, np.float32)), ms.Tensor(np.asarray(image_size, np.float32)))
        if not self._compiled:
            compile_network(self.net, *inputs)
            self._compiled = True
        outputs = self.net(*inputs)
        return named_outputs(self.output_names, (o.asnumpy() for o in outputs))


def build_runner(cfg, checkpoint=None, mindir=None):
    """``(runner, sample spec, class names, category ids)`` for an exported graph or for a
    checkpoint (classes from the checkpoint, else the dataset; float16 layers under ``--mix``)."""
    if mindir:
        from mindseg.engine.exporter import ExportedModel, spec_from_export
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
    its last batch padded with copies of the first image); returns ``{output name: array over
    the images}``."""
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
        outputs = {name: value[:real] for name, value in runner(image, size).items()}
        per_output = outputs if per_output is None else \
            {name: np.concatenate([per_output[name], value]) for name, value in outputs.items()}
    return per_output


# ------------------------------------------------------------------ evaluation

def coco_results_fn(category_ids, mask_threshold=0.5):
    """The ``postprocess(outputs, batch)`` of :func:`mindseg.engine.evaluator.run_evaluation`:
    COCO results of the real images of a batch (dummy rows, image_id -1, are dropped) through
    :func:`mindseg.models.postprocess.batch_coco_results`. The original size is recovered from
    the batch as ``image_size / scale``."""
    from mindseg.models.postprocess import batch_coco_results

    def postprocess(outputs, batch):
        real = batch["image_id"] >= 0
        original_sizes = np.round(batch["image_size"] / batch["scale"]).astype(np.int64)
        return batch_coco_results({name: value[real] for name, value in outputs.items()}, batch["scale"][real],
                                  original_sizes[real], batch["image_id"][real], category_ids,
                                  mask_threshold=mask_threshold, canvas_hw=batch["image"].shape[-2:])
    return postprocess
