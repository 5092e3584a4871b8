"""The OpenCV line charts of mindseg.utils.plot and the training-curve history of
mindseg.engine.curves: known values land on hand-computed pixel rows, the history survives a
resume."""
import json

import cv2
import numpy as np
import pytest

from mindseg.engine.curves import TrainCurves, read_history
from mindseg.utils.plot import (Axes, draw_series, linear_ticks, log_range, log_ticks,
                                plot_train_curves)

RED = (0, 0, 255)


def _ink(canvas):
    """How much each pixel differs from white (0 .. 255)."""
    return 255 - canvas.min(axis=2).astype(np.int64)


def test_log_axis_puts_decades_at_hand_computed_rows():
    # rows 10 .. 109 show y 0.01 .. 100: four decades of 99 / 4 = 24.75 px, top row = 100
    axes = Axes((20, 10, 200, 100), (0, 10), (0.01, 100), log_y=True)
    _, rows = axes.to_px([0, 0, 0, 0, 0], [100, 1, 0.01, 0.1, 10])
    np.testing.assert_allclose(rows, [10, 59.5, 109, 84.25, 34.75])
    cols, _ = axes.to_px([0, 5, 10], [1, 1, 1])
    np.testing.assert_allclose(cols, [20, 119.5, 219])
    _, hidden = axes.to_px([1, 2, 3], [0.0, -1.0, np.nan])  # no place on a log axis
    assert np.isnan(hidden).all()


def test_a_constant_curve_is_drawn_on_its_row():
    canvas = np.full((130, 240, 3), 255, np.uint8)
    axes = Axes((20, 10, 200, 100), (0, 10), (0.01, 100), log_y=True)
    draw_series(canvas, axes, [0, 4, 10], [10, 10, 10], RED)   # row 34.75 -> 35
    ink = _ink(canvas)
    assert ink.sum(axis=1).argmax() == 35
    assert np.nonzero(ink.sum(axis=1))[0].tolist() == [34, 35, 36]  # the antialiased edges
    linear = Axes((20, 10, 200, 100), (0, 10), (0, 4))
    canvas[:] = 255
    draw_series(canvas, linear, [0, 10], [1, 1], RED)          # 10 + 0.75 * 99 = 84.25 -> 84
    assert _ink(canvas).sum(axis=1).argmax() == 84


def test_draw_series_breaks_the_line_at_values_it_cannot_show():
    canvas = np.full((130, 240, 3), 255, np.uint8)
    axes = Axes((20, 10, 200, 100), (0, 10), (0.01, 100), log_y=True)
    draw_series(canvas, axes, [0, 1, 2, 3, 10], [1, 1, 0.0, 1, 1], RED)
    cols = np.nonzero(_ink(canvas).sum(axis=0))[0]
    # x 1 -> col 39.9, x 3 -> col 79.7: nothing drawn between them (the zero)
    assert cols.min() == 20 and cols.max() <= 220
    assert not ((cols > 42) & (cols < 79)).any()


def test_ticks_and_ranges():
    assert linear_ticks(0, 600) == [0, 200, 400, 600]
    assert linear_ticks(0, 0.021, 4) == [0, 0.01, 0.02]
    assert linear_ticks(0.5, 2.6, 4) == [1.0, 2.0]
    assert linear_ticks(0, 2) == [0, 0.5, 1.0, 1.5, 2.0]  # plot_train_curves keeps whole steps
    assert log_range([0.03, 2.5, 0.0, np.nan]) == (0.01, 10.0)
    assert log_range([1.0]) == (1.0, 10.0)
    assert log_ticks(0.01, 10.0) == pytest.approx([0.01, 0.1, 1.0, 10.0])
    with pytest.raises(ValueError, match="positive range"):
        Axes((0, 0, 10, 10), (0, 1), (0, 1), log_y=True)


def test_train_curves_draw_each_loss_at_its_value():
    steps = [10, 20, 30, 40]
    losses = {"total": [2.0, 2.0, 2.0, 2.0], "loss_cls": [0.05] * 4}
    lr = np.linspace(0.001, 0.02, 60)
    canvas, loss_axes, lr_axes = plot_train_curves(steps, losses, lr, total_steps=60)
    assert canvas.shape == (720, 960, 3)
    assert loss_axes.y_range == (0.01, 10.0) and loss_axes.x_range == (0.0, 60.0)
    # the total (black, 2 px thick) sits on the row of 2.0: 60% of the way up a 3-decade axis
    _, (row,) = loss_axes.to_px([0], [2.0])
    expected = loss_axes.top + (1 - (np.log10(2.0) + 2) / 3) * (loss_axes.height - 1)
    assert row == pytest.approx(expected)
    cols_10_40, _ = loss_axes.to_px([10, 40], [2, 2])
    inside = canvas[:, int(cols_10_40[0]) + 3:int(cols_10_40[1]) - 3]
    black_rows = np.unique(np.nonzero(np.all(inside == 0, axis=2))[0])
    assert black_rows.min() >= round(row) - 1 and black_rows.max() <= round(row) + 1
    # the lr's last value lands in the lr panel, at the top of its 5% headroom
    _, (lr_row,) = lr_axes.to_px([60], [0.02])
    assert lr_axes.top < lr_row < lr_axes.top + 0.06 * lr_axes.height


def test_curves_history_survives_a_resume(tmp_path):
    lr = np.full(8, 0.01)
    first = TrainCurves(str(tmp_path), lr, 8)
    first.add(2, {"total": 3.0, "loss_cls": 2.0})
    first.add(4, {"total": 2.0, "loss_cls": 1.0})
    first.add(6, {"total": 1.5, "loss_cls": 0.5, "loss_new": 0.2})  # after the resumed step
    picture = first.write()
    assert cv2.imread(picture).shape == (720, 960, 3)
    saved = json.loads((tmp_path / "train_curves.json").read_text())
    assert saved["step"] == [2, 4, 6] and np.isnan(saved["loss_new"][0])

    resumed = TrainCurves(str(tmp_path), lr, 8)
    resumed.resume(str(tmp_path / "checkpoints" / "ckpt_00000004.ckpt"), 4)
    assert resumed.history["step"] == [2, 4] and resumed.history["loss_cls"] == [2.0, 1.0]
    resumed.add(6, {"total": 1.4, "loss_cls": 0.4})
    assert len(resumed.history["loss_new"]) == 3 and np.isnan(resumed.history["loss_new"]).all()
    assert read_history(str(tmp_path / "missing.json"), 4) == {}
