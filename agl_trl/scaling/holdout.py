"""Held-out check of a scaling-law fit: fit without the largest budget, predict it, report the error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agl_trl.scaling.fit import ScalingFitError, as_finite_array, fit_power_law


@dataclass
class Extrapolation:
    """The largest budget held out of the fit and predicted from the other points."""

    budget: float
    observed: float  # mean over the held-out points (ranks)
    predicted: float
    abs_error: float  # mean |predicted - observed| over the held-out points
    rel_error: float  # mean |predicted - observed| / |observed|
    n_fit_points: int

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def holdout_extrapolation(
    budget: Any, loss: Any, rank: Any = None, sigma: Any = None, **fit_kwargs: Any
) -> Extrapolation:
    """Fit without the points at the largest budget, then predict them; raises if fewer than 3 budgets remain."""
    d = as_finite_array("budget", budget)
    y = as_finite_array("loss", loss)
    top = d.max()
    keep = d < top
    if len(np.unique(d[keep])) < 3:
        raise ScalingFitError(
            "held-out extrapolation needs at least 4 distinct budgets (3 to fit, the largest to predict)"
        )

    def subset(values: Any, mask: np.ndarray) -> Any:
        return None if values is None else np.asarray(values, dtype=float).reshape(-1)[mask]

    fit_kwargs = {**fit_kwargs, "bootstrap": 0}
    fit = fit_power_law(d[keep], y[keep], subset(rank, keep), subset(sigma, keep), **fit_kwargs)
    held = ~keep
    pred = fit.predict(d[held], subset(rank, held))
    err = np.abs(pred - y[held])
    with np.errstate(divide="ignore"):
        rel = err / np.abs(y[held])
    return Extrapolation(
        budget=float(top),
        observed=float(y[held].mean()),
        predicted=float(pred.mean()),
        abs_error=float(err.mean()),
        rel_error=float(rel.mean()),
        n_fit_points=int(keep.sum()),
    )


__all__ = ["Extrapolation", "holdout_extrapolation"]
