"""The backbone registry: ``model.backbone.name`` -> the builder of that backbone.

A builder is ``builder(backbone_cfg, out_levels) -> Cell``: ``backbone_cfg`` is the config's
``model.backbone`` section, ``out_levels`` the pyramid levels the meta-architecture asks for
(level l has stride 2**l: 2 is C2 at stride 4, 5 is C5 at stride 32). The Cell returns a tuple
of feature maps, fine to coarse, and declares them in ``out_channels`` and ``strides`` (one
entry per map): the FPN, the RPN anchors and the poolers are built from these, never from
constants. A new backbone is one ``@register_backbone("name", ...)`` on its builder in a module
that ``mindseg/models/backbones/__init__.py`` imports.
"""

BACKBONES = {}


def register_backbone(*names):
    """Decorator: ``builder`` builds the backbones ``names``."""
    def register(builder):
        for name in names:
            if name in BACKBONES:
                raise ValueError(f"backbone '{name}' is registered twice")
            BACKBONES[name] = builder
        return builder
    return register


def level_strides(out_levels):
    """The stride of each pyramid level: 2**level."""
    return [2 ** int(level) for level in out_levels]


def build_backbone(backbone_cfg, out_levels):
    """The backbone ``backbone_cfg.name`` returning the maps of ``out_levels``."""
    name = backbone_cfg.name
    if name not in BACKBONES:
        raise ValueError(f"model.backbone.name: unknown backbone '{name}'; known: {sorted(BACKBONES)}")
    backbone = BACKBONES[name](backbone_cfg, tuple(int(level) for level in out_levels))
    if len(backbone.out_channels) != len(backbone.strides):
        raise ValueError(f"backbone '{name}' declares {len(backbone.out_channels)} out_channels but "
                         f"{len(backbone.strides)} strides")
    return backbone
