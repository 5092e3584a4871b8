"""Convolution gradients that keep no im2col buffer, for training on the CPU.

MindSpore's CPU convolution runs oneDNN's GEMM-based kernels (plain NCHW layout), and every
backward-data and backward-weights node of a compiled training graph keeps its own im2col
scratchpad for the life of the graph: about 18 times the layer's input map for a 3x3 convolution.
At COCO size that, not the activations, is most of a training step's memory (the figures are in
docs/platform_notes.md).

For a k x k convolution with stride 1, "same" padding and one group both gradients are forward
convolutions, whose kernels keep no such buffer:

- dx = conv(dy, w flipped in space, in and out channels swapped), same padding;
- dw[o, i] = correlation of image channel i with output channel o over the map, which is a
  convolution with the input channels as the batch, the image as one input channel and dy as a
  kernel of the map's size (output k x k), done image by image.

The weights' gradient this way reads the output gradient once per input channel, which costs
little next to oneDNN's own for narrow layers and much for wide ones. ``lean_conv_backward``
therefore switches only layers of at most ``MAX_OUT_CHANNELS`` outputs whose input map is large
(``MIN_ELEMENTS`` per image, checked when the graph is built): the backbones' early stages, where
the maps are largest. Other layers, and every layer's forward pass, are untouched, and so are
their results. The buffers are those of oneDNN, the CPU's kernels: ``TrainStep`` applies this to
compiled training steps on the CPU only.
"""
import mindspore as ms
from mindspore import nn, ops

__all__ = ["LeanConvGrad", "LeanBackwardConv2d", "make_lean", "lean_conv_backward", "MIN_ELEMENTS",
           "MAX_OUT_CHANNELS"]

# one 128-channel map of 32768 pixels (a stride-4 level of a 512 x 1024 canvas, say); below it the
# im2col buffers are small and oneDNN's backward is faster
MIN_ELEMENTS = 1 << 22
# the weights' gradient as a correlation reads the output gradient once per input channel: cheap
# next to oneDNN's for narrow layers, a much slower step when the 256-channel FPN and head layers
# use it too (train.lean_conv_max_channels; the figures are in docs/benchmarks.md)
MAX_OUT_CHANNELS = 128


class LeanConvGrad(nn.Cell):
    """``conv(x, w)`` for a square odd kernel, stride 1, same padding, one group; its backward is
    two forward convolutions (module docstring). No parameters of its own: the weight is an input."""

    def construct(self, x, w):
        k = w.shape[2]
        return ops.Conv2D(w.shape[0], k, pad_mode="pad", pad=k // 2)(x, w)

    def bprop(self, x, w, out, dout):
        cout, cin, k, _ = w.shape
        w_flipped = ops.flip(w, (2, 3)).transpose(1, 0, 2, 3)
        dx = ops.Conv2D(cin, k, pad_mode="pad", pad=k // 2)(dout, w_flipped)
        n, _, h, width = x.shape
        correlate = ops.Conv2D(cout, (h, width), pad_mode="pad", pad=k // 2)
        dw = None
        for i in range(n):
            image = x if n == 1 else x[i:i + 1]
            grad = dout if n == 1 else dout[i:i + 1]
            part = correlate(image.reshape(cin, 1, h, width), grad.reshape(cout, 1, h, width))
            dw = part if dw is None else dw + part
        return dx, dw.transpose(1, 0, 2, 3)


class LeanBackwardConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose gradient goes through ``LeanConvGrad`` when its input map holds at
    least ``min_elements`` values per image; otherwise, and always for the forward values, it is
    the plain layer. Made from a built layer by ``make_lean``, which keeps the object, its
    attributes and its parameters' names (code holding ``net.conv.weight`` still finds it)."""

    def construct(self, x):
        if x.shape[1] * x.shape[2] * x.shape[3] < self.min_elements:
            y = self.conv2d(x, self.weight)
        else:
            y = self.grad_cell(x, self.weight)
        if self.has_bias:
            y = self.bias_add(y, self.bias)
        return y


def make_lean(layer, min_elements=None):
    """Turn the ``nn.Conv2d`` ``layer`` into a LeanBackwardConv2d in place; returns it."""
    layer.__class__ = LeanBackwardConv2d
    layer.min_elements = MIN_ELEMENTS if min_elements is None else min_elements
    layer.grad_cell = LeanConvGrad()
    return layer


def _eligible(layer, max_out_channels):
    """A plain convolution whose gradients LeanConvGrad computes (square odd kernel above 1,
    stride 1, no dilation, one group, NCHW, padding that keeps the size), at most
    ``max_out_channels`` wide."""
    if type(layer) is not nn.Conv2d:  # pylint: disable=unidiomatic-typecheck
        return False
    if layer.out_channels > max_out_channels:
        return False
    k = layer.kernel_size[0]
    if layer.kernel_size != (k, k) or k % 2 == 0 or k == 1:
        return False
    if tuple(layer.stride) != (1, 1) or tuple(layer.dilation) != (1, 1) or layer.group != 1:
        return False
    if layer.data_format != "NCHW":
        return False
    if layer.pad_mode == "same":
        return True
    padding = layer.padding if isinstance(layer.padding, tuple) else (layer.padding,) * 4
    return layer.pad_mode == "pad" and padding == (k // 2,) * 4


def lean_conv_backward(net, min_elements=None, max_out_channels=MAX_OUT_CHANNELS):
    """``make_lean`` every eligible ``nn.Conv2d`` of ``net`` with at most ``max_out_channels``
    outputs; returns how many. For float32 networks: a float16 layer (``engine/precision.py``)
    holds an ``nn.Conv2d`` too, and its casts would not reach ``LeanConvGrad``."""
    layers = [cell for _, cell in net.cells_and_names() if _eligible(cell, max_out_channels)]
    for layer in layers:
        make_lean(layer, min_elements)
    return len(layers)


def wants_lean_conv_backward():
    """True where the CPU's convolution kernels keep im2col buffers (module docstring)."""
    return ms.get_context("device_target") == "CPU"
