"""Backbones: a plain dict from model name to a builder taking keyword arguments."""
from mindseg.models.backbones.resnet import RESNET_NAMES, ResNetBackbone

BACKBONES = {name: ResNetBackbone for name in RESNET_NAMES}


def build_backbone(name, **kwargs):
    """Build backbone ``name`` (a key of ``BACKBONES``); kwargs go to its constructor
    (norm, freeze_at, out_levels, pretrained, checkpoint_path)."""
    if name not in BACKBONES:
        raise ValueError(f"model.backbone.name: unknown backbone '{name}'; known: {sorted(BACKBONES)}")
    return BACKBONES[name](name=name, **kwargs)
