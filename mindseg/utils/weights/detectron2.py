"""detectron2 Mask R-CNN (model zoo ``model_final_*.pkl``: ``{"model": {name: ndarray}}``) -> mindseg.

detectron2 names (R50/R101-FPN):
``backbone.bottom_up.stem.conv1.{weight,norm.*}``, ``backbone.bottom_up.res{2-5}.{i}.conv{1-3}``,
``...shortcut``, ``backbone.fpn_lateral{2-5}``, ``backbone.fpn_output{2-5}``,
``proposal_generator.rpn_head.{conv,objectness_logits,anchor_deltas}``,
``roi_heads.box_head.fc{1,2}``, ``roi_heads.box_predictor.{cls_score,bbox_pred}``,
``roi_heads.mask_head.{mask_fcn1-4,deconv,predictor}``.

Class layouts already match mindseg (background last in ``cls_score``, 4K class deltas, K masks),
so every array is copied as it is. The MSRA ResNets stride in the first 1x1 conv
(``model.backbone.stride_in_1x1: true``); the shapes do not tell, the config must.
"""
import re

from mindseg.utils.weights.core import BN_NAMES, SKIP

# buffers detectron2 sometimes saves that are no weights
_NON_WEIGHTS = ("pixel_mean", "pixel_std", "num_batches_tracked", "cell_anchors")


def is_non_weight(key):
    return any(key == part or key.endswith("." + part) or ("." + part + ".") in key for part in _NON_WEIGHTS)


def _norm_or_conv(rest):
    """``weight`` -> conv weight; ``norm.X`` -> BN parameter; None otherwise."""
    if rest == "weight":
        return "weight"
    match = re.fullmatch(r"norm\.(weight|bias|running_mean|running_var)", rest)
    return None if match is None else BN_NAMES[match.group(1)]


def map_resnet_key(key):
    """detectron2 ``bottom_up`` ResNet key (without the ``backbone.bottom_up.`` prefix) -> mindcv name."""
    match = re.fullmatch(r"stem\.conv1\.(.+)", key)
    if match:
        leaf = _norm_or_conv(match.group(1))
        if leaf is None:
            return None
        return "conv1.weight" if leaf == "weight" else f"bn1.{leaf}"
    match = re.fullmatch(r"res([2-5])\.(\d+)\.(conv[1-3]|shortcut)\.(.+)", key)
    if not match:
        return None
    stage, block, conv, rest = match.groups()
    leaf = _norm_or_conv(rest)
    if leaf is None:
        return None
    layer = f"layer{int(stage) - 1}.{block}"
    if conv == "shortcut":
        return f"{layer}.down_sample.0.weight" if leaf == "weight" else f"{layer}.down_sample.1.{leaf}"
    index = conv[-1]
    return f"{layer}.conv{index}.weight" if leaf == "weight" else f"{layer}.bn{index}.{leaf}"


def map_fpn_key(key, first_level):
    """``backbone.fpn_lateral{l}`` / ``fpn_output{l}`` / ``top_block.p6|p7`` -> mindseg FPN name;
    ``first_level`` is the level of the finest input (2 for Mask R-CNN, 3 for FCOS)."""
    match = re.fullmatch(r"backbone\.fpn_(lateral|output)(\d)\.(weight|bias)", key)
    if match:
        kind, level, leaf = match.groups()
        cells = "lateral_convs" if kind == "lateral" else "output_convs"
        return "fpn", f"{cells}.{int(level) - first_level}.{leaf}"
    match = re.fullmatch(r"backbone\.top_block\.(p6|p7)\.(weight|bias)", key)
    if match:
        return "fpn", f"{match.group(1)}.{match.group(2)}"
    return None


_HEAD_RULES = (
    (r"proposal_generator\.rpn_head\.conv\.(weight|bias)", "rpn", "conv.{}"),
    (r"proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)", "rpn", "objectness.{}"),
    (r"proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)", "rpn", "anchor_deltas.{}"),
    (r"roi_heads\.box_head\.fc([12])\.(weight|bias)", "box_head", "fc{}.{}"),
    (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", "box_head", "{}.{}"),
    (r"roi_heads\.mask_head\.(deconv|predictor)\.(weight|bias)", "mask_head", "{}.{}"),
)


def mask_fcn_name(index, leaf):
    """``mask_fcn{index}`` (1-based) -> the conv inside mindseg's SequentialCell of conv + ReLU pairs."""
    return f"convs.{2 * (int(index) - 1)}.{leaf}"


def map_key(key, first_level=2):
    """detectron2 Mask R-CNN key -> (component, mindseg name), SKIP or None."""
    if is_non_weight(key):
        return SKIP
    if key.startswith("backbone.bottom_up."):
        name = map_resnet_key(key[len("backbone.bottom_up."):])
        return None if name is None else ("backbone", name)
    if key.startswith("backbone."):
        return map_fpn_key(key, first_level)
    match = re.fullmatch(r"roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)", key)
    if match:
        return "mask_head", mask_fcn_name(*match.groups())
    for pattern, component, template in _HEAD_RULES:
        match = re.fullmatch(pattern, key)
        if match:
            return component, template.format(*match.groups())
    return None


__all__ = ["map_key", "map_resnet_key", "map_fpn_key", "mask_fcn_name", "is_non_weight"]
