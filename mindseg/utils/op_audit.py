"""Which MindSpore primitives a compiled graph holds, and whether Ascend and GPU run them.

MindSpore writes the graphs it compiles as text IR when ``MS_DEV_SAVE_GRAPHS`` is set; the
``validate`` pass (``*_validate_*.ir``) is the last device-independent form of a graph: forward,
backward and optimizer inlined into primitives, before any backend picks kernels. Each node reads
``%3(CNode_7) = PrimFunc_Add(%1, %2) ...`` (older primitives without the ``PrimFunc_`` prefix),
its next line ``: (input abstracts) -> (output abstracts)``, where a dimension of -1 (or a rank of
-2) is only known at run time.

A primitive's platforms are the ``Supported Platforms:`` its docstring in the installed
MindSpore lists (following "Refer to :func:`mindspore.ops.x`" to the function's docstring). A
gradient primitive (``XGrad``, ``Conv2DBackpropInput``) is not documented by itself: it is the
backward kernel MindSpore registers with its forward primitive, so it takes the forward's
platforms, and the table says so. Graph plumbing (tuples, monads, control flow) is not a kernel
and is left out.
"""
import glob
import os
import re
from collections import Counter, defaultdict

PLATFORMS = ("Ascend", "GPU", "CPU")
# nodes that are graph structure, not kernels: every backend handles them in its graph compiler
STRUCTURE = {
    "TupleGetItem", "MakeTuple", "Depend", "UpdateState", "Load", "Return", "Switch", "Partial",
    "ListGetItem", "MakeList", "StopGradient", "make_tuple", "tuple_getitem", "J", "ZerosLike",
    "TupleSetItem", "ListSetItem", "MakeDict", "DictGetItem", "EnvironCreate", "EnvironGet",
    "EnvironSet", "EnvironAdd", "MakeSlice", "SwitchLayer", "Assign_monad", "RealTupleGetItem",
    "RealMakeTuple", "TupleToTensor", "ScalarToTensor", "TensorToScalar", "TensorToTuple",
    "ScalarAdd", "ScalarSub", "ScalarMul", "ScalarDiv", "ScalarFloorDiv", "ScalarMod",
    "ScalarEq", "ScalarLt", "ScalarGt", "ScalarLe", "ScalarGe", "ScalarBool", "ScalarCast",
    "BoolNot", "BoolAnd", "BoolOr", "BoolEq", "Shape", "TensorShape", "DType", "sequence_len",
    "SequenceLen", "tuple_len", "IsInstance", "Select_monad", "make_list", "list_getitem",
    "ShapeCalc",  # host-side shape arithmetic MindSpore adds around a dynamic shape
}
_NODE = re.compile(r"^\s*%\d+\([^)]*\) = (?:PrimFunc_)?([A-Za-z_][A-Za-z0-9_]*)\(")
_ABSTRACT = re.compile(r"^\s*: \((.*)\) -> \((.*)\)\s*$")
_DYNAMIC = re.compile(r"\((?:[-\d, ]*)?-[12](?:[-\d, ]*)?\)")
_SYMBOL = re.compile(r"\bs\d+<")
_SOURCE = re.compile(r"# In file (\S+?):(\d+)")
_PLATFORMS_DOC = re.compile(r"Supported Platforms:\s*\n((?:[ \t]*``\w+``[ \t]*)+)")
_REFER = re.compile(r"Refer to :func:`mindspore\.(?:ops|mint)\.([\w.]+)`")
_GRAD_SUFFIXES = ("BackpropInput", "BackpropFilter", "Backprop", "Backward", "GradV2", "GradExt", "Grad")
# gradient primitives whose forward is not their name less a suffix
_GRAD_FORWARD = {"BinaryCrossEntropyWithLogitsBackward": "BCEWithLogitsLoss"}


def parse_ir(text, root=None):
    """Nodes of one IR text: ``[(primitive, dynamic_origin, where)]``. ``dynamic_origin`` is True
    for a node whose output has a run-time dimension while none of its inputs has one (the node
    that makes the shape dynamic); ``where`` is the innermost mindseg source line that led to it
    (relative to ``root`` when given), or ''."""
    nodes = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _NODE.match(line)
        if not match:
            continue
        shapes, where = [], ""
        for follow in lines[i + 1:i + 40]:
            if _NODE.match(follow) or follow.startswith("}"):
                break
            abstract = _ABSTRACT.match(follow)
            if abstract:
                shapes.append((abstract.group(1), abstract.group(2)))
            source = _SOURCE.search(follow)
            if source and "site-packages" not in source.group(1):
                path = source.group(1)
                where = f"{os.path.relpath(path, root) if root else path}:{source.group(2)}"
        nodes.append((match.group(1), _makes_dynamic(shapes), where))
    return nodes


def _makes_dynamic(shapes):
    """True when a node's output shape is known only at run time and its inputs' are not.
    ``shapes``: its ``(inputs, outputs)`` lines, the abstract one and, when MindSpore's symbol
    engine ran, the symbolic one (``S:[s1<[1,inf]>]``), which knows more: a -1 there that the
    symbol engine resolved to a number is static."""
    if not shapes:
        return False
    inputs, outputs = shapes[-1]
    if inputs.startswith("S:") or outputs.startswith("S:"):
        return bool(_SYMBOL.search(outputs)) and not _SYMBOL.search(inputs)
    return bool(_DYNAMIC.search(outputs)) and not _DYNAMIC.search(inputs)


def validate_ir_files(folder):
    """The ``validate``-pass IR files MindSpore wrote into ``folder`` (one per compiled graph)."""
    return sorted(glob.glob(os.path.join(folder, "**", "*_validate_*.ir"), recursive=True))


def read_graph(folder, root=None):
    """``(Counter primitive -> nodes, {primitive: [where, ...]} of dynamic-shape origins)`` over
    the validate IR files in ``folder``; structural nodes left out."""
    counts, dynamic = Counter(), defaultdict(list)
    for path in validate_ir_files(folder):
        with open(path, encoding="utf-8", errors="replace") as f:
            for prim, is_dynamic, where in parse_ir(f.read(), root):
                if prim in STRUCTURE:
                    continue
                counts[prim] += 1
                if is_dynamic and where not in dynamic[prim]:
                    dynamic[prim].append(where)
    return counts, dict(dynamic)


def _doc_platforms(doc):
    match = _PLATFORMS_DOC.search(doc or "")
    if not match:
        return None
    return tuple(p for p in PLATFORMS if f"``{p}``" in match.group(1))


def _find_attribute(name, modules):
    import importlib
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        value = getattr(module, name, None)
        if value is not None:
            return value
    return None


PRIMITIVE_MODULES = ("mindspore.ops.operations", "mindspore.ops.auto_generate",
                     "mindspore.ops.operations._inner_ops", "mindspore.ops.operations._grad_ops",
                     "mindspore.ops.operations.nn_ops", "mindspore.ops.operations.array_ops",
                     "mindspore.ops.operations.math_ops", "mindspore.ops.operations.other_ops",
                     "mindspore.ops.operations.comm_ops")
FUNCTION_MODULES = ("mindspore.ops", "mindspore.mint", "mindspore.ops.auto_generate",
                    "mindspore.ops.function", "mindspore.mint.nn.functional")


def documented_platforms(prim):
    """``(platforms, source)`` the installed MindSpore documents for primitive ``prim``:
    platforms a tuple of PLATFORMS names (None when undocumented); source says where they come
    from ('docstring', 'ops.x', 'forward X')."""
    cls = _find_attribute(prim, PRIMITIVE_MODULES)
    if cls is not None:
        doc = cls.__doc__ or ""
        platforms = _doc_platforms(doc)
        if platforms is not None:
            return platforms, "docstring"
        refer = _REFER.search(doc)
        if refer:
            func = _find_attribute(refer.group(1).split(".")[-1], FUNCTION_MODULES)
            platforms = _doc_platforms(getattr(func, "__doc__", ""))
            if platforms is not None:
                return platforms, f"ops.{refer.group(1)}"
    forward = forward_of(prim)
    if forward:
        platforms, _ = documented_platforms(forward)
        if platforms is not None:
            return platforms, f"forward {forward}"
    return None, "undocumented"


def forward_of(prim):
    """The forward primitive a gradient primitive belongs to (``ReluGrad`` -> ``ReLU``,
    ``MaxPoolGradWithArgmaxV2`` -> ``MaxPoolWithArgmaxV2``), or None."""
    if prim in _GRAD_FORWARD:
        return _GRAD_FORWARD[prim]
    if "Grad" in prim and not prim.endswith("Grad"):
        candidate = prim.replace("Grad", "", 1)
        if _find_attribute(candidate, PRIMITIVE_MODULES) is not None:
            return candidate
    for suffix in _GRAD_SUFFIXES:
        if prim.endswith(suffix) and len(prim) > len(suffix):
            stem = prim[:-len(suffix)]
            for candidate in (stem, stem.rstrip("_"), stem.replace("Relu", "ReLU"), stem + "V2"):
                if _find_attribute(candidate, PRIMITIVE_MODULES) is not None:
                    return candidate
    return None


def audit(graphs, allowlist, training_graphs=(), known_gaps=None):
    """Check the recorded graphs. ``graphs``: ``{graph name: (counts, dynamic)}`` from
    :func:`read_graph`; ``allowlist``: ``{primitive: {"reason", "Ascend", "GPU"}}``;
    ``training_graphs``: names whose dynamic shapes are failures; ``known_gaps``: primitives known
    not to run on a device (same form as ``allowlist``), reported in their rows, not as problems.

    Returns ``(rows, problems)``: one row per primitive (name, counts per graph, platforms,
    source, allowlisted reason, known gap), and the list of one-line problems (empty when all is
    well).
    """
    known_gaps = known_gaps or {}
    names = sorted(set().union(*(counts for counts, _ in graphs.values())) if graphs else ())
    rows, problems = [], []
    for prim in names:
        platforms, source = documented_platforms(prim)
        allowed = allowlist.get(prim)
        row = {"primitive": prim, "counts": {g: graphs[g][0].get(prim, 0) for g in graphs},
               "platforms": platforms or (), "source": source,
               "allowlisted": allowed["reason"] if allowed else "",
               "known_gap": known_gaps[prim]["reason"] if prim in known_gaps else ""}
        rows.append(row)
        missing = [p for p in ("Ascend", "GPU") if p not in (platforms or ())]
        if missing and not allowed and prim not in known_gaps:
            used = ", ".join(g for g in graphs if graphs[g][0].get(prim))
            why = "undocumented" if platforms is None else f"not documented on {'/'.join(missing)}"
            problems.append(f"{prim}: {why} (in {used})")
    for graph in training_graphs:
        for prim, places in graphs.get(graph, ({}, {}))[1].items():
            problems.append(f"{prim}: dynamic shape in the training graph {graph} "
                            f"(from {', '.join(places) or 'MindSpore internals'})")
    return rows, problems


def format_table(rows, graph_names):
    """The audit as a fixed-width text table: primitive, count per graph, Ascend, GPU, CPU."""
    head = ["primitive"] + list(graph_names) + list(PLATFORMS) + ["from"]
    body = []
    for row in rows:
        marks = ["yes" if p in row["platforms"] else "-" for p in PLATFORMS]
        note = row["source"] + ("; allowlisted (mindseg/utils/op_allowlist.py)" if row["allowlisted"] else "")
        note += "; KNOWN GAP (mindseg/utils/op_allowlist.py)" if row.get("known_gap") else ""
        body.append([row["primitive"]] + [str(row["counts"][g] or "") for g in graph_names] + marks + [note])
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head) - 1)]
    lines = []
    for r in [head] + body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(lines)
