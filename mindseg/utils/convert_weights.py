"""Convert a published PyTorch checkpoint into a mindseg .ckpt for a model built from a config.

``convert_checkpoint("torchvision", "maskrcnn_resnet50_fpn_coco.pth", "out.ckpt", cfg)`` reads the
file, maps every key onto the parameters of ``build_model(cfg, num_classes)``, refuses shape
mismatches, and returns the report of unmapped source keys and missing mindseg parameters. The
conventions that the weights assume but the file does not record (ResNet stride placement, pixel
normalisation, RoIAlign alignment, anchor rounding) live in the matching config: see docs/model_zoo.md.
"""
from mindseg.utils.weights import centermask2, detectron2, torchvision
from mindseg.utils.weights.core import (ConversionReport, WeightConversionError, convert_state_dict,
                                        model_shapes, read_checkpoint, save_ckpt)

SOURCES = ("torchvision", "detectron2", "centermask2")
DEFAULT_CONFIGS = {
    "torchvision": "config/maskrcnn/mask_rcnn_resnet50_fpn_torchvision.yml",
    "detectron2": "config/maskrcnn/mask_rcnn_resnet50_fpn_detectron2.yml",
}


def source_rules(source, class_indices=None):
    """(map_key, adapt) of a source; ``class_indices`` only applies to torchvision."""
    if source == "torchvision":
        return torchvision.map_key, torchvision.ClassLayout(class_indices)
    if class_indices is not None:
        raise WeightConversionError(f"class_indices: only torchvision checkpoints need a class map, not {source}")
    if source == "detectron2":
        return detectron2.map_key, None
    if source == "centermask2":
        return centermask2.map_key, None
    raise WeightConversionError(f"--source: unknown source '{source}'; known: {', '.join(SOURCES)}")


def convert_to_shapes(source, state_dict, target_shapes, class_indices=None):
    """{source key: ndarray} -> ({mindseg name: float32 array}, ConversionReport) for a model
    whose parameters have ``target_shapes`` {name: shape}."""
    map_key, adapt = source_rules(source, class_indices)
    return convert_state_dict(state_dict, target_shapes, map_key, adapt)


def convert_checkpoint(source, input_path, output_path, cfg, num_classes=80, class_indices=None,
                       allow_missing=False, append_dict=None):
    """Read ``input_path``, convert it for ``build_model(cfg, num_classes)`` and write ``output_path``
    (with ``append_dict``: the model metadata scripts/convert_weights.py adds).

    Missing mindseg parameters are an error unless ``allow_missing`` (the model would run with
    random weights there). Returns the ConversionReport.
    """
    from mindseg.models import build_model
    state_dict = read_checkpoint(input_path)
    net = build_model(cfg, num_classes=num_classes)
    params, report = convert_to_shapes(source, state_dict, model_shapes(net), class_indices)
    if report.missing and not allow_missing:
        raise WeightConversionError(
            f"{input_path}: {len(report.missing)} mindseg parameters have no source key (first: "
            f"{report.missing[0]}); the checkpoint does not fit model {cfg.model.name} / "
            f"{cfg.model.backbone.name}. Pass --allow_missing to write the partial checkpoint anyway.\n"
            + "\n".join(report.lines()))
    save_ckpt(params, output_path, append_dict)
    return report


__all__ = ["SOURCES", "DEFAULT_CONFIGS", "ConversionReport", "WeightConversionError", "convert_checkpoint",
           "convert_to_shapes", "source_rules", "read_checkpoint"]
