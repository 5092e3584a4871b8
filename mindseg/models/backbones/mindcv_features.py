"""Feature extractors of mindcv models that :class:`ResNetBackbone` does not cover: VoVNetV2
(registered into mindcv by :mod:`mindseg.models.backbones.vovnet`), DLA-34 (by
:mod:`mindseg.models.backbones.dla`) and MobileNetV2.

Each model's table row gives the mindcv feature index of every pyramid level (level l at stride
2**l) and, per ``freeze_at`` stage, the cells it fixes: stage 1 is the stem (down to stride 2),
stage k = 2..5 the cells that end at level k (VoVNet's stage2..stage5; MobileNetV2's inverted
residual blocks, as mindcv's ``features_only`` wrapper names them).
"""
import os

import mindcv
import mindspore.nn as nn

from mindseg.models.backbones import dla  # noqa: F401  (registers dla34 into mindcv)
from mindseg.models.backbones import vovnet
from mindseg.models.backbones.registry import level_strides, register_backbone
from mindseg.models.backbones.resnet import NORMS
from mindseg.models.layers.frozen_bn import freeze_batchnorm

def _cells(first, last):
    return tuple(f"features_{i}" for i in range(first, last + 1))


_VOVNET = dict(levels={2: 1, 3: 2, 4: 3, 5: 4}, norm_arg=True,
               stages=(("stem",), ("stage2",), ("stage3",), ("stage4",), ("stage5",)))
MINDCV_FEATURES = {
    **{name: _VOVNET for name in vovnet.VOVNET_SPECS},
    "mobilenet_v2_100": dict(levels={2: 3, 3: 6, 4: 13, 5: 17}, norm_arg=False,
                             stages=(_cells(0, 3), _cells(4, 5), _cells(6, 8), _cells(9, 15), _cells(16, 19))),
    "dla34": dict(levels={2: 2, 3: 3, 4: 4, 5: 5}, norm_arg=True,  # registered into mindcv by dla.py
                  stages=(("base_layer", "level0", "level1"), ("level2",), ("level3",), ("level4",), ("level5",))),
}


class MindcvFeatures(nn.Cell):
    """The maps of ``out_levels`` (default C3..C5) of mindcv model ``name`` (a key of
    ``MINDCV_FEATURES``), with the norm choices and ``freeze_at`` stages of the ResNets."""

    def __init__(self, name, norm="frozen_bn", freeze_at=0, checkpoint_path="", out_levels=(3, 4, 5)):
        super().__init__()
        if name not in MINDCV_FEATURES:
            raise ValueError(f"model.backbone.name: '{name}' is not one of {sorted(MINDCV_FEATURES)}")
        if norm not in NORMS:
            raise ValueError(f"model.backbone.norm: '{norm}' is not one of {sorted(NORMS)}")
        if checkpoint_path and not os.path.isfile(checkpoint_path):
            raise FileNotFoundError(f"model.backbone.checkpoint_path: no such file: {checkpoint_path}")
        table = MINDCV_FEATURES[name]
        unknown = [level for level in out_levels if level not in table["levels"]]
        if unknown:
            raise ValueError(f"model.backbone.name: {name} has no pyramid level {unknown} "
                             f"(it has {sorted(table['levels'])})")
        out_indices = [table["levels"][level] for level in out_levels]
        if not 0 <= freeze_at <= len(table["stages"]):
            raise ValueError(f"model.backbone.freeze_at: {freeze_at} is not in 0..{len(table['stages'])}")
        extra = {"checkpoint_path": checkpoint_path} if checkpoint_path else {}
        if table["norm_arg"]:
            self.body = mindcv.create_model(name, features_only=True, out_indices=out_indices,
                                            norm=NORMS[norm], **extra)
        else:  # built with BatchNorm2d, frozen afterwards
            if norm == "gn":
                raise ValueError(f"model.backbone: {name} supports norm frozen_bn or bn, got norm {norm}")
            self.body = mindcv.create_model(name, features_only=True, out_indices=out_indices, **extra)
            if norm == "frozen_bn":
                freeze_batchnorm(self.body)
        stages = [cell for stage in table["stages"][:freeze_at] for cell in stage]
        self.out_channels = list(self.body.out_channels)
        self.strides = level_strides(out_levels)
        if norm == "bn":
            freeze_batchnorm(self.body.net, only=stages)
        cells = self.body.net.name_cells()
        for stage in stages:
            if stage in cells:  # the wrapper drops the cells after the last level asked for
                for param in cells[stage].get_parameters():
                    param.requires_grad = False

    def construct(self, image):
        return tuple(self.body(image))


@register_backbone(*MINDCV_FEATURES)
def build_mindcv_features(backbone_cfg, out_levels):
    if backbone_cfg.pretrained:
        raise ValueError(f"model.backbone.pretrained: mindcv has no downloadable weights for "
                         f"{backbone_cfg.name} here; set model.backbone.checkpoint_path instead")
    return MindcvFeatures(backbone_cfg.name, norm=backbone_cfg.norm, freeze_at=backbone_cfg.freeze_at,
                          checkpoint_path=backbone_cfg.checkpoint_path, out_levels=out_levels)
