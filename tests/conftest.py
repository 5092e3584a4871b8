import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mindseg  # noqa: E402,F401  (sets oneDNN's CPU ISA before mindspore is imported)

sys.unraisablehook = lambda unraisable: None  # Cell.__del__ noise at exit (PLATFORM.md)
