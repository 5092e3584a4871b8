"""DLA-34 (Deep Layer Aggregation, Yu et al. 2018), the backbone of CenterMask with point
representation, registered into mindcv's model registry like the VoVNets.

Importing this module registers ``dla34``, so ``mindcv.create_model("dla34", features_only=True,
out_indices=[2, 3, 4, 5])`` returns levels 2-5 (strides 4, 8, 16, 32; 64, 128, 256, 512 channels).
Feature indices 0-5 are ``level0``..``level5`` (strides 1, 2, 4, 8, 16, 32).

DLA-34: levels [1, 1, 1, 2, 2, 1] and channels [16, 32, 64, 128, 256, 512]; a 7x7 stem, two conv
levels, then hierarchical aggregation trees of basic residual blocks whose nodes (``Root``)
concatenate their children and project them with a 1x1 conv.
"""
from mindspore import nn, ops
from mindcv.models.helpers import build_model_with_cfg
from mindcv.models.registry import register_model

from mindseg.models.layers.init import he_init_convs

__all__ = ["DLA", "DLA_SPECS"]

DLA_SPECS = {"dla34": dict(levels=(1, 1, 1, 2, 2, 1), channels=(16, 32, 64, 128, 256, 512))}
default_cfgs = {name: {"url": "", "num_classes": 1000, "first_conv": "base_layer.0",
                       "classifier": "classifier"} for name in DLA_SPECS}


def conv_norm_relu(in_channels, out_channels, kernel_size, stride=1, norm=nn.BatchNorm2d, relu=True):
    """conv (no bias) -> norm [-> ReLU] as a SequentialCell."""
    cells = [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                       padding=kernel_size // 2, has_bias=False), norm(out_channels)]
    if relu:
        cells.append(nn.ReLU())
    return nn.SequentialCell(cells)


class BasicBlock(nn.Cell):
    """Two 3x3 conv-norm layers plus ``residual``, ReLU."""

    def __init__(self, in_channels, out_channels, stride=1, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv_norm_relu(in_channels, out_channels, 3, stride, norm)
        self.conv2 = conv_norm_relu(out_channels, out_channels, 3, 1, norm, relu=False)
        self.relu = nn.ReLU()

    def construct(self, x, residual):
        return self.relu(self.conv2(self.conv1(x)) + residual)


class Root(nn.Cell):
    """An aggregation node: concat(children) -> 1x1 conv -> norm -> ReLU."""

    def __init__(self, in_channels, out_channels, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv = conv_norm_relu(in_channels, out_channels, 1, norm=norm)

    def construct(self, children):
        return self.conv(ops.cat(children, axis=1))


class Tree(nn.Cell):
    """A hierarchical aggregation tree of depth ``levels``. A leaf (levels 1) is two blocks and a
    root over (second block, first block, earlier children); a deeper tree chains two subtrees,
    the second one's root also taking the first subtree's output and the earlier children.
    ``level_root`` passes this tree's (downsampled) input to its root as well."""

    def __init__(self, levels, in_channels, out_channels, stride=1, level_root=False, root_channels=0,
                 norm=nn.BatchNorm2d):
        super().__init__()
        root_channels = root_channels or 2 * out_channels
        if level_root:
            root_channels += in_channels
        self.levels = levels
        self.level_root = level_root
        if levels == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride, norm)
            self.tree2 = BasicBlock(out_channels, out_channels, 1, norm)
            self.root = Root(root_channels, out_channels, norm)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride, norm=norm)
            self.tree2 = Tree(levels - 1, out_channels, out_channels, 1, root_channels=root_channels + out_channels,
                              norm=norm)
        self.downsample = nn.MaxPool2d(kernel_size=stride, stride=stride) if stride > 1 else None
        # only a leaf uses its projected residual (as timm; the reference code also builds an
        # unused one in deeper trees)
        self.project = (conv_norm_relu(in_channels, out_channels, 1, norm=norm, relu=False)
                        if levels == 1 and in_channels != out_channels else None)

    def construct(self, x, children):
        bottom = x if self.downsample is None else self.downsample(x)
        if self.level_root:
            children = children + (bottom,)
        if self.levels == 1:
            residual = bottom if self.project is None else self.project(bottom)
            x1 = self.tree1(x, residual)
            return self.root((self.tree2(x1, x1), x1) + children)
        x1 = self.tree1(x, ())
        return self.tree2(x1, children + (x1,))


class TreeLevel(nn.Cell):
    """A top-level tree called with the input alone (mindcv's feature wrapper calls each level
    with one argument)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.tree = Tree(*args, **kwargs)

    def construct(self, x):
        return self.tree(x, ())


class DLA(nn.Cell):
    """DLA backbone; top-level cells run in order (base_layer, level0..level5, classifier) and
    ``feature_info`` names level0..level5, as mindcv's ``features_only`` wrapper requires.

    Args:
        levels: blocks (levels 0-1) or tree depth (levels 2-5) per level.
        channels: output width per level.
        norm: a callable ``norm(channels) -> Cell``.
    """

    def __init__(self, levels, channels, num_classes=1000, in_channels=3, norm=None):
        super().__init__()
        norm = nn.BatchNorm2d if norm is None else norm
        self.base_layer = conv_norm_relu(in_channels, channels[0], 7, norm=norm)
        self.level0 = nn.SequentialCell([conv_norm_relu(channels[0], channels[0], 3, norm=norm)
                                         for _ in range(levels[0])])
        self.level1 = nn.SequentialCell([conv_norm_relu(channels[0] if i == 0 else channels[1], channels[1], 3,
                                                        2 if i == 0 else 1, norm) for i in range(levels[1])])
        self.level2 = TreeLevel(levels[2], channels[1], channels[2], 2, level_root=False, norm=norm)
        self.level3 = TreeLevel(levels[3], channels[2], channels[3], 2, level_root=True, norm=norm)
        self.level4 = TreeLevel(levels[4], channels[3], channels[4], 2, level_root=True, norm=norm)
        self.level5 = TreeLevel(levels[5], channels[4], channels[5], 2, level_root=True, norm=norm)
        self.feature_info = [dict(chs=channels[i], reduction=2 ** i, name=f"level{i}") for i in range(6)]
        self.num_features = channels[-1]
        self.classifier = nn.Conv2d(channels[-1], num_classes, 1, has_bias=True)
        he_init_convs(self, "fan_out")

    def forward_features(self, x):
        x = self.level1(self.level0(self.base_layer(x)))
        return self.level5(self.level4(self.level3(self.level2(x))))

    def construct(self, x):
        x = self.forward_features(x)
        return self.classifier(x.mean(axis=(2, 3), keep_dims=True)).reshape(x.shape[0], -1)


@register_model
def dla34(pretrained=False, num_classes=1000, in_channels=3, **kwargs):
    """DLA-34 (CenterNet's and CenterMask's backbone)."""
    if pretrained:
        raise ValueError("dla.py: mindcv has no ImageNet weights for dla34; pass checkpoint_path=PATH to load "
                         "a local checkpoint instead")
    return build_model_with_cfg(DLA, False, default_cfg=default_cfgs["dla34"], num_classes=num_classes,
                                in_channels=in_channels, **DLA_SPECS["dla34"], **kwargs)
