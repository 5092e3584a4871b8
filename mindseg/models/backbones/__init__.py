"""Backbones: ``build_backbone(cfg.model.backbone, out_levels)`` builds any registered backbone
(see :mod:`mindseg.models.backbones.registry`). Importing this package registers every backbone,
and VoVNetV2 into mindcv's model registry (``mindcv.create_model("vovnet39", features_only=True)``).
"""
from mindseg.models.backbones.registry import BACKBONES, build_backbone, register_backbone
from mindseg.models.backbones import resnet  # noqa: F401  (registers the ResNets / ResNeXts)
from mindseg.models.backbones import vovnet  # noqa: F401  (registers VoVNetV2 into mindcv)
from mindseg.models.backbones import mindcv_features  # noqa: F401  (registers VoVNetV2, MobileNetV2)

__all__ = ["BACKBONES", "build_backbone", "register_backbone"]
