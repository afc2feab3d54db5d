"""Plot pieces shared by the experiment reports (the demo's ``training.png``, the peers' KL-meter plot).

One owner for how a run's drift budget is drawn: the KL meter's readings (``agl/kl_measured``), the calibrated
K-FAC estimate at the same steps (``agl/kl_estimate``) and the budget, from a training record's ``agl_curves``
(:func:`agl_trl.experiments.training.training_record`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def draw_meter_curves(
    ax: Any,
    curves: Mapping[str, Sequence[Sequence[float]]],
    *,
    label: str,
    colour: Any = None,
    budget: float | None = None,
) -> bool:
    """Draw the measured probe KL (solid, circles), the calibrated estimate (dashed) and the ``budget`` (thin
    horizontal line) of one run on ``ax`` (log scale). Returns whether the run logged any meter reading."""
    measured = curves.get("kl_measured") or []
    if not measured:
        return False
    (line,) = ax.plot(*zip(*measured, strict=True), "o-", color=colour, label=f"{label}: measured")
    colour = line.get_color()
    estimate = [(s, v) for s, v in curves.get("kl_estimate") or [] if v > 0]
    if estimate:
        ax.plot(*zip(*estimate, strict=True), "--", color=colour, label=f"{label}: estimate")
    if budget is not None:
        ax.axhline(float(budget), color=colour, lw=0.8, alpha=0.5)
    ax.set_yscale("log")
    return True


__all__ = ["draw_meter_curves"]
