"""Frozen batch normalization: y = (x - mean) / sqrt(var + eps) * gamma + beta, all four fixed.

Detection fine-tunes with 1-2 images per device, too few for batch statistics; detectron2 keeps the
ImageNet statistics and affine parameters fixed. Parameter names match ``nn.BatchNorm2d`` so a
mindcv checkpoint loads into either.
"""
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Parameter, Tensor
import numpy as np


_BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")
_TINY_EPS = 1e-12  # sqrt(1 + 1e-12) is 1 in float32


class FrozenBatchNorm2d(nn.Cell):
    """BatchNorm2d with fixed statistics and affine; none of its parameters is trainable."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.gamma = Parameter(Tensor(np.ones(num_features, np.float32)), name="gamma", requires_grad=False)
        self.beta = Parameter(Tensor(np.zeros(num_features, np.float32)), name="beta", requires_grad=False)
        self.moving_mean = Parameter(Tensor(np.zeros(num_features, np.float32)), name="moving_mean",
                                     requires_grad=False)
        self.moving_variance = Parameter(Tensor(np.ones(num_features, np.float32)), name="moving_variance",
                                         requires_grad=False)
        self.zero_mean = Tensor(np.zeros(num_features, np.float32))
        self.unit_variance = Tensor(np.ones(num_features, np.float32))

    def construct(self, x):
        # y = x * scale + shift, computed by the batch-norm kernel with zero mean and unit
        # variance (bit-identical to the affine form, as torchvision and detectron2 compute it):
        # a broadcasting multiply keeps ~4x the map alive in CPU GRAPH mode (platform notes)
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.eps)
        shift = self.beta - self.moving_mean * scale
        return ops.batch_norm(x, self.zero_mean, self.unit_variance, scale, shift, training=False,
                              eps=_TINY_EPS)

    def extend_repr(self):
        return f"num_features={self.num_features}, eps={self.eps}"


def freeze_batchnorm(cell, only=None):
    """Replace every ``nn.BatchNorm2d`` under ``cell`` by a FrozenBatchNorm2d holding its values;
    ``only`` restricts the walk to the named direct children.

    Parameters keep the names of those they replace (``layer1.0.bn1.gamma``) so checkpoints still load.
    Returns ``cell`` (or the replacement when ``cell`` itself is a BatchNorm2d).
    """
    if isinstance(cell, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(cell.num_features, eps=cell.eps)
        for name in _BN_PARAMS:
            getattr(frozen, name).set_data(getattr(cell, name).data.copy())
        return frozen
    for name, child in list(cell.name_cells().items()):
        if only is not None and name not in only:
            continue
        replaced = freeze_batchnorm(child)
        if replaced is not child:
            old_names = [getattr(child, param_name).name for param_name in _BN_PARAMS]
            if isinstance(cell, nn.SequentialCell):
                cell[list(cell._cells.keys()).index(name)] = replaced
            else:
                setattr(cell, name, replaced)
            for param_name, old_name in zip(_BN_PARAMS, old_names):
                getattr(replaced, param_name).name = old_name
    return cell


def group_norm_32(num_channels):
    """GroupNorm with 32 groups (fewer when the width is not a multiple): a norm that needs no
    ImageNet statistics, for training from scratch."""
    groups = 32
    while num_channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, num_channels)


__all__ = ["FrozenBatchNorm2d", "freeze_batchnorm", "group_norm_32"]
