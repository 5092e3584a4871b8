"""Reading a pickled weights file without running code from it.

A pickle names the callables that rebuild its objects (``module.name`` globals) and ``pickle.load``
calls them, so a crafted file runs whatever it names (``os.system``, ``builtins.exec``, ...). Model
zoo weights need only containers, strings, numbers and NumPy arrays, so :func:`load_weights_pickle`
admits exactly the globals those are rebuilt from and refuses the file at the first other one,
before anything it names has been called.
"""
import pickle

# The globals plain dicts of NumPy arrays are pickled with (protocols 0-5, NumPy 1 and 2 names).
ALLOWED_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes under protocol <= 2 (an array's raw data)
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
})


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`; ``name`` is ``module.name``."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


class _WeightsUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise ForbiddenGlobal(f"{module}.{name}")


def load_weights_pickle(file, encoding="latin1"):
    """``pickle.load`` admitting only dicts, lists, tuples, str, bytes, numbers and NumPy arrays,
    scalars and dtypes; raises :class:`ForbiddenGlobal` for anything else."""
    return _WeightsUnpickler(file, encoding=encoding).load()
