"""ResNet / ResNeXt feature extractors from mindcv with frozen BN and frozen early stages.

Outputs C2..C5 (strides 4, 8, 16, 32) as a tuple; ``out_channels`` and ``strides`` describe them.
Stage numbering follows detectron2: stage 1 is the stem (conv1 + bn1), stages 2..5 are
mindcv's layer1..layer4. ``freeze_at=k`` fixes the weights of stages 1..k.

Two switches match PyTorch-trained weights (mindseg/utils/weights): ``stride_in_1x1`` moves each
stage's stride-2 from the 3x3 conv (mindcv, torchvision) to the first 1x1 conv (detectron2's and
centermask2's MSRA ResNets, ``STRIDE_IN_1X1``); ``stem_pool="torch"`` pads the stem max-pool by 1 on
every side as PyTorch does, where mindcv's ``"same"`` pads only the bottom and right of even maps.
"""
import os

import mindcv
import mindspore.nn as nn

from mindseg.models.backbones.registry import level_strides, register_backbone
from mindseg.models.layers.frozen_bn import FrozenBatchNorm2d, freeze_batchnorm, group_norm_32

NORMS = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d, "gn": group_norm_32}
RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                "resnext101_32x4d", "resnext101_64x4d", "resnext152_64x4d")
_STAGE_CELLS = {1: ("conv1", "bn1"), 2: ("layer1",), 3: ("layer2",), 4: ("layer3",), 5: ("layer4",)}
STEM_POOLS = ("same", "torch")


def _pretrained_url(name):
    cfgs = getattr(mindcv.models.resnet, "default_cfgs", {})
    return cfgs.get(name, {}).get("url", "")


def _create_features(name, norm_cell, out_levels, imagenet_weights):
    out_indices = [level - 1 for level in out_levels]
    if isinstance(imagenet_weights, str) and imagenet_weights:
        checkpoint_path = imagenet_weights
        if not os.path.isfile(checkpoint_path):
            raise FileNotFoundError(f"model.backbone.checkpoint_path: no such file: {checkpoint_path}")
        return mindcv.create_model(name, features_only=True, out_indices=out_indices,
                                   checkpoint_path=checkpoint_path, norm=norm_cell)
    try:
        return mindcv.create_model(name, features_only=True, out_indices=out_indices,
                                   pretrained=bool(imagenet_weights), norm=norm_cell)
    except OSError as err:  # URLError and socket errors are OSErrors
        url = _pretrained_url(name)
        raise RuntimeError(
            f"model.backbone.pretrained: could not download the ImageNet weights of {name} ({err}). "
            f"Download {url or 'the mindcv checkpoint of ' + name} on a machine with network access, "
            f"copy it here and set model.backbone.checkpoint_path=/path/to/{os.path.basename(url) or name + '.ckpt'} "
            f"with model.backbone.pretrained=false.") from None


def _replace_child(parent, name, new):
    """Put ``new`` in place of ``parent``'s child ``name``, keeping the old parameter names."""
    old = parent.name_cells()[name]
    old_params = list(old.get_parameters())
    if isinstance(parent, nn.SequentialCell):
        parent[list(parent.name_cells().keys()).index(name)] = new
    else:
        setattr(parent, name, new)
    for new_param, old_param in zip(new.get_parameters(), old_params):
        new_param.set_data(old_param.data.copy())
        new_param.name = old_param.name
        new_param.requires_grad = old_param.requires_grad


def _strided_conv(conv, stride):
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=stride, pad_mode=conv.pad_mode,
                     padding=conv.padding, group=conv.group, has_bias=conv.has_bias)


def _move_stride_to_1x1(net):
    """In every Bottleneck whose 3x3 conv strides, stride the first 1x1 conv instead."""
    for _, cell in net.cells_and_names():
        conv1, conv2 = getattr(cell, "conv1", None), getattr(cell, "conv2", None)
        if not hasattr(cell, "conv3") or conv2 is None or tuple(conv2.stride) == (1, 1):
            continue
        stride = conv2.stride
        _replace_child(cell, "conv1", _strided_conv(conv1, stride))
        _replace_child(cell, "conv2", _strided_conv(conv2, 1))


class ResNetBackbone(nn.Cell):
    """mindcv ResNet/ResNeXt returning the feature maps of ``out_levels`` (default C2..C5).
    ``imagenet_weights``: False (random initialisation), True (mindcv's ImageNet weights,
    downloaded) or the path of a local mindcv checkpoint."""

    def __init__(self, name="resnet50", norm="frozen_bn", freeze_at=2, out_levels=(2, 3, 4, 5),
                 imagenet_weights=False, stride_in_1x1=False, stem_pool="same"):
        super().__init__()
        if name not in RESNET_NAMES:
            raise ValueError(f"model.backbone.name: '{name}' is not a ResNet/ResNeXt ({', '.join(RESNET_NAMES)})")
        if norm not in NORMS:
            raise ValueError(f"model.backbone.norm: '{norm}' is not one of {sorted(NORMS)}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"model.backbone.freeze_at: {freeze_at} is not in 0..5")
        if stem_pool not in STEM_POOLS:
            raise ValueError(f"model.backbone.stem_pool: '{stem_pool}' is not one of {STEM_POOLS}")
        self.body = _create_features(name, NORMS[norm], list(out_levels), imagenet_weights)
        if stem_pool == "torch":
            _replace_child(self.body.net, "max_pool", nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1))
        if stride_in_1x1:
            _move_stride_to_1x1(self.body.net)
        self.out_channels = list(self.body.out_channels)
        self.strides = level_strides(out_levels)
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


@register_backbone(*RESNET_NAMES)
def build_resnet(backbone_cfg, out_levels):
    return ResNetBackbone(backbone_cfg.name, norm=backbone_cfg.norm, freeze_at=backbone_cfg.freeze_at,
                          out_levels=out_levels,
                          imagenet_weights=backbone_cfg.checkpoint_path or bool(backbone_cfg.pretrained),
                          stride_in_1x1=backbone_cfg.stride_in_1x1, stem_pool=backbone_cfg.stem_pool)


__all__ = ["ResNetBackbone", "RESNET_NAMES", "NORMS", "build_resnet"]
