"""The console scripts of an installed mindseg: ``mindseg-train``, ``mindseg-eval``,
``mindseg-export`` and ``mindseg-infer`` run the repository's train.py, eval.py, export.py and
infer.py, which the wheel ships unchanged as ``mindseg_tools.train`` etc. (pyproject.toml).

The scripts' ``main()`` returns a summary for callers in Python; a console script's return value
becomes its exit status, so these wrappers return 0 after a normal run (errors exit non-zero from
inside ``main`` as they do for ``python train.py``).
"""
import importlib


def _run(script):
    importlib.import_module(f"mindseg_tools.{script}").main()
    return 0


def train():
    return _run("train")


def evaluate():
    return _run("eval")


def export():
    return _run("export")


def infer():
    return _run("infer")
