"""Models: ``build_model(cfg)`` picks the meta-architecture from ``cfg.model.name`` in a plain dict.

Importing this package registers the backbones (:mod:`mindseg.models.backbones`), VoVNetV2 into
mindcv's registry included, so ``mindcv.create_model("vovnet39", features_only=True)`` works
after ``import mindseg.models``. The meta-architectures are imported when called.
"""
from mindseg.models import backbones  # noqa: F401  (registers every backbone, VoVNetV2 into mindcv)


def _models():
    from mindseg.models.meta_arch.centermask import build_centermask
    from mindseg.models.meta_arch.centermask_point import build_centermask_point
    from mindseg.models.meta_arch.mask_rcnn import build_mask_rcnn
    return {"mask_rcnn": build_mask_rcnn, "centermask": build_centermask,
            "centermask_point": build_centermask_point}


def build_model(cfg, num_classes=None):
    """Build ``cfg.model.name``; ``num_classes`` (foreground classes) overrides ``cfg.model.num_classes``,
    which is 0 when it is to be read from the annotation file by the caller."""
    models = _models()
    name = cfg.model.name
    if name not in models:
        raise ValueError(f"model.name: unknown model '{name}'; known: {sorted(models)}")
    num_classes = num_classes or cfg.model.num_classes
    if not num_classes or num_classes < 1:
        raise ValueError("model.num_classes is 0: pass num_classes (read from the dataset's annotation "
                         "file) to build_model, or set model.num_classes in the config")
    from mindseg.models.outputs import check_output_names
    net = models[name](cfg, num_classes)
    check_output_names(net.output_names, f"{type(net).__name__}.output_names")
    return net
