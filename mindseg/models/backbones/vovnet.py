"""VoVNetV2 (CenterMask's backbone), registered into mindcv's model registry.

Importing this module registers ``vovnet19_slim_dw``, ``vovnet19_slim``, ``vovnet19``, ``vovnet39``,
``vovnet57`` and ``vovnet99``, so ``mindcv.create_model("vovnet39", features_only=True,
out_indices=[2, 3, 4])`` returns stages 3-5 (strides 8, 16, 32). The specs follow centermask2's
``vovnet.py`` (parameter counts in tests/test_vovnet.py). Feature indices: 0 stem (stride 4), 1-4 stages 2-5.

An OSA (one-shot aggregation) module chains L 3x3 convs, concatenates its input with all L
outputs once, projects them with a 1x1 conv and rescales the channels with eSE (one 1x1 conv and a
hard sigmoid). Blocks 2..n of a stage add an identity residual.
"""
from collections import OrderedDict
from dataclasses import dataclass

from mindspore import nn, ops
from mindcv.models.helpers import build_model_with_cfg
from mindcv.models.registry import register_model

from mindseg.models.layers.init import he_init_convs

__all__ = ["VoVNet", "VoVNetSpec", "OSAModule", "EffectiveSE", "VOVNET_SPECS"]


@dataclass(frozen=True)
class VoVNetSpec:
    """A VoVNetV2's architecture: the widths of the three stem convs (3x3 s2, 3x3, 3x3 s2); per
    stage 2-5 the OSA layer width, the stage output width and the OSA modules; the convs per OSA
    module; depthwise-separable layers (and stem convs 2-3)."""
    stem_ch: tuple
    stage_conv_ch: tuple
    stage_out_ch: tuple
    blocks_per_stage: tuple
    layers_per_block: int
    depthwise: bool = False


_SLIM = dict(stage_conv_ch=(64, 80, 96, 112), stage_out_ch=(112, 256, 384, 512))
_WIDE = dict(stage_conv_ch=(128, 160, 192, 224), stage_out_ch=(256, 512, 768, 1024))

VOVNET_SPECS = {
    "vovnet19_slim_dw": VoVNetSpec(stem_ch=(64, 64, 64), layers_per_block=3, blocks_per_stage=(1, 1, 1, 1),
                                   depthwise=True, **_SLIM),
    "vovnet19_slim": VoVNetSpec(stem_ch=(64, 64, 128), layers_per_block=3, blocks_per_stage=(1, 1, 1, 1), **_SLIM),
    "vovnet19": VoVNetSpec(stem_ch=(64, 64, 128), layers_per_block=3, blocks_per_stage=(1, 1, 1, 1), **_WIDE),
    "vovnet39": VoVNetSpec(stem_ch=(64, 64, 128), layers_per_block=5, blocks_per_stage=(1, 1, 2, 2), **_WIDE),
    "vovnet57": VoVNetSpec(stem_ch=(64, 64, 128), layers_per_block=5, blocks_per_stage=(1, 1, 4, 3), **_WIDE),
    "vovnet99": VoVNetSpec(stem_ch=(64, 64, 128), layers_per_block=5, blocks_per_stage=(1, 3, 9, 3), **_WIDE),
}

default_cfgs = {name: {"url": "", "num_classes": 1000, "first_conv": "stem.stem_1.conv",
                       "classifier": "classifier"} for name in VOVNET_SPECS}


class ConvNormReLU(nn.Cell):
    """conv (no bias) -> norm -> ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                              padding=kernel_size // 2, has_bias=False)
        self.norm = norm(out_channels)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(self.norm(self.conv(x)))


class DWConvNormReLU(nn.Cell):
    """Depthwise 3x3 -> pointwise 1x1 -> norm -> ReLU (centermask2's ``dw_conv3x3``; no norm
    between the two convs)."""

    def __init__(self, channels, stride=1, norm=nn.BatchNorm2d):
        super().__init__()
        self.dw_conv = nn.Conv2d(channels, channels, 3, stride=stride, pad_mode="pad", padding=1,
                                 group=channels, has_bias=False)
        self.pw_conv = nn.Conv2d(channels, channels, 1, has_bias=False)
        self.norm = norm(channels)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(self.norm(self.pw_conv(self.dw_conv(x))))


class EffectiveSE(nn.Cell):
    """eSE: x * hard_sigmoid(conv1x1(global_avg_pool(x))), hard_sigmoid(z) = relu6(z + 3) / 6."""

    def __init__(self, channels):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, has_bias=True)
        self.hsigmoid = nn.HSigmoid()

    def construct(self, x):
        scale = x.mean(axis=(2, 3), keep_dims=True)
        # broadcast explicitly: an implicit one keeps ~4x the map alive in CPU GRAPH mode
        # (docs/platform_notes.md)
        return x * ops.broadcast_to(self.hsigmoid(self.fc(scale)), x.shape)


class OSAModule(nn.Cell):
    """One-shot aggregation: L chained 3x3 layers, concat(input, all L outputs) -> 1x1 -> eSE,
    plus the input when ``identity`` (blocks 2..n of a stage, where in = out channels).

    The depthwise variant first reduces the input with a 1x1 conv when its width differs from
    ``stage_channels``; the concat still takes the unreduced input.
    """

    def __init__(self, in_channels, stage_channels, out_channels, num_layers, identity=False,
                 depthwise=False, norm=nn.BatchNorm2d):
        super().__init__()
        if identity and in_channels != out_channels:
            raise ValueError(f"vovnet.py: an identity OSA block needs in_channels == out_channels, "
                             f"got {in_channels} and {out_channels}")
        self.identity = identity
        self.reduction = None
        layers = []
        width = in_channels
        if depthwise:
            if in_channels != stage_channels:
                self.reduction = ConvNormReLU(in_channels, stage_channels, 1, norm=norm)
            layers = [DWConvNormReLU(stage_channels, norm=norm) for _ in range(num_layers)]
        else:
            for _ in range(num_layers):
                layers.append(ConvNormReLU(width, stage_channels, 3, norm=norm))
                width = stage_channels
        self.layers = nn.CellList(layers)
        self.concat = ConvNormReLU(in_channels + num_layers * stage_channels, out_channels, 1, norm=norm)
        self.ese = EffectiveSE(out_channels)

    def construct(self, x):
        outputs = [x]
        feature = x
        if self.reduction is not None:
            feature = self.reduction(feature)
        for layer in self.layers:
            feature = layer(feature)
            outputs.append(feature)
        out = self.ese(self.concat(ops.cat(outputs, axis=1)))
        if self.identity:
            out = out + x
        return out


class OSAStage(nn.Cell):
    """Stage ``index`` (0 for stage 2) of a :class:`VoVNetSpec`: a 3x3 s2 max-pool (ceil mode)
    except in stage 2, then the stage's OSA modules, the first from ``in_channels``."""

    def __init__(self, spec, index, in_channels, norm=nn.BatchNorm2d):
        super().__init__()
        stage_channels, out_channels = spec.stage_conv_ch[index], spec.stage_out_ch[index]
        self.pool = (nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=0, ceil_mode=True)
                     if index > 0 else None)
        blocks = [OSAModule(in_channels, stage_channels, out_channels, spec.layers_per_block,
                            depthwise=spec.depthwise, norm=norm)]
        for _ in range(spec.blocks_per_stage[index] - 1):
            blocks.append(OSAModule(out_channels, stage_channels, out_channels, spec.layers_per_block,
                                    identity=True, depthwise=spec.depthwise, norm=norm))
        self.blocks = nn.SequentialCell(blocks)

    def construct(self, x):
        if self.pool is not None:
            x = self.pool(x)
        return self.blocks(x)


class VoVNet(nn.Cell):
    """VoVNetV2 with eSE, of a :class:`VoVNetSpec`. Top-level cells run in order (stem,
    stage2..stage5, pool, classifier) and ``feature_info`` names them, as mindcv's
    ``features_only`` wrapper requires. ``norm``: a callable ``norm(channels) -> Cell``
    (BatchNorm2d, or a frozen BN)."""

    def __init__(self, spec, num_classes=1000, in_channels=3, norm=None):
        super().__init__()
        norm = nn.BatchNorm2d if norm is None else norm
        stem_ch = spec.stem_ch
        if spec.depthwise:
            if stem_ch[0] != stem_ch[1] or stem_ch[1] != stem_ch[2]:
                raise ValueError(f"vovnet.py: a depthwise stem needs equal widths, got {stem_ch}")
            stem_2, stem_3 = DWConvNormReLU(stem_ch[1], norm=norm), DWConvNormReLU(stem_ch[2], 2, norm=norm)
        else:
            stem_2 = ConvNormReLU(stem_ch[0], stem_ch[1], 3, norm=norm)
            stem_3 = ConvNormReLU(stem_ch[1], stem_ch[2], 3, stride=2, norm=norm)
        stem_1 = ConvNormReLU(in_channels, stem_ch[0], 3, stride=2, norm=norm)
        self.stem = nn.SequentialCell(OrderedDict(stem_1=stem_1, stem_2=stem_2, stem_3=stem_3))
        self.feature_info = [dict(chs=stem_ch[2], reduction=4, name="stem")]
        in_chs = [stem_ch[2]] + list(spec.stage_out_ch[:-1])
        for i in range(4):
            setattr(self, f"stage{i + 2}", OSAStage(spec, i, in_chs[i], norm=norm))
            self.feature_info.append(dict(chs=spec.stage_out_ch[i], reduction=4 * 2 ** i, name=f"stage{i + 2}"))
        self.num_features = spec.stage_out_ch[-1]
        self.classifier = nn.Dense(self.num_features, num_classes)
        he_init_convs(self, "fan_in")

    def forward_features(self, x):
        x = self.stem(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        return self.stage5(x)

    def construct(self, x):
        x = self.forward_features(x)
        return self.classifier(x.mean(axis=(2, 3)))


def _create_vovnet(name, pretrained, num_classes, in_channels, **kwargs):
    if pretrained:
        raise ValueError(f"vovnet.py: mindcv has no ImageNet weights for {name}; "
                         f"pass checkpoint_path=PATH to load a local checkpoint instead")
    return build_model_with_cfg(VoVNet, False, default_cfg=default_cfgs[name], num_classes=num_classes,
                                in_channels=in_channels, spec=VOVNET_SPECS[name], **kwargs)


@register_model
def vovnet19_slim_dw(pretrained=False, num_classes=1000, in_channels=3, **kwargs):
    """VoVNetV2-19-slim-dw-eSE (CenterMask-Lite)."""
    return _create_vovnet("vovnet19_slim_dw", pretrained, num_classes, in_channels, **kwargs)


@register_model
def vovnet19_slim(pretrained=False, num_classes=1000, in_channels=3, **kwargs):
    """VoVNetV2-19-slim-eSE (CenterMask-Lite)."""
    return _create_vovnet("vovnet19_slim", pretrained, num_classes, in_channels, **kwargs)


@register_model
def vovnet19(pretrained=False, num_classes=1000, in_channels=3, **kwargs):
    """VoVNetV2-19-eSE (CenterMask-Lite)."""
    return _create_vovnet("vovnet19", pretrained, num_classes, in_channels, **kwargs)


@register_model
def vovnet39(pretrained=False, num_classes=1000, in_channels=3, **kwargs):
    """VoVNetV2-39-eSE."""
    return _create_vovnet("vovnet39", pretrained, num_classes, in_channels, **kwargs)


@register_model
def vovnet57(pretrained=False, num_classes=1000, in_channels=3, **kwargs):
    """VoVNetV2-57-eSE."""
    return _create_vovnet("vovnet57", pretrained, num_classes, in_channels, **kwargs)


@register_model
def vovnet99(pretrained=False, num_classes=1000, in_channels=3, **kwargs):
    """VoVNetV2-99-eSE."""
    return _create_vovnet("vovnet99", pretrained, num_classes, in_channels, **kwargs)
