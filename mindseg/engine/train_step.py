"""One optimisation step, functional style: ``value_and_grad`` over the summed named losses,
gradient mean across ranks, optional dynamic loss scaling that skips overflowed steps.

The route ``DynamicLossScaler`` + a finiteness test + ``value_and_grad`` is the one that works on the
CPU as well as on Ascend / GPU (``TrainOneStepWithLossScaleCell`` reaches float-status ops that
the CPU lacks; docs/platform_notes.md).
"""
from dataclasses import dataclass

import mindspore as ms
from mindspore import amp, nn, ops

from mindseg.engine.precision import float16_layers
from mindseg.models.layers.lean_conv import MAX_OUT_CHANNELS, lean_conv_backward, wants_lean_conv_backward

NORM_CELLS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
              nn.InstanceNorm2d)


def _is_norm_cell(cell):
    return isinstance(cell, NORM_CELLS) or "norm" in type(cell).__name__.lower()


def param_groups(net, weight_decay, weight_decay_norm, weight_decay_bias):
    """Split the trainable parameters into optimizer groups by weight decay.

    Parameters of normalisation cells (any Cell whose class name contains 'Norm', FrozenBN
    included) get ``weight_decay_norm``; other parameters named ``*.bias`` get
    ``weight_decay_bias``; the rest ``weight_decay``. Empty groups are left out.
    """
    norm_names = set()
    for _, cell in net.cells_and_names():
        if _is_norm_cell(cell):
            norm_names.update(p.name for p in cell.get_parameters(expand=False))
    norm, bias, other = [], [], []
    for param in net.trainable_params():
        if param.name in norm_names:
            norm.append(param)
        elif param.name.endswith(".bias") or param.name == "bias":
            bias.append(param)
        else:
            other.append(param)
    groups = [{"params": other, "weight_decay": weight_decay},
              {"params": norm, "weight_decay": weight_decay_norm},
              {"params": bias, "weight_decay": weight_decay_bias}]
    return [g for g in groups if g["params"]]


OPTIMIZERS = ("sgd", "adam")


def build_optimizer(net, lr_schedule, momentum=0.9, weight_decay=1e-4, weight_decay_norm=0.0,
                    weight_decay_bias=0.0, name="sgd"):
    """SGD with momentum (``name`` "sgd") or Adam (beta 0.9 / 0.999, eps 1e-8; "adam", the
    CenterNet family's optimizer), weight decay as an L2 term per :func:`param_groups` group;
    step ``i`` uses ``lr_schedule[i]`` (the optimizer's ``global_step``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"train.optimizer: '{name}' is not one of {OPTIMIZERS}")
    groups = param_groups(net, weight_decay, weight_decay_norm, weight_decay_bias)
    if not groups:
        raise ValueError("the network has no trainable parameters")
    lr = ms.Tensor(lr_schedule, ms.float32)
    if name == "adam":
        return nn.Adam(groups, learning_rate=lr, beta1=0.9, beta2=0.999, eps=1e-8)
    return nn.Momentum(groups, learning_rate=lr, momentum=momentum)


def optimizer_from_config(net, lr_schedule, train_cfg):
    """:func:`build_optimizer` with the optimizer and weight-decay settings of a config's
    ``train`` section (what train.py and benchmark.py train with)."""
    return build_optimizer(net, lr_schedule, train_cfg.momentum, train_cfg.weight_decay,
                           train_cfg.weight_decay_norm, train_cfg.weight_decay_bias,
                           name=train_cfg.optimizer)


def global_norm(grads):
    """The L2 norm of all gradients together, one float32 scalar. It is inf or NaN when any
    gradient is (the overflow test, instead of one finiteness test per tensor), and also when
    the sum of squares passes float32's range (norms above 1.8e19: a diverged step either way).
    Each gradient is summed flat: MindSpore's CPU ReduceSum over all axes of a 4-d tensor is about
    3x slower than over the same values in one axis (docs/platform_notes.md)."""
    return ops.sqrt(ops.addn([ops.sum(ops.square(grad.astype(ms.float32).reshape(-1))) for grad in grads]))


@dataclass(frozen=True)
class LossScaleSettings:
    """Dynamic loss scaling: the loss is multiplied by a scale that starts at ``initial``, is
    divided by ``factor`` at each overflowed step (not below 1) and multiplied by it after
    ``window`` steps in a row without one."""
    initial: float
    factor: int = 2
    window: int = 1000


class TrainStep:
    """Callable ``step(*inputs) -> (total_loss, losses, finite)`` that updates ``net`` in place.

    Compiled (``jit``) on the CPU, a float32 network's same-size convolutions of up to
    ``lean_conv_max_channels`` outputs get, on large maps, gradients that keep no im2col buffer
    (``models/layers/lean_conv.py``; forward values unchanged; 0: off). PYNATIVE steps keep the
    plain layers, whose Python calls are cheaper there.

    ``losses`` is the network's tuple of named scalar losses (``net.loss_names``); ``finite`` is
    False when the gradients are not finite (a float16 overflow, or a diverging step in float32),
    in which case the weights and moments are left as they were, the loss scale (if any) is
    lowered and the step still counts (the lr schedule moves on). ``loss_scaling`` (a
    :class:`LossScaleSettings`) scales the loss dynamically, None trains without loss scaling;
    ``clip_grad_norm > 0`` clips the gradients' global norm.
    """

    def __init__(self, net, optimizer, *, world=1, loss_scaling=None, clip_grad_norm=0.0,
                 lean_conv_max_channels=MAX_OUT_CHANNELS, jit=False):
        self.net = net
        if jit and lean_conv_max_channels > 0 and wants_lean_conv_backward() and not float16_layers(net):
            lean_conv_backward(net, max_out_channels=lean_conv_max_channels)
        self.clip_grad_norm = float(clip_grad_norm)
        self.optimizer = optimizer
        self.loss_names = tuple(getattr(net, "loss_names", ()))
        self.scaler = None
        if loss_scaling is not None:
            self.scaler = amp.DynamicLossScaler(float(loss_scaling.initial), loss_scaling.factor,
                                                loss_scaling.window)
        self.reducer = None
        if world > 1:
            self.reducer = nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=world)
        self._step = self._build_step(jit)

    def _build_step(self, jit):
        net, optimizer, scaler, reducer = self.net, self.optimizer, self.scaler, self.reducer
        clip_norm = self.clip_grad_norm

        def forward(*inputs):
            losses = net(*inputs)
            total = losses[0]
            for loss in losses[1:]:
                total = total + loss
            scaled = scaler.scale(total) if scaler is not None else total
            return scaled, total, losses

        grad_fn = ms.value_and_grad(forward, None, optimizer.parameters, has_aux=True)

        def train_step(*inputs):
            (_, total, losses), grads = grad_fn(*inputs)
            if reducer is not None:
                grads = reducer(grads)
            if scaler is not None:
                grads = scaler.unscale(grads)
            norm = global_norm(grads)
            finite = ops.isfinite(norm)
            if scaler is not None:
                scaler.adjust(finite)
            if clip_norm > 0:
                scale = clip_norm / ops.maximum(norm, clip_norm)
                grads = tuple(grad * scale for grad in grads)
            if finite:
                total = ops.depend(total, optimizer(grads))
            else:
                total = ops.depend(total, ops.assign_add(optimizer.global_step,
                                                         ops.ones((1,), ms.int32)))
            return total, losses, finite

        return ms.jit(train_step) if jit else train_step

    def __call__(self, *inputs):
        return self._step(*inputs)

    @property
    def step_index(self):
        """Steps taken so far (the position in the lr schedule)."""
        return int(self.optimizer.global_step.asnumpy().reshape(-1)[0])

    @property
    def loss_scale(self):
        return float(self.scaler.scale_value.asnumpy()) if self.scaler is not None else 1.0

    def scaler_state(self):
        """``{"loss_scale", "loss_scale_counter"}`` for a checkpoint (empty without a scaler)."""
        if self.scaler is None:
            return {}
        return {"loss_scale": float(self.scaler.scale_value.asnumpy()),
                "loss_scale_counter": int(self.scaler.counter.asnumpy())}

    def load_scaler_state(self, state):
        if self.scaler is None or "loss_scale" not in state:
            return
        # assign in place: a compiled (GRAPH) step keeps reading the parameters' memory, and
        # set_data would hand them new memory that it does not see
        ops.assign(self.scaler.scale_value, ms.Tensor(float(state["loss_scale"]), ms.float32))
        ops.assign(self.scaler.counter, ms.Tensor(int(state["loss_scale_counter"]), ms.int32))
