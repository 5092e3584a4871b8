"""Line charts drawn with OpenCV (matplotlib is not a dependency): axes, ticks, grid, legend, and
the training curves train.py writes (every loss term and the total on a log y axis, the lr below).

Pixel coordinates are (column, row) with row 0 at the top; an :class:`Axes` maps data into the
plot rectangle ``(left, top, width, height)`` of a BGR uint8 canvas.
"""
import math

import cv2
import numpy as np

from mindseg.utils.visualize import instance_color

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.42
INK = (40, 40, 40)
GRID = (225, 225, 225)
PLANNED = (190, 190, 190)  # the part of the lr schedule not trained yet
TOTAL_COLOR = (0, 0, 0)


class Axes:
    """A plot rectangle of a canvas and the data ranges it shows: linear x, linear or log10 y."""

    def __init__(self, rect, x_range, y_range, log_y=False):
        self.left, self.top, self.width, self.height = (int(v) for v in rect)
        self.x_range = tuple(float(v) for v in x_range)
        self.y_range = tuple(float(v) for v in y_range)
        self.log_y = log_y
        if self.x_range[1] <= self.x_range[0] or self.y_range[1] <= self.y_range[0]:
            raise ValueError(f"empty plot range: x {self.x_range}, y {self.y_range}")
        if log_y and self.y_range[0] <= 0:
            raise ValueError(f"a log axis needs a positive range, got {self.y_range}")

    def _y_unit(self, y):
        lo, hi = self.y_range
        if self.log_y:
            with np.errstate(divide="ignore", invalid="ignore"):
                return (np.log10(y) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return (y - lo) / (hi - lo)

    def to_px(self, xs, ys):
        """Data ``(xs, ys)`` -> float pixel ``(columns, rows)``; nan where y cannot be shown
        (not finite, or not positive on a log axis)."""
        xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
        x_lo, x_hi = self.x_range
        cols = self.left + (xs - x_lo) / (x_hi - x_lo) * (self.width - 1)
        rows = self.top + (1.0 - self._y_unit(ys)) * (self.height - 1)
        shown = np.isfinite(ys) & ((ys > 0) if self.log_y else True)
        return cols, np.where(shown, rows, np.nan)


def linear_ticks(lo, hi, count=5):
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) in [lo, hi]."""
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(v, 12) for v in np.arange(first, hi + step * 1e-9, step)]


def log_range(values):
    """The decades around the positive finite ``values``: ``(10**floor, 10**ceil)``."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return 0.1, 10.0
    lo, hi = math.floor(math.log10(values.min())), math.ceil(math.log10(values.max()))
    return 10.0 ** lo, 10.0 ** (hi if hi > lo else lo + 1)


def log_ticks(lo, hi):
    """Every decade in [lo, hi]."""
    return [10.0 ** k for k in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]


def _text(canvas, text, org, color=INK, scale=FONT_SCALE):
    cv2.putText(canvas, text, (int(org[0]), int(org[1])), FONT, scale, color, 1, cv2.LINE_AA)


def _text_size(text, scale=FONT_SCALE):
    return cv2.getTextSize(text, FONT, scale, 1)[0]


def draw_frame(canvas, axes, x_ticks, y_ticks, title="", x_label="", y_label=""):
    """Grid lines at the ticks, the frame, tick labels, title and axis labels."""
    right, bottom = axes.left + axes.width - 1, axes.top + axes.height - 1
    cols, _ = axes.to_px(x_ticks, np.zeros(len(x_ticks)))
    _, rows = axes.to_px(np.zeros(len(y_ticks)), y_ticks)
    for col, value in zip(cols, x_ticks):
        cv2.line(canvas, (int(round(col)), axes.top), (int(round(col)), bottom), GRID, 1)
        label = f"{value:g}"
        _text(canvas, label, (col - _text_size(label)[0] / 2, bottom + 16))
    for row, value in zip(rows, y_ticks):
        if np.isnan(row):
            continue
        cv2.line(canvas, (axes.left, int(round(row))), (right, int(round(row))), GRID, 1)
        label = f"{value:g}"
        width, height = _text_size(label)
        _text(canvas, label, (axes.left - width - 6, row + height / 2))
    cv2.rectangle(canvas, (axes.left, axes.top), (right, bottom), INK, 1)
    if title:
        _text(canvas, title, (axes.left, axes.top - 8), scale=0.5)
    if x_label:
        _text(canvas, x_label, (right - _text_size(x_label)[0], bottom + 32))
    if y_label:
        _text(canvas, y_label, (axes.left - _text_size(y_label)[0] - 6, axes.top - 8))


def draw_series(canvas, axes, xs, ys, color, thickness=1):
    """A polyline through the shown points, broken where a value cannot be shown; single
    points get a dot."""
    cols, rows = axes.to_px(xs, ys)
    shown = ~np.isnan(rows)
    runs, current = [], []
    for col, row, ok in zip(cols, rows, shown):
        if ok:
            current.append((col, row))
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    for run in runs:
        points = np.round(np.array(run)).astype(np.int32)
        if len(points) == 1:
            cv2.circle(canvas, tuple(int(v) for v in points[0]), 2, color, -1)
        else:
            cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, color, thickness, cv2.LINE_AA)


def draw_legend(canvas, origin, entries):
    """``entries`` [(name, BGR colour)] listed from ``origin`` (left, top) down, a line sample
    before each name."""
    left, top = origin
    for k, (name, color) in enumerate(entries):
        row = top + 18 * k + 8
        cv2.line(canvas, (left, row), (left + 22, row), color, 2, cv2.LINE_AA)
        _text(canvas, name, (left + 28, row + 4))


def plot_train_curves(steps, losses, lr, total_steps, path=None, size=(960, 720), ap=None):
    """Draw the training curves: ``losses`` {name: values at ``steps``} (the ``total`` in black,
    the terms in the class colours, the last value in the legend) on a log y axis above the lr
    of every step, ``lr[i]`` being the lr of step i + 1 (grey beyond the last logged step).
    ``ap`` {"step": [...], name: [...]} (evaluations while training, AP in percent) adds a panel
    between the two. Writes ``path`` when given.
    Returns ``(canvas (h, w, 3) uint8 BGR, loss Axes, lr Axes)``."""
    width, height = size
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, legend_w = 70, 170
    plot_w = width - left - legend_w - 20
    with_ap = bool(ap) and len(ap.get("step", ())) > 0
    loss_h = int((height - 110 - (50 if with_ap else 0)) * (0.45 if with_ap else 0.68))
    ap_h = loss_h // 2 if with_ap else 0
    lr_h = height - 110 - loss_h - 50 - (ap_h + 50 if with_ap else 0)
    steps = np.asarray(steps, np.float64)
    x_range = (0.0, float(max(total_steps, steps.max() if steps.size else 1, 1)))
    x_ticks = [t for t in linear_ticks(*x_range) if float(t).is_integer()]  # whole steps
    names = ["total"] + sorted(n for n in losses if n != "total")
    names = [n for n in names if n in losses]
    colors = {n: TOTAL_COLOR if n == "total" else instance_color(k) for k, n in enumerate(names)}
    y_lo, y_hi = log_range(np.concatenate([np.asarray(losses[n], np.float64).ravel()
                                           for n in names]) if names else [])
    loss_axes = Axes((left, 30, plot_w, loss_h), x_range, (y_lo, y_hi), log_y=True)
    draw_frame(canvas, loss_axes, x_ticks, log_ticks(y_lo, y_hi),
               title=f"losses (mean of each log window), {len(steps)} points")
    for name in names:
        draw_series(canvas, loss_axes, steps, losses[name], colors[name],
                    thickness=2 if name == "total" else 1)
    last = {n: np.asarray(losses[n], np.float64).ravel()[-1:] for n in names}
    draw_legend(canvas, (left + plot_w + 16, 34),
                [(f"{n} {last[n][0]:.3g}" if last[n].size else n, colors[n]) for n in names])

    lr = np.asarray(lr, np.float64)
    lr_hi = float(lr.max()) if lr.size and lr.max() > 0 else 1.0
    lr_ticks = linear_ticks(0.0, lr_hi * 1.05, 4)
    lr_top = 30 + loss_h + 50
    if with_ap:
        _draw_ap(canvas, ap, (left, lr_top, plot_w, ap_h), x_range, x_ticks)
        lr_top += ap_h + 50
    lr_axes = Axes((left, lr_top, plot_w, lr_h), x_range, (0.0, lr_hi * 1.05))
    draw_frame(canvas, lr_axes, x_ticks, lr_ticks, title="learning rate", x_label="step")
    lr_steps = np.arange(1, len(lr) + 1, dtype=np.float64)
    done = int(steps.max()) if steps.size else 0
    start = max(done - 1, 0)
    draw_series(canvas, lr_axes, lr_steps[start:], lr[start:], PLANNED)
    if done:
        draw_series(canvas, lr_axes, lr_steps[:done], lr[:done], (180, 90, 0), thickness=2)
    if path is not None and not cv2.imwrite(path, canvas):
        raise OSError(f"cannot write {path}")
    return canvas, loss_axes, lr_axes


def _draw_ap(canvas, ap, rect, x_range, x_ticks):
    """The AP of each evaluation while training (percent, linear axis), one line per metric."""
    names = sorted(n for n in ap if n != "step")
    values = np.concatenate([np.asarray(ap[n], np.float64) for n in names]) if names else np.zeros(0)
    finite = values[np.isfinite(values)]
    hi = max(float(finite.max()) * 1.1 if finite.size else 0.0, 1.0)
    axes = Axes(rect, x_range, (0.0, hi))
    draw_frame(canvas, axes, x_ticks, linear_ticks(0.0, hi, 4), title="val AP (%) while training")
    entries = []
    for k, name in enumerate(names):
        color = instance_color(k + 3)
        draw_series(canvas, axes, ap["step"], ap[name], color, thickness=2)
        last = np.asarray(ap[name], np.float64)[-1:]
        entries.append((f"{name} {last[0]:.1f}" if last.size else name, color))
    draw_legend(canvas, (rect[0] + rect[2] + 16, rect[1] + 4), entries)
