"""Chart of the forgetting scaling law: every method's points (error bars over seeds) and fitted curve, log-x."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agl_trl.utils import load_pyplot

from .fit import PowerLawFit
from .io import BudgetPoint

METHOD_COLORS = {"lora": "#d62728", "agl": "#1f77b4"}
_OTHER_COLORS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LINESTYLES = ("-", "--", ":", "-.")


@dataclass
class MethodSeries:
    """What the chart shows for one method: its aggregated points, its fit (None if it failed) and held-out budget."""

    points: Sequence[BudgetPoint]
    fit: PowerLawFit | None
    heldout_budget: float | None = None


def _fmt(value: float, err: float) -> str:
    if not math.isfinite(err):
        return f"{value:.3g}"
    return f"{value:.3g}±{err:.2g}"


def fit_label(method: str, fit: PowerLawFit | None) -> str:
    """Legend text: method, beta (gamma), A with standard errors, and R^2."""
    if fit is None:
        return f"{method} (no fit)"
    parts = [f"β={_fmt(fit.beta, fit.stderr.get('beta', math.nan))}"]
    if fit.gamma is not None:
        parts.append(f"γ={_fmt(fit.gamma, fit.stderr.get('gamma', math.nan))}")
    parts.append(f"A={_fmt(fit.A, fit.stderr.get('A', math.nan))}")
    parts.append(f"R²={fit.r2:.3f}")
    return f"{method}: " + ", ".join(parts)


def _color(method: str, index: int) -> str:
    return METHOD_COLORS.get(method.lower(), _OTHER_COLORS[index % len(_OTHER_COLORS)])


def _panel(ax: object, series: Mapping[str, MethodSeries], metric: str, budget_unit: str) -> None:
    all_budgets = [p.budget for s in series.values() for p in s.points]
    lo, hi = min(all_budgets), max(all_budgets)
    grid = np.geomspace(lo / 1.5, hi * 1.5, 200)
    for mi, (method, s) in enumerate(series.items()):
        color = _color(method, mi)
        ranks = sorted({p.rank for p in s.points}, key=lambda r: r or 0)
        multi = len(ranks) > 1
        for ri, rank in enumerate(ranks):
            pts = [p for p in s.points if p.rank == rank]
            label_pts = f"{method} r={rank}" if multi else None
            x = np.array([p.budget for p in pts])
            y = np.array([p.mean for p in pts])
            err = np.array([p.std for p in pts])
            held = np.array([s.heldout_budget is not None and p.budget == s.heldout_budget for p in pts])
            marker = _MARKERS[ri % len(_MARKERS)]
            ax.errorbar(  # type: ignore[attr-defined]
                x[~held], y[~held], yerr=err[~held], fmt=marker, color=color, ms=6, capsize=3, label=label_pts
            )
            if held.any():  # hollow: the point the held-out fit had to predict
                ax.errorbar(  # type: ignore[attr-defined]
                    x[held], y[held], yerr=err[held], fmt=marker, color=color, mfc="white", ms=7, capsize=3
                )
            if s.fit is not None and (s.fit.gamma is not None or ri == 0):
                curve = s.fit.predict(grid, rank if s.fit.gamma is not None else None)
                ls = _LINESTYLES[ri % len(_LINESTYLES)] if multi else "-"
                ax.plot(  # type: ignore[attr-defined]
                    grid, curve, ls, color=color, lw=2, alpha=0.85, label=fit_label(method, s.fit) if ri == 0 else None
                )
        if s.fit is None:
            ax.plot([], [], "-", color=color, label=fit_label(method, None))  # type: ignore[attr-defined]
    if any(s.heldout_budget is not None for s in series.values()):
        ax.plot(  # type: ignore[attr-defined]
            [], [], "o", color="gray", mfc="white", label="hollow: largest budget, predicted by a fit without it"
        )
    ax.set_xscale("log")  # type: ignore[attr-defined]
    ax.set_xlabel(f"fine-tuning budget D ({budget_unit})")  # type: ignore[attr-defined]
    ax.set_ylabel(f"forgetting L ({metric}, nats/token)")  # type: ignore[attr-defined]
    ranked = any(s.fit is not None and s.fit.gamma is not None for s in series.values())
    law = "L(D, N) = L0 + A·D^β·N^γ  (N = rank)" if ranked else "L(D) = L0 + A·D^β"
    ax.set_title(f"{metric}: {law}")  # type: ignore[attr-defined]
    ax.grid(True, which="both", alpha=0.3)  # type: ignore[attr-defined]
    ax.legend(fontsize=8, loc="upper left")  # type: ignore[attr-defined]


def plot_scaling(
    panels: Mapping[str, Mapping[str, MethodSeries]], path: str | Path, budget_unit: str = "tokens"
) -> Path | None:
    """One panel per metric (``{metric: {method: MethodSeries}}``), saved as a PNG at ``path``.

    Hollow markers are the held-out largest budget; error bars are the standard deviation over seeds.
    """
    plt = load_pyplot()
    if plt is None:
        return None

    if not panels:
        raise ValueError("nothing to plot: no metric has data")
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(6.8 * n, 4.8), squeeze=False)
    for ax, (metric, series) in zip(axes[0], panels.items(), strict=True):
        _panel(ax, series, metric, budget_unit)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
