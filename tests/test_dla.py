"""DLA-34 and DLA-Up: parameter counts by hand (and DLA-34's published 15.74M), mindcv
registration and features_only strides, the aggregation roots' widths, the bilinear upsampling and
the deformable-conv switch."""
import numpy as np
import pytest

import mindcv
import mindspore as ms
from mindspore import Tensor, nn

from mindseg.models.backbones import dla  # noqa: F401  (registers dla34)
from mindseg.models.necks.dla_up import DLAUp, DeformConv, IDAUp


def conv(k, i, o):
    return k * k * i * o


def block(i, o):  # basic block: two 3x3 convs with BN
    return conv(3, i, o) + conv(3, o, o) + 4 * o


def leaf(i, o, root_in):  # two blocks, a 1x1 root with BN, the projection of the residual
    return block(i, o) + block(o, o) + conv(1, root_in, o) + 2 * o + (conv(1, i, o) + 2 * o if i != o else 0)


DLA34_BY_HAND = (conv(7, 3, 16) + 32 + conv(3, 16, 16) + 32 + conv(3, 16, 32) + 64
                 + leaf(32, 64, 2 * 64)
                 + leaf(64, 128, 2 * 128) + leaf(128, 128, 2 * 128 + 64 + 128)
                 + leaf(128, 256, 2 * 256) + leaf(256, 256, 2 * 256 + 128 + 256)
                 + leaf(256, 512, 2 * 512 + 256)
                 + 512 * 1000 + 1000)
DLA34_PUBLISHED = 15_742_104  # timm's dla34 (15.74M), the ImageNet classifier included


def node(i, o):  # 3x3 conv with bias, BN
    return conv(3, i, o) + 3 * o


def up(o, f):  # depthwise transposed conv, kernel 2f, no bias
    return o * (2 * f) ** 2


DLA_UP_BY_HAND = (node(512, 256) + up(256, 2) + node(256, 256)
                  + 2 * (node(256, 128) + up(128, 2) + node(128, 128))
                  + 3 * (node(128, 64) + up(64, 2) + node(64, 64))
                  + node(128, 64) + up(64, 2) + node(64, 64) + node(256, 64) + up(64, 4) + node(64, 64))


def count(net):
    return sum(p.size for p in net.trainable_params())


def test_dla34_parameter_count_by_hand_and_published():
    net = mindcv.create_model("dla34")
    assert DLA34_BY_HAND == DLA34_PUBLISHED
    assert count(net) == DLA34_PUBLISHED
    assert "dla34" in mindcv.list_models("dla*")


def test_aggregation_roots_take_every_child():
    net = mindcv.create_model("dla34")
    # level 3 (depth 2, level_root): the second subtree's root concatenates its two blocks (2 x 128),
    # the first subtree's output (128) and the level's downsampled input (64)
    assert net.level3.tree.tree2.root.conv[0].weight.shape == (128, 448, 1, 1)
    assert net.level5.tree.root.conv[0].weight.shape == (512, 2 * 512 + 256, 1, 1)
    assert net.level2.tree.root.conv[0].weight.shape == (64, 128, 1, 1)


def test_features_and_dla_up_give_one_stride_4_map(mode):
    features = mindcv.create_model("dla34", features_only=True, out_indices=[2, 3, 4, 5])
    assert features.out_channels == [64, 128, 256, 512]
    neck = DLAUp(features.out_channels)
    assert count(neck) == DLA_UP_BY_HAND

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.features, self.neck = features, neck

        def construct(self, x):
            levels = self.features(x)
            return self.neck(levels), levels[3]

    net = Net()
    net.set_train(False)
    out, c5 = net(Tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)))
    assert out.shape == (1, 64, 16, 24) and c5.shape == (1, 512, 2, 3)


def test_upsampling_starts_bilinear(mode):
    # a linear ramp upsampled x2 by the initial kernel is the half-pixel bilinear ramp inside
    ida = IDAUp(1, [1, 1], [1, 2])
    ramp = Tensor(np.tile(np.arange(4, dtype=np.float32), (4, 1)).reshape(1, 1, 4, 4))
    got = ida.ups[0](ramp).asnumpy()[0, 0]
    assert got.shape == (8, 8)
    np.testing.assert_allclose(got[2, 1:7], (np.arange(1, 7) - 0.5) / 2, atol=1e-6)
    ida4 = IDAUp(1, [1, 1], [1, 4])
    assert ida4.ups[0](ramp).shape == (1, 1, 16, 16)


def test_deformable_switch_starts_as_half_the_plain_conv():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    dcn = DeformConv(4, 5)
    plain = nn.Conv2d(4, 5, 3, pad_mode="pad", padding=1, has_bias=True)
    plain.weight.set_data(dcn.weight.value())
    plain.bias.set_data(dcn.bias.value())
    x = Tensor(np.random.default_rng(1).standard_normal((1, 4, 6, 7)).astype(np.float32))
    np.testing.assert_allclose(dcn(x).asnumpy(), 0.5 * plain(x).asnumpy(), atol=1e-5)
    assert count(DLAUp(deform=True)) > DLA_UP_BY_HAND


def test_deformable_conv_trains_its_offsets():
    """The DCN gradient runs on the CPU and reaches the offset / mask predictor; the weight
    gradient of one tap agrees with a finite difference (the output is linear in the weights)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    dcn = DeformConv(2, 3)
    x = Tensor(np.random.default_rng(2).standard_normal((1, 2, 5, 5)).astype(np.float32))
    params = dcn.trainable_params()
    grads = dict(zip([p.name for p in params], ms.grad(lambda v: dcn(v).sum(), None, params)(x)))
    offset_grads = [g for name, g in grads.items() if name.startswith("offset")]
    assert offset_grads and all(np.abs(g.asnumpy()).sum() > 0 for g in offset_grads)
    weight = dcn.weight.asnumpy()
    base = float(dcn(x).sum())
    bumped = weight.copy()
    bumped[1, 0, 1, 2] += 0.5
    dcn.weight.set_data(Tensor(bumped))
    np.testing.assert_allclose((float(dcn(x).sum()) - base) / 0.5, grads["weight"].asnumpy()[1, 0, 1, 2], rtol=1e-3)


def test_built_by_name_through_the_backbone_registry_with_frozen_stages():
    from mindseg.config import load_config
    from mindseg.models.backbones import build_backbone
    cfg = load_config("config/shapes/centermask_point_shapes.yml", ["model.backbone.freeze_at=2"])
    backbone = build_backbone(cfg.model.backbone, (2, 3, 4, 5))
    assert backbone.out_channels == [64, 128, 256, 512] and backbone.strides == [4, 8, 16, 32]
    trainable = {p.name.split(".")[2] for p in backbone.trainable_params()}
    assert trainable == {"level3", "level4", "level5"}, trainable
