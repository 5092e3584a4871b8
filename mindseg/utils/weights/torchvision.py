"""torchvision ``maskrcnn_resnet50_fpn`` state dict (.pth) -> mindseg.

torchvision names: ``backbone.body.{conv1,bn1,layer1-4.*}`` (a torchvision ResNet, stride in the
3x3 conv like mindcv), ``backbone.fpn.inner_blocks.{i}[.0]`` and ``layer_blocks.{i}[.0]`` (the
``.0`` since torchvision 0.13), ``rpn.head.conv[.0.0]``, ``rpn.head.{cls_logits,bbox_pred}``,
``roi_heads.box_head.fc{6,7}``, ``roi_heads.box_predictor.{cls_score,bbox_pred}``,
``roi_heads.mask_head.mask_fcn{1-4}`` (or ``{0-3}.0``), ``roi_heads.mask_predictor.{conv5_mask,
mask_fcn_logits}``.

Class layout: torchvision puts background at index 0 of C = K + 1 classes and keeps deltas and
masks for it; mindseg has K foreground classes and background at index K, 4K deltas, K masks.
``class_indices`` lists, for mindseg class 0..K-1, its torchvision index. By default it is 1..K,
or for the published COCO model (C = 91, COCO category ids with 10 unused) and K = 80 the 80 ids
that COCO uses, in increasing order, as mindseg's COCO reader numbers its classes. Dropping the
10 unused logits changes the softmax by their mass, which the published model keeps near zero.
"""
import re

import numpy as np

from mindseg.utils.weights.coco_classes import COCO_CATEGORY_IDS
from mindseg.utils.weights.core import BN_NAMES, SKIP, WeightConversionError
from mindseg.utils.weights.detectron2 import is_non_weight, mask_fcn_name


_HEAD_RULES = (
    (r"backbone\.fpn\.inner_blocks\.(\d)(?:\.0)?\.(weight|bias)", "fpn", "lateral_convs.{}.{}"),
    (r"backbone\.fpn\.layer_blocks\.(\d)(?:\.0)?\.(weight|bias)", "fpn", "output_convs.{}.{}"),
    (r"rpn\.head\.conv(?:\.0\.0)?\.(weight|bias)", "rpn", "conv.{}"),
    (r"rpn\.head\.cls_logits\.(weight|bias)", "rpn", "objectness.{}"),
    (r"rpn\.head\.bbox_pred\.(weight|bias)", "rpn", "anchor_deltas.{}"),
    (r"roi_heads\.box_head\.fc6\.(weight|bias)", "box_head", "fc1.{}"),
    (r"roi_heads\.box_head\.fc7\.(weight|bias)", "box_head", "fc2.{}"),
    (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", "box_head", "{}.{}"),
    (r"roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)", "mask_head", "deconv.{}"),
    (r"roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)", "mask_head", "predictor.{}"),
)


def map_resnet_key(key):
    """torchvision ResNet key (without ``backbone.body.``) -> mindcv name."""
    match = re.fullmatch(r"(.*?)(bn\d|downsample\.1)\.(weight|bias|running_mean|running_var)", key)
    if match:
        head, norm, leaf = match.groups()
        norm = "down_sample.1" if norm == "downsample.1" else norm
        return f"{head}{norm}.{BN_NAMES[leaf]}"
    if re.fullmatch(r"conv1\.weight|layer[1-4]\.\d+\.(conv[1-3]|downsample\.0)\.weight", key):
        return key.replace("downsample.", "down_sample.")
    return None


def map_key(key):
    """torchvision Mask R-CNN key -> (component, mindseg name), SKIP or None."""
    if is_non_weight(key):
        return SKIP
    if key.startswith("backbone.body."):
        name = map_resnet_key(key[len("backbone.body."):])
        return None if name is None else ("backbone", name)
    match = re.fullmatch(r"roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)", key)
    if match:
        return "mask_head", mask_fcn_name(*match.groups())
    match = re.fullmatch(r"roi_heads\.mask_head\.(\d)\.0\.(weight|bias)", key)
    if match:
        return "mask_head", mask_fcn_name(int(match.group(1)) + 1, match.group(2))
    for pattern, component, template in _HEAD_RULES:
        match = re.fullmatch(pattern, key)
        if match:
            return component, template.format(*match.groups())
    return None


def default_class_indices(num_source, num_classes):
    """torchvision class index of each mindseg class 0..K-1 (see the module docstring)."""
    if num_source == num_classes + 1:
        return list(range(1, num_classes + 1))
    if num_source == 91 and num_classes == len(COCO_CATEGORY_IDS):
        return list(COCO_CATEGORY_IDS)
    raise WeightConversionError(
        f"torchvision checkpoint has {num_source} classes (background included) but the mindseg model "
        f"has {num_classes}; build it with --num_classes {num_source - 1}, or 80 for the 91-class COCO model")


class ClassLayout:
    """``adapt`` hook for convert_state_dict: reorders torchvision's class rows into mindseg's."""

    def __init__(self, class_indices=None):
        self.class_indices = None if class_indices is None else list(class_indices)

    def _indices(self, num_source, num_classes):
        indices = self.class_indices
        if indices is None:
            indices = default_class_indices(num_source, num_classes)
        if len(indices) != num_classes or min(indices) < 1 or max(indices) >= num_source:
            raise WeightConversionError(f"class_indices: need {num_classes} torchvision indices in "
                                        f"1..{num_source - 1}, got {indices}")
        return np.asarray(indices)

    def __call__(self, component, name, array, target_shape):
        if component == "box_head" and name.startswith("cls_score."):
            num_classes = target_shape[0] - 1
            rows = np.concatenate([self._indices(array.shape[0], num_classes), [0]])
            return array[rows]
        if component == "box_head" and name.startswith("bbox_pred."):
            num_classes = target_shape[0] // 4
            per_class = array.reshape((array.shape[0] // 4, 4) + array.shape[1:])
            picked = per_class[self._indices(per_class.shape[0], num_classes)]
            return picked.reshape((num_classes * 4,) + array.shape[1:])
        if component == "mask_head" and name.startswith("predictor."):
            return array[self._indices(array.shape[0], target_shape[0])]
        return array


__all__ = ["map_key", "map_resnet_key", "ClassLayout", "default_class_indices", "COCO_CATEGORY_IDS"]
