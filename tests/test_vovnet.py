"""VoVNetV2: parameter counts against the design, mindcv registration and features_only, eSE and the
identity residual by hand."""
import os

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn
import mindcv

from mindseg.models.backbones import vovnet
from mindseg.models.backbones.vovnet import EffectiveSE, OSAModule

# The design's VoVNetV2 table: backbone parameters without a classifier, in millions.
DESIGN_PARAMS_M = {"vovnet19_slim_dw": 1.38, "vovnet19_slim": 2.65, "vovnet19": 10.18,
                   "vovnet39": 25.2, "vovnet57": 41.5, "vovnet99": 69.5}


def _backbone_params(net):
    return sum(p.size for p in net.trainable_params() if not p.name.startswith("classifier"))


@pytest.mark.parametrize("name", list(DESIGN_PARAMS_M))
def test_parameter_count_matches_design(name):
    net = mindcv.create_model(name)
    count = _backbone_params(net) / 1e6
    assert abs(count - DESIGN_PARAMS_M[name]) / DESIGN_PARAMS_M[name] < 0.01, (name, count)


def test_registered_in_mindcv():
    assert set(DESIGN_PARAMS_M) <= set(mindcv.list_models("vovnet*"))


def test_features_only_strides_channels_and_ceil_mode():
    """H=100, W=132: stem 25x33 (stride 4); ceil-mode pools give 12x16, 6x8, 3x4 (floor mode would
    give 12x16, 5x7, 2x3)."""
    net = mindcv.create_model("vovnet39", features_only=True, out_indices=[2, 3, 4])
    net.set_train(False)
    assert net.out_channels == [512, 768, 1024]
    feats = net(Tensor(np.random.RandomState(0).randn(1, 3, 100, 132).astype(np.float32)))
    assert [tuple(f.shape) for f in feats] == [(1, 512, 12, 16), (1, 768, 6, 8), (1, 1024, 3, 4)]


def test_features_only_all_levels_slim_dw():
    net = mindcv.create_model("vovnet19_slim_dw", features_only=True, out_indices=[0, 1, 2, 3, 4])
    net.set_train(False)
    feats = net(Tensor(np.zeros((2, 3, 64, 96), np.float32)))
    assert net.out_channels == [64, 112, 256, 384, 512]
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 24), (112, 16, 24), (256, 8, 12),
                                                   (384, 4, 6), (512, 2, 3)]
    full = vovnet.VoVNet(vovnet.VOVNET_SPECS["vovnet19_slim_dw"])
    assert [f["reduction"] for f in full.feature_info] == [4, 4, 8, 16, 32]


def test_features_only_loads_a_full_model_checkpoint(tmp_path):
    """A checkpoint of the classifier model loads into the features_only model by name."""
    ms.set_seed(1)
    full = mindcv.create_model("vovnet19_slim_dw")
    path = os.path.join(str(tmp_path), "v19.ckpt")
    ms.save_checkpoint(full, path)
    ms.set_seed(2)
    feats = mindcv.create_model("vovnet19_slim_dw", features_only=True, out_indices=[4],
                                checkpoint_path=path)
    full_params = {p.name: p.asnumpy() for p in full.get_parameters()}
    for p in feats.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), full_params[p.name], err_msg=p.name)
    full.set_train(False)
    feats.set_train(False)
    image = Tensor(np.random.RandomState(3).randn(1, 3, 64, 64).astype(np.float32))
    np.testing.assert_allclose(feats(image)[0].asnumpy(), full.forward_features(image).asnumpy(),
                               rtol=1e-5, atol=1e-5)


def test_pretrained_without_url_is_a_clear_error():
    with pytest.raises(ValueError, match="checkpoint_path"):
        mindcv.create_model("vovnet39", pretrained=True)


def test_ese_hard_sigmoid_by_hand():
    """fc = 0.5 * I with bias b; a constant channel value c gets scale relu6(0.5 c + b + 3) / 6."""
    ese = EffectiveSE(4)
    ese.fc.weight.set_data(Tensor((0.5 * np.eye(4)).reshape(4, 4, 1, 1).astype(np.float32)))
    ese.fc.bias.set_data(Tensor(np.array([-4.0, 0.0, 1.0, 2.0], np.float32)))
    c = np.array([2.0, -2.0, 1.0, 6.0], np.float32)
    x = np.broadcast_to(c[None, :, None, None], (1, 4, 3, 3)).copy()
    out = ese(Tensor(x)).asnumpy()
    # z = 0.5c + b = [-3, -1, 1.5, 5] -> relu6(z + 3) / 6 = [0, 1/3, 0.75, 1]
    expected_scale = np.array([0.0, 1.0 / 3.0, 0.75, 1.0], np.float32)
    np.testing.assert_allclose(out, x * expected_scale[None, :, None, None], rtol=1e-6)


def _zero_convs(cell):
    for _, sub in cell.cells_and_names():
        if isinstance(sub, nn.Conv2d):
            sub.weight.set_data(Tensor(np.zeros(sub.weight.shape, np.float32)))
            if sub.bias is not None:
                sub.bias.set_data(Tensor(np.zeros(sub.bias.shape, np.float32)))


def test_identity_residual_on_later_blocks_only():
    """With every conv zeroed (BN in eval mode, beta 0) the OSA branch outputs 0: the identity
    block returns its input, the first block of a stage returns zeros."""
    x = np.random.RandomState(0).randn(1, 16, 5, 5).astype(np.float32)
    later = OSAModule(16, 8, 16, num_layers=3, identity=True)
    first = OSAModule(16, 8, 16, num_layers=3, identity=False)
    for block in (later, first):
        _zero_convs(block)
        block.set_train(False)
    np.testing.assert_allclose(later(Tensor(x)).asnumpy(), x, atol=1e-6)
    np.testing.assert_allclose(first(Tensor(x)).asnumpy(), 0.0, atol=1e-6)
    spec = vovnet.VoVNetSpec(stem_ch=(8, 8, 8), stage_conv_ch=(8, 8, 8, 8), stage_out_ch=(16, 16, 16, 16),
                             blocks_per_stage=(1, 3, 1, 1), layers_per_block=2)
    stage = vovnet.OSAStage(spec, 1, 8)
    assert [b.identity for b in stage.blocks] == [False, True, True] and stage.pool is not None
    assert vovnet.OSAStage(spec, 0, 8).pool is None
    with pytest.raises(ValueError, match="vovnet.py"):
        OSAModule(8, 8, 16, num_layers=2, identity=True)


def test_depthwise_osa_parameters_by_hand():
    """Depthwise OSA 64 -> 112, stage width 80, 3 layers: 1x1 reduction 64->80 (+BN), 3 x (dw 3x3
    + pw 1x1 + BN), concat 1x1 (64 + 3*80)->112 (+BN), eSE 112->112 with bias."""
    block = OSAModule(64, 80, 112, num_layers=3, depthwise=True)
    expected = (64 * 80 + 2 * 80) + 3 * (80 * 9 + 80 * 80 + 2 * 80) \
        + (64 + 3 * 80) * 112 + 2 * 112 + 112 * 112 + 112
    assert sum(p.size for p in block.trainable_params()) == expected
    assert block.layers[0].dw_conv.group == 80
