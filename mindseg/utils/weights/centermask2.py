"""centermask2 CenterMask / CenterMask-Lite checkpoints (.pth, detectron2 layout) -> mindseg.

centermask2 names:
- VoVNet: ``backbone.bottom_up.stem.stem_{1-3}/{conv,norm}`` (depthwise stems
  ``stem_{2,3}/{dw_conv3x3,pw_conv1x1,pw_norm}``), ``backbone.bottom_up.stage{s}.OSA{s}_{b}.layers.{i}.
  OSA{s}_{b}_{i}/{conv,norm}`` (depthwise ``/dw_conv3x3``, ``/pw_conv1x1``, ``/pw_norm``),
  ``...OSA{s}_{b}.conv_reduction.OSA{s}_{b}_reduction_0/{conv,norm}``, ``...concat.OSA{s}_{b}_concat/
  {conv,norm}``, ``...ese.fc``.
- ResNet: detectron2's ``bottom_up.stem`` / ``res{2-5}`` names.
- MobileNetV2: ``backbone.bottom_up.features.0.{0,1}`` (stem conv + BN) and
  ``features.{i}.conv.{j}`` (inverted residual i = 1..17).
- FPN on C3..C5: ``backbone.fpn_lateral{3-5}``, ``fpn_output{3-5}``, ``backbone.top_block.p6|p7``.
- FCOS: ``proposal_generator.fcos_head.{cls,bbox}_tower.{j}`` (conv at j = 3n, GroupNorm at 3n + 1),
  ``.cls_logits``, ``.bbox_pred``, ``.ctrness``, ``.scales.{l}.scale``.
- SAG-Mask: ``roi_heads.mask_head.mask_fcn{1-4}``, ``.spatialAtt.conv``, ``.deconv``, ``.predictor``.
- MaskIoU: ``roi_heads.maskiou_head.maskiou_fcn{1-4}``, ``.maskiou_fc{1,2}``, ``.maskiou``.

FCOS class logits are sigmoid per class (no background), so class layouts match mindseg as they are.
"""
import re

from mindseg.utils.weights.core import BN_NAMES, SKIP
from mindseg.utils.weights.detectron2 import is_non_weight, map_fpn_key, map_resnet_key, mask_fcn_name

_VOV_LEAVES = {"conv": "conv", "dw_conv3x3": "dw_conv", "pw_conv1x1": "pw_conv"}


def _vovnet_leaf(kind, rest):
    """``conv|dw_conv3x3|pw_conv1x1`` + ``weight`` -> conv name; ``norm|pw_norm`` + BN leaf -> BN name."""
    if kind in _VOV_LEAVES and rest == "weight":
        return f"{_VOV_LEAVES[kind]}.weight"
    if kind in ("norm", "pw_norm") and rest in BN_NAMES:
        return f"norm.{BN_NAMES[rest]}"
    return None


def map_vovnet_key(key):
    """centermask2 VoVNet key (without ``backbone.bottom_up.``) -> mindseg VoVNet name."""
    match = re.fullmatch(r"stem\.stem_([1-3])/(\w+)\.(\w+)", key)
    if match:
        leaf = _vovnet_leaf(match.group(2), match.group(3))
        return None if leaf is None else f"stem.stem_{match.group(1)}.{leaf}"
    match = re.fullmatch(r"stage([2-5])\.OSA\1_(\d+)\.(.+)", key)
    if not match:
        return None
    stage, block, rest = match.groups()
    block_name = f"stage{stage}.blocks.{int(block) - 1}"
    osa = f"OSA{stage}_{block}"
    match = re.fullmatch(r"ese\.fc\.(weight|bias)", rest)
    if match:
        return f"{block_name}.ese.fc.{match.group(1)}"
    patterns = ((rf"layers\.(\d+)\.{osa}_\1/(\w+)\.(\w+)", "layers.{}"),
                (rf"conv_reduction\.{osa}_reduction_0/(\w+)\.(\w+)", "reduction"),
                (rf"concat\.{osa}_concat/(\w+)\.(\w+)", "concat"))
    for pattern, cell in patterns:
        match = re.fullmatch(pattern, rest)
        if match:
            groups = match.groups()
            leaf = _vovnet_leaf(groups[-2], groups[-1])
            if leaf is None:
                return None
            return f"{block_name}.{cell.format(*groups[:-2])}.{leaf}"
    return None


def _conv_or_bn(index, leaf, conv_indices):
    """A layer of a torch Sequential: a conv weight where ``index`` is a conv, else a BN parameter."""
    if index in conv_indices:
        return "weight" if leaf == "weight" else None
    return BN_NAMES.get(leaf)


def map_mobilenet_key(key):
    """centermask2 MobileNetV2 key (without ``backbone.bottom_up.``) -> mindcv mobilenet_v2 name.

    mindcv flattens the stem's conv / BN / ReLU6 into ``features_0..2`` and numbers the 17 inverted
    residuals ``features_3..19``; their inner Sequential (``layers``) has torch's layout.
    """
    match = re.fullmatch(r"features\.0\.([01])\.(\w+)", key)
    if match:
        leaf = _conv_or_bn(int(match.group(1)), match.group(2), (0,))
        return None if leaf is None else f"features_{match.group(1)}.{leaf}"
    match = re.fullmatch(r"features\.(\d+)\.conv\.(\d)\.(\w+)", key)
    if match:
        block, index, leaf = int(match.group(1)), int(match.group(2)), match.group(3)
        leaf = _conv_or_bn(index, leaf, (0, 3, 6))
        return None if leaf is None else f"features_{block + 2}.layers.{index}.{leaf}"
    return None


def _map_backbone_key(key):
    for rule in (map_vovnet_key, map_resnet_key, map_mobilenet_key):
        name = rule(key)
        if name is not None:
            return name
    return None


def _map_fcos_key(rest):
    match = re.fullmatch(r"(cls|bbox)_tower\.(\d+)\.(weight|bias)", rest)
    if match:
        tower, index, leaf = match.groups()
        index = int(index)
        if index % 3 == 0:
            return f"{tower}_tower.{index}.{leaf}"
        if index % 3 == 1:
            return f"{tower}_tower.{index}.{BN_NAMES[leaf]}"
        return None
    match = re.fullmatch(r"(cls_logits|bbox_pred|ctrness)\.(weight|bias)", rest)
    if match:
        return rest
    match = re.fullmatch(r"scales\.(\d)\.scale", rest)
    return rest if match else None


def _map_maskiou_key(rest):
    match = re.fullmatch(r"maskiou_fcn(\d)\.(weight|bias)", rest)
    if match:
        return mask_fcn_name(*match.groups())
    match = re.fullmatch(r"maskiou_fc([12])\.(weight|bias)", rest)
    if match:
        return f"fc{match.group(1)}.{match.group(2)}"
    match = re.fullmatch(r"maskiou\.(weight|bias)", rest)
    return f"predictor.{match.group(1)}" if match else None


def _map_mask_key(rest):
    match = re.fullmatch(r"mask_fcn(\d)\.(weight|bias)", rest)
    if match:
        return mask_fcn_name(*match.groups())
    if rest == "spatialAtt.conv.weight":
        return "spatial_attention.conv.weight"
    match = re.fullmatch(r"(deconv|predictor)\.(weight|bias)", rest)
    return rest if match else None


_PARTS = (
    ("backbone.bottom_up.", "backbone", _map_backbone_key),
    ("proposal_generator.fcos_head.", "fcos_head", _map_fcos_key),
    ("roi_heads.mask_head.", "mask_head", _map_mask_key),
    ("roi_heads.maskiou_head.", "maskiou_head", _map_maskiou_key),
)


def map_key(key):
    """centermask2 key -> (component, mindseg name), SKIP or None."""
    if is_non_weight(key):
        return SKIP
    for prefix, component, rule in _PARTS:
        if key.startswith(prefix):
            name = rule(key[len(prefix):])
            return None if name is None else (component, name)
    if key.startswith("backbone."):
        return map_fpn_key(key, first_level=3)
    return None


__all__ = ["map_key", "map_vovnet_key", "map_mobilenet_key"]
