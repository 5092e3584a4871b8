"""Counter-based random numbers for the samplers (RPN anchors, RoIs), so that resume is exact.

A draw is a hash of (seed, step counter, stream, element index), not the output of a stateful
kernel: MindSpore's random ops keep their state inside the kernel (GRAPH) or in a Python counter
(PYNATIVE), which no checkpoint holds, so a resumed run drew other samples than the uninterrupted
one. Here the whole random state of a training step is one int32 counter, a non-trainable
parameter of the network that every checkpoint saves and restores. The hash is Chris Wellons'
``lowbias32``, written with int32 wrap-around arithmetic (the same numbers in both modes).
"""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Parameter, Tensor

COUNTER_NAME = "sample_counter"
_M1 = 0x7FEB352D
_M2 = 0x846CA68B - (1 << 32)  # the uint32 constant as the int32 with the same bits


def _shift_right(x, bits):
    """Logical right shift of int32 bit patterns."""
    return ops.bitwise_and(ops.bitwise_right_shift(x, bits), (1 << (32 - bits)) - 1)


def hash32(x):
    """int32 -> int32, a bijection that mixes every input bit into every output bit."""
    x = ops.bitwise_xor(x, _shift_right(x, 16)) * _M1
    x = ops.bitwise_xor(x, _shift_right(x, 15)) * _M2
    return ops.bitwise_xor(x, _shift_right(x, 16))


def uniform(shape, key, stream):
    """float32 noise in [0, 1) of ``shape`` for int32 ``key`` (shape (1,)) and int ``stream``."""
    size = 1
    for dim in shape:
        size *= dim
    index = ops.arange(0, size, dtype=ms.int32).reshape(shape)
    base = hash32(key * 2 + hash32(ops.fill(ms.int32, (1,), stream)))
    bits = hash32(index + base.reshape((1,) * (len(shape) - 1) + (1,)))
    return _shift_right(bits, 8).astype(ms.float32) * (1.0 / (1 << 24))


class StepRandom(nn.Cell):
    """``key = step_random()``: the key of this training step's draws; advances the counter."""

    def __init__(self, seed=0):
        super().__init__()
        self.seed = int(seed) % (1 << 31)
        self.sample_counter = Parameter(Tensor([0], ms.int32), name=COUNTER_NAME, requires_grad=False)

    def construct(self):
        key = hash32(self.sample_counter + self.seed)
        return ops.depend(key, ops.assign_add(self.sample_counter, ops.ones((1,), ms.int32)))
