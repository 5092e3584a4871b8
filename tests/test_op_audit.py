"""The op audit: the primitives recorded from the compiled graphs of every model
(tests/op_inventory.json, written by scripts/op_audit.py --small --json) are documented by the
installed MindSpore on Ascend and GPU or allowlisted with a reason, and no training graph has a
dynamic shape; the IR reader finds primitives, gradients and dynamic shapes in a graph MindSpore
compiles here."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from mindseg.utils.op_allowlist import ALLOWLIST, KNOWN_GAPS
from mindseg.utils.op_audit import (audit, documented_platforms, forward_of, format_table, parse_ir,
                                    read_graph)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INVENTORY = os.path.join(ROOT, "tests", "op_inventory.json")
# every model: the three shapes configs and CenterMask V-39
MODELS = {"mask_rcnn_shapes", "centermask_lite_shapes", "centermask_point_shapes",
          "centermask_V_39_eSE_FPN_ms_3x"}
GRAPHS = ("train", "train_mix", "infer", "infer_mix")

# a training step MindSpore compiles in a few seconds: a documented op, a gradient, a Python-number
# product (lowered to Muls), NMSWithMask, and masked_select (a dynamic shape)
TINY_STEP = textwrap.dedent("""
    import numpy as np
    import mindspore as ms
    from mindspore import ops

    def loss(x):
        kept = ops.masked_select(x, x > 0.5)
        boxes = ops.NMSWithMask(0.5)(ops.stop_gradient(x))[0]
        return ops.relu(x * 2.0).sum() + kept.sum() + boxes.sum()

    ms.set_context(mode=ms.GRAPH_MODE)
    step = ms.jit(ms.value_and_grad(loss))
    x = np.array([[0, 0, 4, 4, 0.9], [1, 1, 5, 5, 0.8], [9, 9, 12, 12, 0.1]], np.float32)
    print(step(ms.Tensor(x))[0])
""")


def _inventory():
    with open(INVENTORY, encoding="utf-8") as f:
        report = json.load(f)
    from collections import Counter
    return {model: {g: (Counter(v["counts"]), v["dynamic"]) for g, v in entry["graphs"].items()}
            for model, entry in report.items()}


def compiled_ir(script, work):
    """Run ``script`` (a Python source) in a subprocess with MindSpore saving the validate-pass IR
    of what it compiles; the IR folder."""
    (work / "step.py").write_text(script)
    env = dict(os.environ, MS_DEV_SAVE_GRAPHS="1", MS_DEV_SAVE_GRAPHS_PATH=str(work / "ir"),
               MS_DEV_DUMP_IR_PASSES="validate", GLOG_v="3", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, str(work / "step.py")], cwd=str(work), env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "ir"


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory):
    """The validate-pass IR of TINY_STEP."""
    return compiled_ir(TINY_STEP, tmp_path_factory.mktemp("tiny_ir"))


def test_reader_finds_primitives_gradients_and_the_dynamic_shape(tiny_ir):
    counts, dynamic = read_graph(str(tiny_ir), str(tiny_ir.parent))
    assert {"MaskedSelect", "NMSWithMask", "ReLU", "ReluGrad", "Muls"} <= set(counts)
    assert not {"TupleGetItem", "MakeTuple", "Depend", "Return"} & set(counts)  # graph plumbing
    # masked_select makes the shape dynamic, at its line of the script; its consumers do not count
    assert list(dynamic) == ["MaskedSelect"], dynamic
    assert dynamic["MaskedSelect"] == ["step.py:7"]  # kept = ops.masked_select(...)


def test_audit_fails_on_a_dynamic_training_graph_and_lists_it_for_inference(tiny_ir):
    graph = read_graph(str(tiny_ir))
    _, problems = audit({"train": graph}, ALLOWLIST, training_graphs=("train",))
    assert [p.split(":")[0] for p in problems] == ["MaskedSelect"]
    assert "dynamic shape in the training graph train" in problems[0]
    _, problems = audit({"infer": graph}, ALLOWLIST, training_graphs=())
    assert problems == []


# the gradients of three parts whose former forms MindSpore lowered to primitives it documents
# on Ascend only: the mask-IoU loss (ops.square: PowTensorScalar), class-aware NMS's offset
# (Tensor.max(): Max) and SAG-Mask's channel max (Tensor.max(axis): InplaceScatterSrc)
ASCEND_ONLY_STEP = textwrap.dedent("""
    import numpy as np
    import mindspore as ms
    from mindspore import ops
    from mindseg.models.layers.nms import batched_nms
    from mindseg.models.roi_heads.mask_head import SpatialAttention
    from mindseg.models.roi_heads.maskiou_head import maskiou_loss

    attention = SpatialAttention()

    def loss(boxes, pred_maskiou, features):
        scores = boxes[..., 2] - boxes[..., 0]
        keep, kept = batched_nms(boxes, scores, scores > 0, 0.5, 3, classes=ops.zeros((1, 4), ms.int32))
        box_sum = (boxes[0][keep[0]].sum(-1) * kept[0].astype(ms.float32)).sum()
        iou = maskiou_loss(pred_maskiou, ms.Tensor([1, 0], ms.int32), ms.Tensor([0.5, 0.7]),
                           ms.Tensor([True, True]))
        return box_sum + iou + attention(features).sum()

    ms.set_context(mode=ms.GRAPH_MODE)
    step = ms.jit(ms.value_and_grad(loss, grad_position=(0, 1, 2)))
    boxes = np.array([[[0, 0, 4, 4], [1, 1, 5, 5], [9, 9, 12, 12], [0, 0, 3, 3]]], np.float32)
    features = np.random.default_rng(0).random((2, 4, 5, 5), np.float32)
    print(step(ms.Tensor(boxes), ms.Tensor(np.full((2, 3), 0.6, np.float32)), ms.Tensor(features))[0])
""")


def test_maskiou_loss_nms_and_attention_gradients_use_documented_primitives(tmp_path):
    counts, dynamic = read_graph(str(compiled_ir(ASCEND_ONLY_STEP, tmp_path)), ROOT)
    assert {"NMSWithMask", "Mul"} <= set(counts)  # the graph is the one meant
    assert not {"PowTensorScalar", "InplaceScatterSrc", "Max"} & set(counts), sorted(counts)
    rows, problems = audit({"train": (counts, dynamic)}, ALLOWLIST, ("train",))
    assert problems == [] and not [row for row in rows if row["known_gap"]]

def test_platforms_come_from_the_docstrings():
    assert documented_platforms("NMSWithMask") == (("Ascend", "GPU", "CPU"), "docstring")
    assert documented_platforms("ReLU") == (("Ascend", "GPU", "CPU"), "ops.relu")  # "Refer to"
    assert forward_of("Conv2DBackpropFilter") == "Conv2D"
    assert forward_of("MaxPoolGradWithArgmaxV2") == "MaxPoolWithArgmaxV2"
    assert documented_platforms("ReluGrad")[1] == "forward ReLU"
    assert documented_platforms("ZerosLikeExt")[0] == ("Ascend",)
    assert documented_platforms("NoSuchPrimitive") == (None, "undocumented")


def test_undocumented_and_single_platform_primitives_fail_unless_allowlisted():
    from collections import Counter
    graph = (Counter({"NoSuchPrimitive": 1, "ZerosLikeExt": 2, "ReLU": 3}), {})
    _, problems = audit({"train": graph}, {}, training_graphs=("train",))
    assert sorted(problems) == ["NoSuchPrimitive: undocumented (in train)",
                                "ZerosLikeExt: not documented on GPU (in train)"]
    _, problems = audit({"train": graph}, ALLOWLIST, training_graphs=("train",))
    assert problems == ["NoSuchPrimitive: undocumented (in train)"]


def test_ir_lines_parse_with_the_innermost_mindseg_source():
    text = textwrap.dedent("""\
          %3(CNode_9) = PrimFunc_MaskedSelect(%1, %2) cnode_attrs: {checkpoint: Bool(1)}
              : (<Tensor[Float32], (4, 5)>, <Tensor[Bool], (4, 5)>) -> (<Tensor[Float32], (-1)>)
              # In file /src/mindseg/models/a.py:10, 4~9/    outer/
              # In file /src/mindseg/models/b.py:20, 4~9/    inner/
              # In file /site-packages/mindspore/ops/x.py:5/    library/
          %4(CNode_10) = PrimFunc_SumExt(%3, None, Bool(0), None)
              : (<Tensor[Float32], (-1)>, <None, NoShape>) -> (<Tensor[Float32], ()>)
          %5(CNode_11) = NMSWithMask(%0) primitive_attrs: {iou_threshold: F32(0.5)}
              : (<Tensor[Float32], (4, 5)>) -> (<Tuple[Tensor[Float32]], TupleShape((4, 5), (4), (4))>)
    """)
    assert parse_ir(text, "/src") == [("MaskedSelect", True, "mindseg/models/b.py:20"),
                                      ("SumExt", False, ""), ("NMSWithMask", False, "")]


def test_every_models_graphs_are_recorded_documented_and_static():
    graphs = _inventory()
    assert MODELS <= set(graphs)
    used, gaps = set(), set()
    for model, model_graphs in graphs.items():
        assert set(model_graphs) == set(GRAPHS), model
        assert all(counts for counts, _ in model_graphs.values()), model
        rows, problems = audit(model_graphs, ALLOWLIST, ("train", "train_mix"), KNOWN_GAPS)
        assert problems == [], (model, problems)
        used |= {row["primitive"] for row in rows if row["allowlisted"]}
        gaps |= {row["primitive"] for row in rows if row["known_gap"]}
        assert "primitive" in format_table(rows, GRAPHS).splitlines()[0]
    # every allowlist entry is needed and says what runs on each device; the known gaps are
    # exactly the ones found (a new one, or one that is gone, changes this test)
    assert used == set(ALLOWLIST)
    assert gaps == set(KNOWN_GAPS)
    for prim, entry in {**ALLOWLIST, **KNOWN_GAPS}.items():
        assert entry["reason"] and entry["Ascend"] and entry["GPU"], prim
