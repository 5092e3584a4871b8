"""Primitives the op audit (scripts/op_audit.py) lets pass although the installed MindSpore does
not document them on both Ascend and GPU, each with why the graph is still portable and what
runs in its place on each device.

Every entry today is a primitive that MindSpore's graph compiler emits by itself for a documented
public operation written in mindseg (a Python operator on a Tensor, a Tensor method, the
backward of ``ops.concat``) or in MindSpore's own code (``amp.DynamicLossScaler``): the
documented operation is what mindseg asks for, and its ``Supported Platforms`` list Ascend, GPU
and CPU. That the device compiles the lowered form is checked by scripts/device_check.py on the
device (docs/platforms.md says where it has run).
"""

_LOWERED = ("MindSpore's graph compiler lowers {op} to this primitive on every backend; {op} is "
            "documented on Ascend, GPU and CPU")

# primitive -> {"reason": why it is safe, "Ascend": what runs there, "GPU": what runs there}
ALLOWLIST = {
    "Muls": {"reason": _LOWERED.format(op="Tensor * Python number (ops.mul)"),
             "Ascend": "Muls", "GPU": "Mul with the scalar as a tensor"},
    "Divs": {"reason": _LOWERED.format(op="Tensor / Python number (ops.div)"),
             "Ascend": "Divs", "GPU": "Div with the scalar as a tensor"},
    "EqScalar": {"reason": _LOWERED.format(op="Tensor == Python number (ops.equal)"),
                 "Ascend": "EqScalar", "GPU": "Equal"},
    "LessScalar": {"reason": _LOWERED.format(op="Tensor < Python number (ops.less)"),
                   "Ascend": "LessScalar", "GPU": "Less"},
    "RemainderTensorScalar": {
        "reason": _LOWERED.format(op="amp.DynamicLossScaler.adjust's counter % window (ops.remainder)"),
        "Ascend": "RemainderTensorScalar", "GPU": "FloorMod"},
    "InplaceAddExt": {"reason": _LOWERED.format(op="mindcv ResNet's residual `out += identity` (ops.add)"),
                      "Ascend": "InplaceAddExt", "GPU": "Add"},
    "SplitWithSize": {"reason": _LOWERED.format(op="the backward of ops.concat (ops.split)"),
                      "Ascend": "SplitWithSize", "GPU": "Split"},
    "SubScalar": {"reason": _LOWERED.format(op="Python number - Tensor (ops.sub)"),
                  "Ascend": "SubScalar", "GPU": "Sub with the scalar as a tensor"},
    "ZerosLikeExt": {"reason": _LOWERED.format(op="ops.where with a Python number branch (ops.zeros_like)"),
                     "Ascend": "ZerosLikeExt", "GPU": "ZerosLike"},
}

# Primitives the audit found that are not shown safe on a device: MindSpore does not document them
# there and no replacement is known to run. The audit reports them as known gaps instead of
# failing, and fails when the set changes (a new gap, or one that is gone and must be taken off
# this list). scripts/device_check.py on the device settles each one.
KNOWN_GAPS = {}  # none today: every audited primitive is documented on both, or allowlisted above
