"""Backbones: frozen BN formula, frozen stages, checkpoint round trip, clear pretrained error."""
import os

import mindspore as ms
import mindspore.nn as nn
import numpy as np
import pytest

from mindseg.config import load_config
from mindseg.models.backbones import build_backbone
from mindseg.models.layers.frozen_bn import FrozenBatchNorm2d, freeze_batchnorm


def make_backbone(name, out_levels=(2, 3, 4, 5), **values):
    """``build_backbone`` of the base config's ``model.backbone`` with ``name`` and ``values``."""
    cfg = load_config("config/base.yml").model.backbone
    cfg.name = name
    cfg.update(values)
    return build_backbone(cfg, out_levels)


@pytest.mark.parametrize("training", [False, True])
def test_frozen_bn_equals_affine_formula_and_its_gradient(mode, training):
    """Output and input gradient are the fixed affine map in eval and in training mode (the
    statistics never update), in both modes."""
    rng = np.random.default_rng(0)
    channels = 5
    gamma, beta = rng.normal(size=channels), rng.normal(size=channels)
    mean, var = rng.normal(size=channels), rng.uniform(0.5, 2.0, size=channels)
    bn = FrozenBatchNorm2d(channels)
    for name, value in zip(("gamma", "beta", "moving_mean", "moving_variance"), (gamma, beta, mean, var)):
        getattr(bn, name).set_data(ms.Tensor(value.astype(np.float32)))
    bn.set_train(training)
    x = rng.normal(size=(2, channels, 3, 4)).astype(np.float32)
    dout = rng.normal(size=x.shape).astype(np.float32)
    scale = gamma / np.sqrt(var + 1e-5)
    expected = (x - mean[:, None, None]) * scale[:, None, None] + beta[:, None, None]
    got = bn(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # bit-identical to x * scale + shift, the order torchvision / detectron2 compute (weight parity)
    scale_t = bn.gamma * ms.ops.rsqrt(bn.moving_variance + 1e-5)
    shift_t = bn.beta - bn.moving_mean * scale_t
    affine = ms.Tensor(x) * scale_t.reshape(1, -1, 1, 1) + shift_t.reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(got, affine.asnumpy())
    weights = ms.Tensor(dout)

    def weighted_sum(t):
        return (bn(t) * weights).sum()
    grad = ms.grad(weighted_sum)(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(grad, dout * scale[:, None, None], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), mean.astype(np.float32))
    np.testing.assert_allclose(bn.moving_variance.asnumpy(), var.astype(np.float32))
    assert not bn.trainable_params()


def test_freeze_batchnorm_keeps_values_and_names():
    net = nn.SequentialCell([nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)])
    net[1].moving_mean.set_data(ms.Tensor(np.arange(4, dtype=np.float32)))
    names = sorted(p.name for p in net.get_parameters())
    freeze_batchnorm(net)
    assert isinstance(net[1], FrozenBatchNorm2d)
    assert sorted(p.name for p in net.get_parameters()) == names
    np.testing.assert_array_equal(net[1].moving_mean.asnumpy(), np.arange(4))
    x = np.random.default_rng(1).normal(size=(1, 3, 2, 2)).astype(np.float32)
    conv = net[0](ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(net(ms.Tensor(x)).asnumpy(),
                               (conv - np.arange(4)[:, None, None]) / np.sqrt(1 + 1e-5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["frozen_bn", "bn"])
def test_freeze_at_two_freezes_stem_and_res2(norm):
    backbone = make_backbone("resnet18", norm=norm, freeze_at=2)
    trainable = [p.name for p in backbone.trainable_params()]
    assert trainable and all(".layer1." not in n and not n.endswith("net.conv1.weight") for n in trainable)
    assert any(".layer2." in n for n in trainable)
    frozen_bns = [c for _, c in backbone.cells_and_names() if isinstance(c, FrozenBatchNorm2d)]
    bns = [c for _, c in backbone.cells_and_names() if isinstance(c, nn.BatchNorm2d)]
    if norm == "frozen_bn":
        assert not bns and not any("gamma" in n or "beta" in n for n in trainable)
    else:  # stem and res2 BNs are frozen, the rest train
        assert len(frozen_bns) == 1 + 4 and bns and any("gamma" in n for n in trainable)


def test_outputs_c2_to_c5():
    backbone = make_backbone("resnet18", norm="frozen_bn", freeze_at=0)
    assert backbone.out_channels == [64, 128, 256, 512] and backbone.strides == [4, 8, 16, 32]
    assert len(backbone.trainable_params()) == 20  # convs only: 1 stem + 8 blocks x 2 + 3 downsample
    features = backbone(ms.Tensor(np.zeros((1, 3, 64, 96), np.float32)))
    assert [f.shape for f in features] == [(1, c, 64 // s, 96 // s) for c, s in zip([64, 128, 256, 512],
                                                                                     [4, 8, 16, 32])]


def test_checkpoint_loads_back_exactly(tmp_path):
    import mindcv
    source = mindcv.create_model("resnet18", num_classes=10)
    for param in source.get_parameters():
        param.set_data(ms.Tensor(np.random.default_rng(len(param.name)).normal(
            size=param.shape).astype(np.float32)))
    path = os.path.join(tmp_path, "resnet18.ckpt")
    ms.save_checkpoint(source, path)
    backbone = make_backbone("resnet18", norm="frozen_bn", freeze_at=2, checkpoint_path=path)
    loaded = {p.name.split("body.net.")[-1]: p.asnumpy() for p in backbone.get_parameters()}
    saved = {p.name: p.asnumpy() for p in source.get_parameters()}
    assert len(loaded) == len(saved) - 2  # everything but the classifier
    for name, value in loaded.items():
        np.testing.assert_array_equal(value, saved[name])


def test_missing_checkpoint_and_offline_pretrained_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        make_backbone("resnet18", checkpoint_path=str(tmp_path / "nope.ckpt"))
    with pytest.raises(ValueError, match="not one of"):
        make_backbone("resnet18", norm="layer_norm")


@pytest.mark.parametrize("name,channels,freeze_at,frozen_cells", [
    ("vovnet19_slim_dw", [112, 256, 384, 512], 2, {"stem", "stage2"}),
    ("mobilenet_v2_100", [24, 32, 96, 320], 2, {"features_0", "features_3", "features_4", "features_5"}),
])
def test_mindcv_backbones_declare_what_they_return_and_freeze_stages(name, channels, freeze_at, frozen_cells):
    """VoVNetV2 and MobileNetV2 give C2..C5 (or C3..C5) with the channels and strides they declare;
    ``freeze_at`` fixes the stem and the cells up to that level (every BN frozen with frozen_bn)."""
    image = ms.Tensor(np.zeros((1, 3, 64, 96), np.float32))
    backbone = make_backbone(name, norm="frozen_bn", freeze_at=freeze_at)
    assert backbone.out_channels == channels and backbone.strides == [4, 8, 16, 32]
    assert [tuple(f.shape[1:]) for f in backbone(image)] == [(c, 64 // s, 96 // s) for c, s in
                                                             zip(backbone.out_channels, backbone.strides)]
    convs = [p for p in backbone.get_parameters() if p.name.endswith((".weight", ".bias"))]  # body.net.<cell>.
    frozen = {p.name.split(".")[2] for p in convs if not p.requires_grad}
    assert frozen == frozen_cells
    assert {p.name.split(".")[2] for p in backbone.trainable_params()} == {p.name.split(".")[2] for p in convs} - frozen
    assert not [c for _, c in backbone.cells_and_names() if isinstance(c, nn.BatchNorm2d)]
    c3_to_c5 = make_backbone(name, out_levels=(3, 4, 5), norm="frozen_bn", freeze_at=0)
    assert c3_to_c5.out_channels == channels[1:] and c3_to_c5.strides == [8, 16, 32]
    with pytest.raises(ValueError, match="freeze_at"):
        make_backbone(name, freeze_at=6)


def test_mobilenet_refuses_group_norm():
    with pytest.raises(ValueError, match="mobilenet_v2_100 supports"):
        make_backbone("mobilenet_v2_100", norm="gn")


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet5'.*'resnet50'.*'vovnet39'"):
        make_backbone("resnet5")


def test_a_registered_backbone_is_built_by_name(monkeypatch):
    """Adding a backbone is one registration: Mask R-CNN then builds on it by ``model.backbone.name``
    alone, its FPN from the channels and strides the backbone declares."""
    from mindseg.models import build_model
    from mindseg.models.backbones import registry

    class TwoConvs(nn.Cell):
        def __init__(self, out_levels):
            super().__init__()
            self.out_channels = [8 * level for level in out_levels]
            self.strides = [2 ** level for level in out_levels]
            self.convs = nn.CellList([nn.Conv2d(3, c, 1, stride=s, has_bias=True)
                                      for c, s in zip(self.out_channels, self.strides)])

        def construct(self, image):
            return tuple(conv(image) for conv in self.convs)

    monkeypatch.setitem(registry.BACKBONES, "two_convs", lambda cfg, out_levels: TwoConvs(out_levels))
    cfg = load_config("config/shapes/mask_rcnn_shapes.yml", ["model.num_classes=2", "data.canvas=[64,64]",
                                                             "model.backbone.name=two_convs"])
    net = build_model(cfg)
    assert isinstance(net.backbone, TwoConvs)
    assert [c.in_channels for c in net.fpn.lateral_convs] == [16, 24, 32, 40]
    assert net.fpn.strides == [4, 8, 16, 32, 64]


def test_import_mindseg_models_registers_vovnet_in_mindcv():
    """``import mindseg.models`` alone makes mindcv build VoVNetV2 (the backbones register on import)."""
    import subprocess
    import sys
    code = ("import mindseg.models, mindcv\n"
            "net = mindcv.create_model('vovnet39', features_only=True, out_indices=[2, 3, 4])\n"
            "print(net.out_channels)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          env=dict(os.environ, GLOG_v="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[512, 768, 1024]"
