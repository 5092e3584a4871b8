"""Convolution gradients without im2col buffers (models/layers/lean_conv.py): both gradients
against a NumPy reference and a hand-computed case, in GRAPH and PYNATIVE; only eligible layers
swapped in place, names kept, small maps left on MindSpore's own backward, and a compiled
TrainStep swapping the real model's layers on the CPU."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn, ops

from mindseg.models.layers.lean_conv import LeanBackwardConv2d, lean_conv_backward, make_lean


def conv_np(x, w, b=None):
    """Stride 1, same padding, one group: y[n, o] = sum_i correlate(x[n, i], w[o, i])."""
    n, cin, h, width = x.shape
    cout, _, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    y = np.zeros((n, cout, h, width), np.float64)
    for kh in range(k):
        for kw in range(k):
            y += np.einsum("nihw,oi->nohw", xp[:, :, kh:kh + h, kw:kw + width], w[:, :, kh, kw])
    return y if b is None else y + b[None, :, None, None]


def conv_grads_np(x, w, dy):
    """dx and dw of sum(y * dy) for y = conv_np(x, w)."""
    n, cin, h, width = x.shape
    k = w.shape[2]
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dxp = np.zeros_like(xp, np.float64)
    dw = np.zeros(w.shape, np.float64)
    for kh in range(k):
        for kw in range(k):
            dw[:, :, kh, kw] = np.einsum("nohw,nihw->oi", dy, xp[:, :, kh:kh + h, kw:kw + width])
            dxp[:, :, kh:kh + h, kw:kw + width] += np.einsum("nohw,oi->nihw", dy, w[:, :, kh, kw])
    return dxp[:, :, p:p + h, p:p + width], dw


def _twin(conv):
    """A new nn.Conv2d with ``conv``'s settings and weights."""
    twin = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, pad_mode=conv.pad_mode,
                     padding=conv.padding, has_bias=conv.has_bias)
    twin.weight.set_data(conv.weight.data.copy())
    if conv.has_bias:
        twin.bias.set_data(conv.bias.data.copy())
    return twin


def _grads(layer, x, dy):
    """(dx, dweight, dbias or None) of sum(layer(x) * dy)."""
    params = layer.trainable_params()

    def loss(inp):
        return (layer(inp) * dy).sum()

    dx, dparams = ms.grad(loss, 0, params)(x)
    return dx.asnumpy(), [g.asnumpy() for g in dparams]


@pytest.mark.parametrize("k, bias", [(3, True), (5, False)])
def test_gradients_match_numpy(mode, k, bias):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 6, 7)).astype(np.float32)
    conv = nn.Conv2d(3, 4, k, pad_mode="pad", padding=k // 2, has_bias=bias)
    layer = make_lean(_twin(conv), min_elements=0)
    assert type(layer) is LeanBackwardConv2d  # pylint: disable=unidiomatic-typecheck
    w = conv.weight.asnumpy()
    b = conv.bias.asnumpy() if bias else None
    np.testing.assert_allclose(layer(Tensor(x)).asnumpy(), conv_np(x, w, b), rtol=1e-4, atol=1e-4)
    dx, dparams = _grads(layer, Tensor(x), Tensor(dy))
    dx_ref, dw_ref = conv_grads_np(x, w, dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dparams[0], dw_ref, rtol=1e-4, atol=1e-4)
    if bias:
        np.testing.assert_allclose(dparams[1], dy.sum((0, 2, 3)), rtol=1e-4, atol=1e-4)
    # and the same as MindSpore's own backward
    dx_ms, dparams_ms = _grads(conv, Tensor(x), Tensor(dy))
    np.testing.assert_allclose(dx, dx_ms, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dparams[0], dparams_ms[0], rtol=1e-5, atol=1e-5)


def test_hand_computed_case(mode):
    """One channel, a 3x3 image 0..8, an all-ones 3x3 kernel and upstream gradient: dw[kh, kw] is
    the sum of the image under the window shifted by (kh - 1, kw - 1) (corners 0+1+3+4 = 8,
    centre 36), dx counts the windows covering each pixel (corners 4, edges 6, centre 9)."""
    conv = nn.Conv2d(1, 1, 3, pad_mode="pad", padding=1, has_bias=False)
    conv.weight.set_data(Tensor(np.ones((1, 1, 3, 3), np.float32)))
    x = Tensor(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3))
    dx, dparams = _grads(make_lean(conv, min_elements=0), x, Tensor(np.ones((1, 1, 3, 3), np.float32)))
    np.testing.assert_array_equal(dparams[0][0, 0], [[8, 15, 12], [21, 36, 27], [20, 33, 24]])
    np.testing.assert_array_equal(dx[0, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])


class _Block(nn.Cell):
    def __init__(self):
        super().__init__()
        self.body = nn.SequentialCell([
            nn.Conv2d(2, 4, 3, pad_mode="pad", padding=1),   # swapped
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2, pad_mode="pad", padding=1),  # stride 2: left
            nn.Conv2d(4, 4, 1),  # 1x1: left
            nn.Conv2d(4, 4, 3, pad_mode="same"),  # swapped
            nn.Conv2d(4, 4, 3, pad_mode="pad", padding=1, group=2),  # grouped: left
            nn.Conv2d(4, 4, 3, pad_mode="valid"),  # changes the size: left
        ])
        self.convs = nn.CellList([nn.Conv2d(4, 4, 3, pad_mode="pad", padding=1, dilation=2)])  # left

    def construct(self, x):
        return self.convs[0](self.body(x))


def test_only_eligible_layers_swapped_and_names_kept(mode):
    """The layers stay where they were (code holding ``net.body[0].weight`` still finds it)."""
    net = _Block()
    names = [p.name for p in net.get_parameters()]
    x = Tensor(np.random.default_rng(0).standard_normal((1, 2, 12, 12)).astype(np.float32))
    before = net(x).asnumpy()
    layers = list(net.body.cell_list) + [net.convs[0]]
    assert lean_conv_backward(net) == 2
    assert lean_conv_backward(net) == 0  # already swapped
    assert list(net.body.cell_list) + [net.convs[0]] == layers  # the same objects, in place
    assert [i for i, c in enumerate(layers) if isinstance(c, LeanBackwardConv2d)] == [0, 4]
    assert [p.name for p in net.get_parameters()] == names
    np.testing.assert_array_equal(net(x).asnumpy(), before)


def test_small_maps_keep_mindspore_backward(mode):
    """Below ``min_elements`` the layer itself runs: gradients bit-identical to the plain layer."""
    rng = np.random.default_rng(1)
    x, dy = (Tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32)) for _ in range(2))
    conv = nn.Conv2d(3, 3, 3, pad_mode="pad", padding=1, has_bias=True)
    plain = _grads(conv, x, dy)
    small = _grads(make_lean(_twin(conv), min_elements=3 * 8 * 8 + 1), x, dy)
    np.testing.assert_array_equal(small[0], plain[0])
    for a, b in zip(small[1], plain[1]):
        np.testing.assert_array_equal(a, b)


def _shapes_batch(cfg, rng):
    """Two canvas-size images with two boxes each, padded as the pipeline pads them."""
    h, w = cfg.data.canvas
    m, crop = cfg.data.max_instances, cfg.data.mask_crop
    boxes = np.zeros((2, m, 4), np.float32)
    boxes[:, 0], boxes[:, 1] = (10, 12, 70, 60), (40, 50, 120, 110)
    labels = np.zeros((2, m), np.int32)
    labels[:, :2] = (1, 3)
    valid = np.zeros((2, m), bool)
    valid[:, :2] = True
    masks = np.zeros((2, m, crop, crop), np.uint8)
    masks[:, :2, 4:-4, 6:-6] = 1
    return [Tensor(a) for a in (rng.standard_normal((2, 3, h, w)).astype(np.float32),
                                np.array([[h, w]] * 2, np.float32), boxes, labels, valid,
                                np.zeros_like(valid), masks)]


def test_real_model_gradients_unchanged(deterministic_sampling):
    """Mask R-CNN's shapes config with every eligible layer on the lean backward: the same
    gradients as MindSpore's own backward."""
    from mindseg.config import load_config
    from mindseg.models import build_model
    from small import SHAPES_CONFIG, SHAPES_SMALL

    cfg = load_config(SHAPES_CONFIG, SHAPES_SMALL)
    ms.set_seed(0)
    net = build_model(cfg, num_classes=5)
    net.set_train(True)
    batch = _shapes_batch(cfg, np.random.default_rng(0))
    params = net.trainable_params()

    def loss(*inputs):
        return ops.addn(list(net(*inputs)))

    def grads():
        return [g.asnumpy() for g in ms.grad(loss, None, params)(*batch)]

    native = grads()
    assert lean_conv_backward(net, min_elements=0, max_out_channels=1 << 20) > 10
    lean = grads()
    worst = max(float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12)) for a, b in zip(lean, native))
    assert worst < 1e-4, worst


@pytest.mark.parametrize("mix, max_channels", [(False, None), (False, 0), (True, None)])
def test_train_step_wraps_float32_models_on_cpu(mix, max_channels):
    """train.lean_conv_max_channels reaches a compiled TrainStep; 0, mixed precision and PYNATIVE
    steps leave the layers."""
    from mindseg.config import load_config
    from mindseg.engine.lr_schedule import LRSettings, build_lr_schedule
    from mindseg.engine.precision import apply_mixed_precision
    from mindseg.engine.train_step import TrainStep, optimizer_from_config
    from mindseg.models import build_model
    from small import SHAPES_CONFIG, SHAPES_SMALL

    overrides = [] if max_channels is None else [f"train.lean_conv_max_channels={max_channels}"]
    cfg = load_config(SHAPES_CONFIG, SHAPES_SMALL + overrides)
    net = build_model(cfg, num_classes=5)
    if mix:
        apply_mixed_precision(net)
    optimizer = optimizer_from_config(net, build_lr_schedule(LRSettings(base_lr=1e-3, reference_batch=1), 1, 4), cfg.train)
    TrainStep(net, optimizer, lean_conv_max_channels=cfg.train.lean_conv_max_channels)  # PYNATIVE
    assert not [c for _, c in net.cells_and_names() if isinstance(c, LeanBackwardConv2d)]
    TrainStep(net, optimizer, lean_conv_max_channels=cfg.train.lean_conv_max_channels, jit=True)
    wrapped = [c for _, c in net.cells_and_names() if isinstance(c, LeanBackwardConv2d)]
    if mix or max_channels == 0:
        assert not wrapped
    else:
        assert len(wrapped) > 10
        assert max(layer.out_channels for layer in wrapped) <= cfg.train.lean_conv_max_channels
