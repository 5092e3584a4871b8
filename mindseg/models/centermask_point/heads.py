"""The five heads of CenterMask (point representation) on the stride-4 map, each
3x3 conv (head width, 256) -> ReLU -> 1x1 conv: heatmap K (bias -2.19), offset 2, size 2, local
shape S^2 and global saliency K. All return logits / raw values (CenterNet's initialisation: the
heatmap's last bias -2.19, the other heads N(0, 0.001) with zero biases).
"""
from mindspore import nn
from mindspore.common import initializer as init

from mindseg.models.layers.class_rows import mark_class_rows


def _head(in_channels, head_channels, out_channels, bias=None):
    if bias is None:  # CenterNet's fill_fc_weights
        weights = dict(weight_init=init.Normal(sigma=0.001), bias_init="zeros")
        first, last = weights, weights
    else:  # the heatmap: default init, a prior on the last bias
        first, last = {}, dict(bias_init=init.Constant(bias))
    return nn.SequentialCell([
        nn.Conv2d(in_channels, head_channels, 3, pad_mode="pad", padding=1, has_bias=True, **first),
        nn.ReLU(),
        nn.Conv2d(head_channels, out_channels, 1, has_bias=True, **last)])


class PointHeads(nn.Cell):
    """(B, C, Ho, Wo) -> heatmap logits (B, K, Ho, Wo), offset (B, 2, Ho, Wo), size (B, 2, Ho, Wo)
    in output pixels, local-shape logits (B, S^2, Ho, Wo), saliency logits (B, K, Ho, Wo)."""

    def __init__(self, *, in_channels, num_classes, head_channels=256, shape_size=32, heatmap_bias=-2.19):
        super().__init__()
        self.heatmap = _head(in_channels, head_channels, num_classes, bias=heatmap_bias)
        mark_class_rows(self.heatmap[-1])
        self.offset = _head(in_channels, head_channels, 2)
        self.size = _head(in_channels, head_channels, 2)
        self.shape = _head(in_channels, head_channels, shape_size * shape_size)
        self.saliency = _head(in_channels, head_channels, num_classes)
        mark_class_rows(self.saliency[-1])

    def construct(self, features):
        return (self.heatmap(features), self.offset(features), self.size(features), self.shape(features),
                self.saliency(features))
