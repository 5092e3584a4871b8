"""Mixed precision with explicit float16 / float32 boundaries, for training, eval and export.

What runs in float16 follows MindSpore's O1 white list of cells: every convolution and dense
(matmul) layer of the network casts its input and its weights to float16, computes, and hands
float32 back. Everything else stays float32: normalisation and its statistics, activations
between layers, anchors, box encoding and decoding, RoI pooling geometry, sampling, losses and the
optimizer's master weights. MindSpore's own levels do not fit a detector: ``auto`` and O1 (rewrite)
also cast functional matmuls of the box / pooling arithmetic (a custom bprop then meets a float16
gradient and a float32 weight), O2 / O3 cast the ground-truth boxes and the losses.

The wrapping keeps every parameter's name, so mixed and float32 runs read each other's checkpoints.
"""
import mindspore as ms
from mindspore import amp, nn

AMP_LEVELS = ("O1",)
FLOAT16_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Conv1dTranspose, nn.Conv2dTranspose,
                  nn.Conv3dTranspose, nn.Dense)


class Float16Layer(nn.Cell):
    """One convolution / dense layer computing in float16 (inputs and weights cast by MindSpore's
    ``auto`` strategy), its output cast back to float32. No name prefix of its own."""

    def __init__(self, layer):
        super().__init__(auto_prefix=False)
        self.layer = amp.auto_mixed_precision(layer, "auto")

    def construct(self, x):
        return self.layer(x).astype(ms.float32)


def _wrap_layers(cell):
    """Replace every FLOAT16_LAYERS child below ``cell`` (in place); returns how many."""
    count = 0
    changed = False
    for name, child in list(cell._cells.items()):  # pylint: disable=protected-access
        if child is None or isinstance(child, Float16Layer):
            continue
        if isinstance(child, FLOAT16_LAYERS):
            cell._cells[name] = Float16Layer(child)  # pylint: disable=protected-access
            count += 1
            changed = True
        else:
            count += _wrap_layers(child)
    if changed and isinstance(cell, nn.SequentialCell):
        cell.cell_list = list(cell.cells())
    return count


def apply_mixed_precision(net, amp_level="O1"):
    """Run ``net``'s convolution and dense layers in float16 (in place); returns ``net``.

    ``amp_level`` is ``train.amp_level``; O1 is the only level (see the module docstring for why
    MindSpore's ``auto``, O2 and O3 are refused).
    """
    if amp_level not in AMP_LEVELS:
        raise ValueError(f"train.amp_level must be one of {AMP_LEVELS}, got {amp_level!r}: "
                         f"'auto', O2 and O3 would cast box geometry, ground truth or losses to "
                         f"float16")
    _wrap_layers(net)
    return net


def float16_layers(net):
    """The float16-wrapped layers of ``net`` (empty for a float32 network)."""
    return [cell for _, cell in net.cells_and_names() if isinstance(cell, Float16Layer)]


def for_inference(net, cfg):
    """``net`` with float16 layers when ``--mix True`` / ``train.mix`` is set (eval, infer, export;
    no loss scaling there), else unchanged. Call after loading the weights."""
    if cfg.train.mix:
        apply_mixed_precision(net, cfg.train.amp_level)
    return net
