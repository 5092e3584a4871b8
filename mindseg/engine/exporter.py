"""Export an inference network to MINDIR (or AIR on Ascend) with a JSON that describes it.

The graph takes a padded batch and the resized sizes, ``(image (B, 3, H, W) float32,
image_size (B, 2) float32)``, and returns the fixed-size outputs the model's ``output_names``
declare (docs/contracts.md; Mask R-CNN: boxes, scores, classes, valid, mask_probs). The JSON
beside it (same stem, ``.json``) names and shapes the inputs and outputs, spells out the
preprocessing (resize rule, canvas, mean, std, channel order: :func:`describe_preprocess` of the
eval SampleSpec, read back by :func:`spec_from_export`), the mask threshold and the score from
which the model's detections are worth drawing (the config's ``eval.draw_thresh``), and lists the class
names and COCO category ids, so a deployer can run the graph with ``mindspore.load`` +
``nn.GraphCell`` and no mindseg.
"""
import json
import os

import numpy as np

FILE_FORMATS = {"MINDIR": ".mindir", "AIR": ".air"}
INPUT_NAMES = ("image", "image_size")
SPEC_VERSION = 1


class ExportError(RuntimeError):
    """An export the chosen format or backend cannot do, or a graph MindSpore cannot load."""


def check_file_format(file_format, device_target):
    """Upper-cased ``file_format`` if this backend can write it; a clear error otherwise."""
    fmt = str(file_format).upper()
    if fmt == "ONNX":
        raise ExportError("ONNX export is not supported: MindSpore 2.10 does not convert GroupNorm, "
                          "interpolate or mindcv ResNet's in-place add; use --file_format MINDIR")
    if fmt not in FILE_FORMATS:
        raise ExportError(f"--file_format must be one of {sorted(FILE_FORMATS)}, got {file_format!r}")
    if fmt == "AIR" and device_target != "Ascend":
        raise ExportError(f"AIR export needs the Ascend backend (--device_target Ascend); this run "
                          f"is on {device_target}. Export MINDIR here, or run on an Ascend device")
    return fmt


def export_paths(output, file_format):
    """``(graph_path, json_path)`` for an ``--output`` with or without the format's extension."""
    ext = FILE_FORMATS[file_format]
    stem = output[:-len(ext)] if output.lower().endswith(ext) else output
    return stem + ext, stem + ".json"


def dummy_inputs(batch_size, canvas):
    """Zero images covering the whole canvas: the inputs that trace the graph."""
    height, width = (int(v) for v in canvas)
    image = np.zeros((batch_size, 3, height, width), np.float32)
    image_size = np.tile(np.array([[height, width]], np.float32), (batch_size, 1))
    return image, image_size


# The eval preprocessing, spelled out for a deployer: the fixed steps...
PREPROCESS_STEPS = {
    "decode": "image file -> uint8 (h, w, 3) in BGR order (OpenCV imdecode, EXIF ignored)",
    "resize_rule": "scale = min_size / min(h, w); if max(h, w) * scale > max_size: "
                   "scale = max_size / max(h, w); scale = min(scale, canvas_h / h, canvas_w / w); "
                   "new_h = min(int(h * scale + 0.5), canvas_h), new_w likewise; bilinear",
    "interpolation": "bilinear",
    "normalize": "(pixel - mean) / std per channel, after reordering to channel_order",
    "layout": "NCHW float32",
    "pad": "zeros at the bottom and right, after normalizing",
    "image_size_input": "(new_h, new_w) of each image, before padding",
}
# ...and its settings: JSON key -> (SampleSpec field, to JSON, from JSON)
PREPROCESS_SETTINGS = {
    "min_size": ("min_sizes", lambda v: int(v[0]), lambda v: (int(v),)),
    "max_size": ("max_size", int, int),
    "channel_order": ("channel_order", str, str),
    "mean": ("mean", lambda v: [float(x) for x in v], lambda v: tuple(float(x) for x in v)),
    "std": ("std", lambda v: [float(x) for x in v], lambda v: tuple(float(x) for x in v)),
    "canvas": ("canvas", lambda v: [int(x) for x in v], lambda v: tuple(int(x) for x in v)),
}


def describe_preprocess(spec):
    """The export JSON's ``preprocess`` section: the eval :class:`SampleSpec` ``spec`` (from
    ``sample_spec(cfg, training=False)``) spelled out."""
    settings = {key: to_json(getattr(spec, field)) for key, (field, to_json, _) in PREPROCESS_SETTINGS.items()}
    return {**PREPROCESS_STEPS, **settings}


def spec_from_export(preprocess, max_instances=1, mask_size=1):
    """The eval :class:`SampleSpec` that an export JSON's ``preprocess`` section describes."""
    from mindseg.dataset.sample import SampleSpec
    settings = {field: from_json(preprocess[key]) for key, (field, _, from_json) in PREPROCESS_SETTINGS.items()}
    return SampleSpec(flip_prob=0.0, max_instances=max_instances, mask_size=mask_size, **settings)


def _tensor_entry(name, array, meaning=None):
    entry = {"name": name, "shape": list(array.shape), "dtype": str(array.dtype)}
    if meaning:
        entry["meaning"] = meaning
    return entry


def build_export_spec(cfg, dataset_info, inputs, outputs, file_format, graph_file, mask_threshold):
    """The JSON-able description of an exported graph (see the module docstring); ``outputs``:
    the traced outputs by name, in the graph's order."""
    from mindseg import __version__
    from mindseg.dataset.sample import sample_spec
    from mindseg.models.outputs import OUTPUT_MEANING
    return {
        "spec_version": SPEC_VERSION,
        "mindseg_version": __version__,
        "model": cfg.model.name,
        "file": os.path.basename(graph_file),
        "file_format": file_format,
        "inputs": [
            _tensor_entry("image", inputs[0], "normalized images padded to the canvas"),
            _tensor_entry("image_size", inputs[1], "(h, w) of each resized image before padding"),
        ],
        "outputs": [_tensor_entry(name, out, OUTPUT_MEANING[name]) for name, out in outputs.items()],
        "preprocess": describe_preprocess(sample_spec(cfg, training=False)),
        "postprocess": {
            "boxes_to_original": "x / (new_w / w), y / (new_h / h), clipped to the image",
            "mask_threshold": float(mask_threshold),
            "draw_thresh": float(cfg.eval.draw_thresh),
        },
        "num_classes": int(dataset_info["num_classes"]),
        "class_names": list(dataset_info["class_names"]),
        "category_ids": [int(c) for c in dataset_info["category_ids"]],
    }


def export_model(net, cfg, dataset_info, output, file_format="MINDIR", batch_size=1):
    """Write ``net`` (inference contract: ``output_names``, ``mask_threshold``) as ``file_format``
    plus its JSON description.

    Runs the network once on the tracing inputs to record the output shapes and dtypes.
    Returns ``(graph_path, json_path)``.
    """
    import mindspore as ms
    from mindseg.models.outputs import check_output_names, named_outputs
    names = check_output_names(net.output_names, f"{type(net).__name__}.output_names")
    file_format = check_file_format(file_format, cfg.device_target)
    graph_path, json_path = export_paths(output, file_format)
    os.makedirs(os.path.dirname(os.path.abspath(graph_path)), exist_ok=True)
    net.set_train(False)
    inputs = dummy_inputs(batch_size, cfg.data.canvas)
    tensors = [ms.Tensor(x) for x in inputs]
    outputs = named_outputs(names, (o.asnumpy() for o in net(*tensors)))
    spec = build_export_spec(cfg, dataset_info, inputs, outputs, file_format, graph_path, net.mask_threshold)
    ms.export(net, *tensors, file_name=graph_path[:-len(FILE_FORMATS[file_format])],
              file_format=file_format)
    if not os.path.isfile(graph_path):
        raise ExportError(f"mindspore.export did not write {graph_path}")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=2)
    return graph_path, json_path


def load_export_spec(json_path):
    """Read and check the JSON written beside an exported graph."""
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"{json_path}: the export description is missing (export.py writes "
                                f"it beside the graph)")
    with open(json_path, "r", encoding="utf-8") as f:
        try:
            spec = json.load(f)
        except ValueError as err:  # also a file that is not UTF-8 text
            raise ValueError(f"{json_path}: not an export description (not JSON: {err})") from None
    missing = [k for k in ("inputs", "outputs", "preprocess", "postprocess", "class_names", "category_ids")
               if not isinstance(spec, dict) or k not in spec]
    if missing:
        raise ValueError(f"{json_path}: not an export description (lacks {missing})")
    from mindseg.models.outputs import check_output_names
    check_output_names([o["name"] for o in spec["outputs"]], f"{json_path}: outputs")
    return spec
