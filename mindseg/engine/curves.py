"""The loss history of a training run and its picture: ``train_curves.json`` and
``train_curves.png`` in the output folder, rewritten at every checkpoint. A run resumed from a
checkpoint of ``<run>/checkpoints`` continues the history ``<run>/train_curves.json`` holds up to
the checkpoint's step, so the picture shows the whole run."""
import json
import os

from mindseg.engine.checkpoint import atomic_write_text
from mindseg.utils.plot import plot_train_curves

HISTORY_FILE = "train_curves.json"
PICTURE_FILE = "train_curves.png"


def read_history(path, up_to_step):
    """The ``{"step": [...], name: [...]}`` history of ``path`` up to ``up_to_step`` ({} when the
    file is missing or unreadable: the picture then starts at the resumed step)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            history = json.load(f)
        keep = sum(1 for s in history["step"] if int(s) <= up_to_step)
        return {name: list(values[:keep]) for name, values in history.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class TrainCurves:
    """Collects the logged window means (``add``) and writes the history and the picture
    (``write``) into ``output_dir``; ``lr`` is the schedule, one value per step."""

    def __init__(self, output_dir, lr, total_steps):
        self.output_dir = output_dir
        self.lr = lr
        self.total_steps = total_steps
        self.history = {"step": []}

    def resume(self, ckpt_path, step):
        """Take over the history of the run that wrote ``ckpt_path``, up to ``step``."""
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(ckpt_path)))
        self.history = read_history(os.path.join(run_dir, HISTORY_FILE), step) or {"step": []}

    def add(self, step, losses):
        """``losses`` {name: mean over the window ending at ``step``}; a name new to the history
        gets nan for the earlier steps."""
        count = len(self.history["step"])
        for name, value in losses.items():
            self.history.setdefault(name, [float("nan")] * count).append(float(value))
        self.history["step"].append(int(step))
        for values in self.history.values():
            values.extend([float("nan")] * (count + 1 - len(values)))

    def write(self, ap=None):
        """Write ``train_curves.json`` and ``train_curves.png`` (with ``ap`` {"step": [...],
        metric: [...]}, the evaluations while training, in a panel of their own); returns the
        picture's path."""
        os.makedirs(self.output_dir, exist_ok=True)
        atomic_write_text(os.path.join(self.output_dir, HISTORY_FILE), json.dumps(self.history))
        path = os.path.join(self.output_dir, PICTURE_FILE)
        losses = {k: v for k, v in self.history.items() if k != "step"}
        plot_train_curves(self.history["step"], losses, self.lr, self.total_steps, path, ap=ap)
        return path
