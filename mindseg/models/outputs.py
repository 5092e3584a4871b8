"""The inference output contract: the names a meta-architecture may list in ``output_names``.

A meta-architecture declares ``output_names`` (as it declares ``loss_names``) and
``mask_threshold``; at inference ``net(image, image_size)`` returns one array per name, in that
order. The host side (postprocess, evaluator, exporter, infer.py, Predictor) reads the outputs by
name through :func:`named_outputs`, never by position or count, so a new meta-architecture plugs
in by declaring its names. docs/contracts.md describes the contract.
"""

REQUIRED = ("boxes", "scores", "classes", "valid", "mask_probs")
DEFAULT_MASK_THRESHOLD = 0.5

OUTPUT_MEANING = {
    "boxes": "x0, y0, x1, y1 in resized-image pixels (divide by preprocess scale to get original "
             "pixels)",
    "scores": "detection score",
    "classes": "contiguous class index into class_names / category_ids",
    "valid": "True for a real detection; the rest is padding",
    "mask_probs": "per-detection mask probability on an S x S grid over its box (pasted into the "
                  "box, then thresholded at mask_threshold)",
    "mask_scores": "score of the mask (segm results); the box keeps 'scores'",
}


def check_output_names(names, source="output_names"):
    """``names`` as a tuple if they make a contract: every required name, only known names, none
    twice; otherwise a ValueError naming ``source``."""
    names = tuple(names)
    unknown = [n for n in names if n not in OUTPUT_MEANING]
    missing = [n for n in REQUIRED if n not in names]
    if unknown or missing or len(set(names)) != len(names):
        raise ValueError(f"{source}: {list(names)} is not an output contract: it needs {list(REQUIRED)}, "
                         f"optionally 'mask_scores', each once"
                         + (f" (unknown: {unknown})" if unknown else ""))
    return names


def named_outputs(names, values):
    """``{name: value}`` of a network's inference outputs ``values`` (arrays or Tensors)."""
    values = tuple(values)
    if len(values) != len(names):
        raise ValueError(f"the network returned {len(values)} outputs at inference; its "
                         f"output_names are {list(names)}")
    return dict(zip(names, values))
