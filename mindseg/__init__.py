"""mindseg: Mask R-CNN and CenterMask instance segmentation for MindSpore.

>>> import cv2, mindseg
>>> predictor = mindseg.Predictor("shapes/mask_rcnn_shapes", checkpoint="outputs/run/checkpoints",
...                               class_names=["rectangle", "ellipse", "triangle", "star", "cross"])
>>> detections = predictor("image.jpg")   # boxes in the stored pixel frame (EXIF rotation ignored)
>>> cv2.imwrite("drawn.png", predictor.draw("image.jpg", detections))

The public names (``Predictor``, ``model_zoo``, ``build_model``, ``load_config``,
``create_dataset``) are imported on first use, so ``import mindseg`` stays cheap and imports no
MindSpore. Importing mindseg before mindspore lets it choose oneDNN's fast CPU kernels: on
AVX-512 machines oneDNN otherwise picks a reference convolution that is ~60x slower (see
docs/platform_notes.md). The entry scripts and the tests import mindseg first; library users should do the
same.
"""

__version__ = "0.1.0"
__all__ = ["Predictor", "model_zoo", "build_model", "load_config", "create_dataset"]

# public name -> (module, attribute in it; None for the module itself)
_PUBLIC = {
    "Predictor": ("mindseg.predictor", "Predictor"),
    "model_zoo": ("mindseg.model_zoo", None),
    "build_model": ("mindseg.model_zoo", "build_model"),
    "load_config": ("mindseg.config", "load_config"),
    "create_dataset": ("mindseg.dataset.pipeline", "create_dataset"),
}


def __getattr__(name):
    """Import a public name on first access (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mindseg' has no attribute '{name}'")
    import importlib
    module_name, attribute = _PUBLIC[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__ + ["__version__"])


def _select_cpu_isa():
    import os
    import sys
    if "ONEDNN_MAX_CPU_ISA" in os.environ:
        return
    if "mindspore" in sys.modules:
        import warnings
        warnings.warn("mindspore was imported before mindseg: oneDNN may use its slow AVX-512 "
                      "convolution kernels on the CPU. Import mindseg first, or set "
                      "ONEDNN_MAX_CPU_ISA=AVX2 in the environment.", RuntimeWarning, stacklevel=3)
        return
    os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"


_select_cpu_isa()
