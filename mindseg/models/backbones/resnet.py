"""ResNet / ResNeXt feature extractors from mindcv with frozen BN and frozen early stages.

Outputs C2..C5 (strides 4, 8, 16, 32) as a tuple; ``out_channels`` and ``strides`` describe them.
Stage numbering follows detectron2: stage 1 is the stem (conv1 + bn1), stages 2..5 are
mindcv's layer1..layer4. ``freeze_at=k`` fixes the weights of stages 1..k.
"""
import os

import mindcv
import mindspore.nn as nn

from mindseg.models.layers.frozen_bn import FrozenBatchNorm2d, freeze_batchnorm, group_norm_32

NORMS = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d, "gn": group_norm_32}
RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                "resnext101_32x4d", "resnext101_64x4d", "resnext152_64x4d")
_STAGE_CELLS = {1: ("conv1", "bn1"), 2: ("layer1",), 3: ("layer2",), 4: ("layer3",), 5: ("layer4",)}
_STRIDES = {2: 4, 3: 8, 4: 16, 5: 32}


def _pretrained_url(name):
    cfgs = getattr(mindcv.models.resnet, "default_cfgs", {})
    return cfgs.get(name, {}).get("url", "")


def _create_features(name, norm_cell, out_levels, pretrained, checkpoint_path):
    out_indices = [level - 1 for level in out_levels]
    if checkpoint_path:
        if not os.path.isfile(checkpoint_path):
            raise FileNotFoundError(f"model.backbone.checkpoint_path: no such file: {checkpoint_path}")
        return mindcv.create_model(name, features_only=True, out_indices=out_indices,
                                   checkpoint_path=checkpoint_path, norm=norm_cell)
    try:
        return mindcv.create_model(name, features_only=True, out_indices=out_indices,
                                   pretrained=pretrained, norm=norm_cell)
    except OSError as err:  # URLError and socket errors are OSErrors
        url = _pretrained_url(name)
        raise RuntimeError(
            f"model.backbone.pretrained: could not download the ImageNet weights of {name} ({err}). "
            f"Download {url or 'the mindcv checkpoint of ' + name} on a machine with network access, "
            f"copy it here and set model.backbone.checkpoint_path=/path/to/{os.path.basename(url) or name + '.ckpt'} "
            f"with model.backbone.pretrained=false.") from None


class ResNetBackbone(nn.Cell):
    """mindcv ResNet/ResNeXt returning the feature maps of ``out_levels`` (default C2..C5)."""

    def __init__(self, name="resnet50", norm="frozen_bn", freeze_at=2, out_levels=(2, 3, 4, 5),
                 pretrained=False, checkpoint_path=""):
        super().__init__()
        if name not in RESNET_NAMES:
            raise ValueError(f"model.backbone.name: '{name}' is not a ResNet/ResNeXt ({', '.join(RESNET_NAMES)})")
        if norm not in NORMS:
            raise ValueError(f"model.backbone.norm: '{norm}' is not one of {sorted(NORMS)}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"model.backbone.freeze_at: {freeze_at} is not in 0..5")
        self.body = _create_features(name, NORMS[norm], list(out_levels), pretrained, checkpoint_path)
        self.out_channels = list(self.body.out_channels)
        self.strides = [_STRIDES[level] for level in out_levels]
        self._freeze_stages(freeze_at, norm)

    def _freeze_stages(self, freeze_at, norm):
        frozen_cells = [name for stage in range(1, freeze_at + 1) for name in _STAGE_CELLS[stage]]
        if norm == "bn":
            freeze_batchnorm(self.body.net, only=frozen_cells)
        for name in frozen_cells:
            for param in getattr(self.body.net, name).get_parameters():
                param.requires_grad = False

    def construct(self, image):
        return tuple(self.body(image))


__all__ = ["ResNetBackbone", "RESNET_NAMES", "NORMS"]
