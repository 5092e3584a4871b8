"""mindseg: Mask R-CNN and CenterMask instance segmentation for MindSpore.

Importing mindseg before mindspore lets it choose oneDNN's fast CPU kernels: on AVX-512 machines
oneDNN otherwise picks a reference convolution that is ~60x slower (see PLATFORM.md). The entry
scripts and the tests import mindseg first; library users should do the same.
"""
import os
import sys

__version__ = "0.1.0"


def _select_cpu_isa():
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
