"""One way to load a trained model: :func:`load_trained_model` of a config and a checkpoint
(a .ckpt or a run's checkpoints folder) or of a graph export.py wrote, used by eval.py,
export.py, infer.py, the Predictor and the benchmark. A checkpoint carries its model and classes
(train.py and convert_weights.py write them); one without them takes its classes from the
dataset. What a user got wrong (no checkpoint, one of another model) raises ``ValueError`` naming
it; :func:`mindseg.cli.script_errors` prints it in one line."""
import dataclasses

from mindseg.engine.checkpoint import load_train_state, read_checkpoint_meta, resolve_checkpoint


@dataclasses.dataclass
class TrainedModel:
    """A model ready for inference: ``runner(image, image_size) -> {output: array}``, the
    ``spec`` its images are prepared with, its classes, and for a checkpoint the network and the
    file it was loaded from."""
    runner: object
    spec: object
    class_names: list
    category_ids: list
    net: object = None
    checkpoint: str = None
    info: dict = None


def load_trained_model(config=None, checkpoint=None, mindir=None, *, class_names=None, info=None):
    """The model of ``checkpoint`` built as ``config`` (a loaded Config) says, its layers in
    float16 under ``--mix``; or the graph ``mindir`` with its JSON (``config`` unused).
    ``class_names`` names the classes of a checkpoint that carries none; ``info`` (the dataset's
    class info) is checked against the checkpoint's."""
    from mindseg.engine.runners import ExportedModel, NetworkRunner
    if (checkpoint is None) == (mindir is None):
        raise ValueError("give exactly one of a checkpoint (--ckpt_path) and an exported graph (--mindir)")
    if mindir is not None:
        from mindseg.engine.exporter import spec_from_export
        model = ExportedModel(mindir)
        return TrainedModel(model, spec_from_export(model.spec["preprocess"]), list(model.spec["class_names"]),
                            list(model.spec["category_ids"]))
    from mindseg.dataset.sample import sample_spec
    from mindseg.engine import precision
    from mindseg.models import build_model
    if class_names is not None:
        path, info = resolve_checkpoint(checkpoint), {"class_names": list(class_names), "category_ids": None}
        num_classes = len(class_names)
    else:
        path, info, num_classes = checkpoint_classes(config, checkpoint, info)
    net = build_model(config, num_classes=num_classes)
    load_weights(net, path)
    precision.for_inference(net, config)
    return TrainedModel(NetworkRunner(net), sample_spec(config, training=False), list(info["class_names"]),
                        info["category_ids"], net, path, info)


def resolve_num_classes(cfg, info):
    """Foreground classes from the dataset; a config that names another count is an error."""
    found = int(info["num_classes"])
    if cfg.model.num_classes and int(cfg.model.num_classes) != found:
        raise ValueError(f"model.num_classes is {cfg.model.num_classes} but the annotations "
                         f"have {found} categories")
    return found


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
    if not ckpt_path:
        raise ValueError("no checkpoint given: pass --ckpt_path PATH (a .ckpt file or the "
                         "checkpoints folder of a training run)")
    path = resolve_checkpoint(ckpt_path)
    load_train_state(path, net)
    net.set_train(False)
    return path
