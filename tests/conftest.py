import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mindseg  # noqa: E402,F401  (sets oneDNN's CPU ISA before mindspore is imported)

sys.unraisablehook = lambda unraisable: None  # Cell.__del__ raises at interpreter exit


def pytest_configure(config):
    """One CPU kernel thread per xdist worker: with MindSpore's default pool each of the two
    workers spins threads on both cores, and a training test ran 3x slower beside the other (the
    CenterMask overfit test, two copies at once: 665 s each, against 215 s with one thread). A hook
    rather than module code, since MindSpore refuses a second ``threads_num`` call and a test
    module that imports ``tests.conftest`` would run module code twice."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import mindspore as ms
        ms.device_context.cpu.op_tuning.threads_num(1)
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist: hand the files out in collection order


# The files that train or compile the real models, longest first (minutes of a worker's time each).
# Under --dist loadfile a file runs whole on one worker, and xdist would start with the files of
# most tests; handing the longest out first leaves no worker finishing a long file while the other
# sits idle.
LONG_FILES = ("test_mask_rcnn.py", "test_centermask.py", "test_workflow.py", "test_centermask_point.py",
              "test_resume_models.py", "test_mixed_precision.py", "test_custom_data.py", "test_multinode.py",
              "test_export.py", "test_predictor.py", "test_device_check.py")


def pytest_collection_modifyitems(config, items):
    """LONG_FILES first, in that order; every other file after them, in collection order."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


@pytest.fixture(params=["pynative", "graph"])
def mode(request):
    """Run the test once in PYNATIVE and once in GRAPH mode; yields the MindSpore mode."""
    import mindspore as ms
    ms_mode = ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=ms_mode)
    yield ms_mode
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture
def deterministic_sampling(monkeypatch):
    """RoI / anchor sampling with a fixed noise ramp instead of random draws, so that GRAPH and
    PYNATIVE runs (and reruns) sample the same entries."""
    import mindspore as ms
    from mindseg.models import matcher
    original = matcher.sample_balanced

    def sample(match_labels, num_samples, positive_fraction, noise=None):
        length = match_labels.shape[1]
        ramp = ms.Tensor((np.arange(length, dtype=np.float32) * 0.618034) % 1.0)
        return original(match_labels, num_samples, positive_fraction,
                        noise=ms.ops.broadcast_to(ramp.reshape(1, length), match_labels.shape))
    monkeypatch.setattr(matcher, "sample_balanced", sample)


@pytest.fixture
def script_main():
    """``script_main("infer")`` is the ``main(argv)`` of ROOT/infer.py, run in this process."""
    import importlib.util

    def load(name):
        spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main
    return load
