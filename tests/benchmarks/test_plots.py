"""The shared drift-budget plot piece (agl_trl.experiments.plots): what it draws is the run's data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agl_trl.experiments.plots import draw_meter_curves  # noqa: E402


def test_meter_curves_draw_the_readings_the_estimate_and_the_budget() -> None:
    curves = {
        "kl_measured": [[10, 0.4], [20, 0.2], [30, 0.05]],
        "kl_estimate": [[1, 0.0], [10, 0.4], [20, 0.1], [30, 0.02]],  # before calibration the estimate logs 0
    }
    fig, ax = plt.subplots()
    assert draw_meter_curves(ax, curves, label="agl", colour="red", budget=0.03)
    measured, estimate, budget = ax.get_lines()
    assert list(measured.get_xdata()) == [10, 20, 30] and list(measured.get_ydata()) == [0.4, 0.2, 0.05]
    assert list(estimate.get_xdata()) == [10, 20, 30]  # the zero (uncalibrated) reading is not drawn on a log axis
    assert list(budget.get_ydata()) == [0.03, 0.03] and ax.get_yscale() == "log"
    assert estimate.get_color() == measured.get_color() == "red"
    plt.close(fig)


def test_a_run_without_meter_readings_draws_nothing() -> None:
    fig, ax = plt.subplots()
    assert not draw_meter_curves(ax, {"kl_estimate": [[10, 0.1]]}, label="agl", budget=0.03)
    assert ax.get_lines() == []
    plt.close(fig)
