"""FPN: identity convs turn it into the top-down sum, checked against NumPy in both modes."""
import mindspore as ms
import numpy as np
import pytest

from mindseg.models.necks.fpn import FPN, level_shapes


def _make_identity(fpn, channels):
    for conv in fpn.lateral_convs:
        conv.weight.set_data(ms.Tensor(np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)))
    for conv in fpn.output_convs:
        kernel = np.zeros((channels, channels, 3, 3), np.float32)
        kernel[np.arange(channels), np.arange(channels), 1, 1] = 1.0
        conv.weight.set_data(ms.Tensor(kernel))


def _numpy_fpn(features):
    """Top-down: P5 = C5, Pi = Ci + nearest-x2(P(i+1)); P6 = P5[::2, ::2]."""
    outputs = [features[-1]]
    for feature in reversed(features[:-1]):
        outputs.insert(0, feature + outputs[0].repeat(2, axis=2).repeat(2, axis=3))
    return outputs + [outputs[-1][:, :, ::2, ::2]]


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_identity_fpn_is_top_down_sum(mode):
    ms.set_context(mode=mode)
    channels = 4
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(2, channels, 16 // 2 ** i, 24 // 2 ** i)).astype(np.float32) for i in range(4)]
    fpn = FPN(in_channels=[channels] * 4, in_strides=[4, 8, 16, 32], out_channels=channels, top_block="maxpool")
    _make_identity(fpn, channels)
    outputs = fpn(tuple(ms.Tensor(f) for f in features))
    expected = _numpy_fpn(features)
    assert len(outputs) == 5
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5, atol=1e-5)
    ms.set_context(mode=ms.PYNATIVE_MODE)


def test_hand_computed_two_levels():
    fpn = FPN(in_channels=[1, 1], in_strides=[4, 8], out_channels=1, top_block="none")
    _make_identity(fpn, 1)
    fine = np.zeros((1, 1, 2, 2), np.float32)
    fine[0, 0, 0, 1] = 10.0
    coarse = np.full((1, 1, 1, 1), 3.0, np.float32)
    p_fine, p_coarse = fpn((ms.Tensor(fine), ms.Tensor(coarse)))
    np.testing.assert_allclose(p_fine.asnumpy()[0, 0], [[3.0, 13.0], [3.0, 3.0]])
    np.testing.assert_allclose(p_coarse.asnumpy()[0, 0], [[3.0]])


def test_p6p7_levels_and_strides():
    fpn = FPN(in_channels=[8, 16, 32], in_strides=[8, 16, 32], out_channels=8, top_block="p6p7")
    features = tuple(ms.Tensor(np.ones((1, c, 16 // 2 ** i, 16 // 2 ** i), np.float32)) for i, c in enumerate([8, 16, 32]))
    outputs = fpn(features)
    assert [o.shape[-1] for o in outputs] == [16, 8, 4, 2, 1]
    assert fpn.strides == [8, 16, 32, 64, 128]
    assert [tuple(o.shape[-2:]) for o in outputs] == level_shapes((128, 128), fpn.strides)
    assert fpn.p6.in_channels == 8
    with pytest.raises(ValueError, match="top_block"):
        FPN(in_channels=[8], in_strides=[8], out_channels=8, top_block="p6")
    with pytest.raises(ValueError, match="2 input channels but 1 strides"):
        FPN(in_channels=[8, 16], in_strides=[8], out_channels=8)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_maxpool_level_gradient_picks_every_other_p5_pixel(mode):
    """d sum(P6) / d C5 on the identity FPN is 1 at even (row, col) of C5 and 0 elsewhere. Regression:
    P6 as P5[:, :, ::2, ::2] made the first PYNATIVE backward fail on the CPU (StridedSliceGrad
    'input memory out of bounds'); odd sizes (3 x 5 -> 2 x 3) included."""
    ms.set_context(mode=mode)
    channels = 2
    rng = np.random.default_rng(1)
    fine = [ms.Tensor(rng.normal(size=(2, channels, 24 // 2 ** i, 40 // 2 ** i)).astype(np.float32))
            for i in range(3)]
    c5 = ms.Tensor(rng.normal(size=(2, channels, 3, 5)).astype(np.float32))
    fpn = FPN(in_channels=[channels] * 4, in_strides=[4, 8, 16, 32], out_channels=channels, top_block="maxpool")
    _make_identity(fpn, channels)

    def p6_sum(top):
        return fpn(tuple(fine) + (top,))[-1].sum()

    try:
        grad = ms.grad(p6_sum)(c5).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    expected = np.zeros((2, channels, 3, 5), np.float32)
    expected[:, :, ::2, ::2] = 1.0
    np.testing.assert_allclose(grad, expected, atol=1e-6)
