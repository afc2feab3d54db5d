"""Fit the forgetting scaling law ``L(D) = L0 + A * D^beta`` (optionally ``* N^gamma``) to (budget, loss) points.

Method (numpy only):

1. **Grid.** For every exponent on a grid (``beta`` in ``beta_range``; with ranks, every ``(beta, gamma)`` pair) the
   law is linear in ``(L0, A)``, which weighted linear least squares gives in closed form. In log space the weights
   are ``1 / L^2`` (first-order equivalent of residuals in ``log L``). The grid point with the smallest true
   objective is kept: a global start, no initial guess needed.
2. **Refine.** Levenberg-Marquardt on all parameters with analytic Jacobians, minimising the residuals in the chosen
   space: ``log L - log L_hat`` (``space="log"``, default: relative errors, right for losses spanning orders of
   magnitude) or ``L - L_hat`` (``space="linear"``, needed when some losses are <= 0).
3. **Uncertainty.** Standard errors from the Jacobian covariance ``s^2 (J^T J)^-1`` (``s^2`` = residual variance,
   like ``scipy.optimize.curve_fit``), mapped to the reported parameters with the delta method; optionally a
   residual bootstrap (``bootstrap=B``) gives 95% percentile intervals.

Budgets (and ranks) are divided by their geometric mean inside the fit for conditioning; the reported ``A`` is in the
units of the log (``D`` in tokens or steps, ``N`` = rank).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_BETA_RANGE = (0.02, 2.0)
DEFAULT_GAMMA_RANGE = (-2.0, 2.0)
SPACES = ("log", "linear")


class ScalingFitError(ValueError):
    """The points cannot be fitted (too few, non-finite, non-positive losses in log space, ...)."""


@dataclass
class PowerLawFit:
    """A fitted ``L0 + A * D^beta [* N^gamma]`` with standard errors (``nan`` when not identifiable)."""

    L0: float
    A: float
    beta: float
    gamma: float | None
    stderr: dict[str, float]
    r2: float  # 1 - SS_res / SS_tot of L (linear space), on the fitted points
    r2_log: float  # the same on log L (nan if some L <= 0)
    n_points: int
    space: str
    ci95: dict[str, tuple[float, float]] | None = None  # residual-bootstrap percentile intervals
    warnings: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict[str, float]:
        out = {"L0": self.L0, "A": self.A, "beta": self.beta}
        if self.gamma is not None:
            out["gamma"] = self.gamma
        return out

    def predict(self, budget: Any, rank: Any = None) -> np.ndarray:
        """``L0 + A * D^beta [* N^gamma]`` at ``budget`` (and ``rank`` when the fit has ``gamma``)."""
        d = np.asarray(budget, dtype=float)
        log_term = self.beta * np.log(d)
        if self.gamma is not None:
            if rank is None:
                raise ValueError("this fit has a rank exponent (gamma); pass rank=... to predict")
            log_term = log_term + self.gamma * np.log(np.asarray(rank, dtype=float))
        return self.L0 + self.A * np.exp(log_term)

    def to_dict(self) -> dict[str, Any]:
        params = {
            name: {
                "value": value,
                "stderr": self.stderr.get(name, math.nan),
                **({"ci95": list(self.ci95[name])} if self.ci95 and name in self.ci95 else {}),
            }
            for name, value in self.params.items()
        }
        return {
            "params": params,
            "r2": self.r2,
            "r2_log": self.r2_log,
            "n_points": self.n_points,
            "space": self.space,
            "warnings": list(self.warnings),
        }


@dataclass
class _Group:
    x: np.ndarray  # (n, k) log(D / D_ref) [, log(N / N_ref)]
    y: np.ndarray  # (n,) losses
    w: np.ndarray  # (n,) weights of the residuals in the fit space


def as_finite_array(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ScalingFitError(f"{name} contains NaN or inf; remove those runs from the log")
    return arr


def _prepare(
    budget: Any, loss: Any, rank: Any, sigma: Any, space: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    d, y = as_finite_array("budget", budget), as_finite_array("loss", loss)
    if d.shape != y.shape:
        raise ScalingFitError(f"budget and loss have different lengths ({d.size} vs {y.size})")
    if np.any(d <= 0):
        raise ScalingFitError("budgets must be > 0 (the law is a power of the budget)")
    if space not in SPACES:
        raise ScalingFitError(f"space must be one of {SPACES}, got {space!r}")
    if space == "log" and np.any(y <= 0):
        raise ScalingFitError("a log-space fit needs every loss > 0; use space='linear' (CLI: --space linear)")
    n = None
    if rank is not None:
        n = as_finite_array("rank", rank)
        if n.shape != d.shape or np.any(n <= 0):
            raise ScalingFitError("rank must have one value > 0 per point")
    w = np.ones_like(y)
    if sigma is not None:
        s = as_finite_array("sigma", sigma)
        if s.shape != y.shape or np.any(s <= 0):
            raise ScalingFitError("sigma must have one value > 0 per point (drop it for an unweighted fit)")
        s = s / y if space == "log" else s  # sigma of log L ~ sigma_L / L
        w = 1.0 / s**2
        w = w / w.mean()
    return d, y, n, w


def _exponent_grid(k: int, beta_range: tuple[float, float], gamma_range: tuple[float, float], size: int) -> np.ndarray:
    betas = np.linspace(beta_range[0], beta_range[1], size)
    if k == 1:
        return betas[:, None]
    gammas = np.linspace(gamma_range[0], gamma_range[1], max(21, size // 4))
    b, g = np.meshgrid(betas[:: max(1, size // 80)], gammas, indexing="ij")
    return np.stack([b.ravel(), g.ravel()], axis=1)


def _grid_start(groups: Sequence[_Group], grid: np.ndarray, space: str) -> np.ndarray:
    """Best (per-group L0, A_ref) and shared exponents over ``grid`` with closed-form linear least squares."""
    coefs = []
    for grp in groups:
        p = np.exp(grid @ grp.x.T)  # (C, n)
        w = grp.w / grp.y**2 if space == "log" else grp.w
        s0, s1, s2 = w.sum(), p @ w, (p**2) @ w
        t0, t1 = float(w @ grp.y), p @ (w * grp.y)
        det = s0 * s2 - s1**2
        with np.errstate(divide="ignore", invalid="ignore"):
            a = (s0 * t1 - s1 * t0) / det
            l0 = (s2 * t0 - s1 * t1) / det
        coefs.append((l0, a, p))
    total = np.zeros(grid.shape[0])
    for grp, (l0, a, p) in zip(groups, coefs, strict=True):
        pred = l0[:, None] + a[:, None] * p
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(grp.y) - np.log(np.where(pred > 0, pred, np.nan)) if space == "log" else grp.y - pred
        total += np.where(np.all(np.isfinite(r), axis=1), (r**2) @ grp.w, np.inf)
    if not np.any(np.isfinite(total)):
        raise ScalingFitError("no exponent on the grid gives a valid fit; check the data or widen --beta-range")
    best = int(np.argmin(total))
    theta = [v for l0, a, _ in coefs for v in (l0[best], a[best])]
    return np.array([*theta, *grid[best]], dtype=float)


def _residuals_and_jacobian(
    theta: np.ndarray, groups: Sequence[_Group], space: str, k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    exps = theta[-k:]
    n_total = sum(len(g.y) for g in groups)
    r = np.empty(n_total)
    jac = np.zeros((n_total, theta.size))
    row = 0
    for gi, grp in enumerate(groups):
        l0, a = theta[2 * gi], theta[2 * gi + 1]
        p = np.exp(grp.x @ exps)
        pred = l0 + a * p
        rows = slice(row, row + len(grp.y))
        sw = np.sqrt(grp.w)
        d_pred = np.column_stack([np.ones_like(p), p, (a * p)[:, None] * grp.x])  # d pred / d(L0, A, exps)
        if space == "log":
            if np.any(pred <= 0):
                return None
            r[rows] = sw * (np.log(grp.y) - np.log(pred))
            d_pred = d_pred / pred[:, None]
        else:
            r[rows] = sw * (grp.y - pred)
        jac[rows, 2 * gi] = sw * d_pred[:, 0]
        jac[rows, 2 * gi + 1] = sw * d_pred[:, 1]
        jac[rows, -k:] = sw[:, None] * d_pred[:, 2:]
        row += len(grp.y)
    return r, jac


def _levenberg_marquardt(
    theta: np.ndarray, groups: Sequence[_Group], space: str, k: int, max_iter: int = 200
) -> tuple[np.ndarray, np.ndarray, float]:
    out = _residuals_and_jacobian(theta, groups, space, k)
    if out is None:
        raise ScalingFitError("the starting point predicts a non-positive loss; use space='linear'")
    r, jac = out
    sse, lam = float(r @ r), 1e-3
    for _ in range(max_iter):
        h = jac.T @ jac
        g = jac.T @ r
        try:
            step = np.linalg.solve(h + lam * np.diag(np.diag(h) + 1e-12), g)
        except np.linalg.LinAlgError:
            lam *= 10
            continue
        new = _residuals_and_jacobian(theta + step, groups, space, k)
        if new is not None and float(new[0] @ new[0]) < sse:
            new_sse = float(new[0] @ new[0])
            theta, (r, jac) = theta + step, new
            done = sse - new_sse <= 1e-14 * max(sse, 1e-300)
            sse, lam = new_sse, max(lam / 3, 1e-12)
            if done:
                break
        else:
            lam *= 4
            if lam > 1e12:
                break
    return theta, jac, sse


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - pred) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan


def _solve(groups: Sequence[_Group], space: str, grid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    return _levenberg_marquardt(_grid_start(groups, grid, space), groups, space, k)


@dataclass
class _Problem:
    names: list[str]
    groups: list[_Group]
    raw: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]  # (D, L, N) per group
    log_ref: np.ndarray  # (k,) log D_ref [, log N_ref]
    k: int


def _problem(data: Mapping[str, tuple[Any, Any, Any, Any]], space: str) -> _Problem:
    prepared = {name: _prepare(*values, space=space) for name, values in data.items()}
    has_rank = {name: p[2] is not None for name, p in prepared.items()}
    if len(set(has_rank.values())) > 1:
        raise ScalingFitError("a shared-exponent fit needs ranks for every method or for none")
    k = 2 if next(iter(has_rank.values())) else 1
    all_d = np.concatenate([p[0] for p in prepared.values()])
    log_ref = [float(np.mean(np.log(all_d)))]
    if k == 2:
        log_ref.append(float(np.mean(np.log(np.concatenate([p[2] for p in prepared.values()])))))
    groups, raw = [], []
    for d, y, n, w in prepared.values():
        cols = [np.log(d) - log_ref[0]]
        if k == 2:
            cols.append(np.log(n) - log_ref[1])
        groups.append(_Group(x=np.column_stack(cols), y=y, w=w))
        raw.append((d, y, n))
    return _Problem(list(prepared), groups, raw, np.array(log_ref), k)


def _check_identifiable(prob: _Problem) -> None:
    for name, (d, _, n) in zip(prob.names, prob.raw, strict=True):
        distinct = len(set(zip(d.tolist(), (n if n is not None else d).tolist(), strict=True)))
        need = 3 if prob.k == 1 else 4
        if len(np.unique(d)) < 3 or distinct < need:
            prefix = f"{name}: " if len(prob.names) > 1 else ""
            raise ScalingFitError(
                f"{prefix}{distinct} distinct (budget{', rank' if prob.k == 2 else ''}) points; the law needs at "
                f"least {need} (3 distinct budgets); add runs at more budgets"
            )


def _to_reported(theta: np.ndarray, cov: np.ndarray, prob: _Problem) -> tuple[np.ndarray, np.ndarray]:
    """(L0, A_ref) per group + exponents -> (L0, A) in log units, with the delta-method covariance."""
    k, exps = prob.k, theta[-prob.k :]
    scale = math.exp(-float(exps @ prob.log_ref))  # A = A_ref * exp(-exps . log_ref)
    out = theta.copy()
    t = np.eye(theta.size)
    for gi in range(len(prob.groups)):
        out[2 * gi + 1] = theta[2 * gi + 1] * scale
        t[2 * gi + 1, 2 * gi + 1] = scale
        t[2 * gi + 1, -k:] = -out[2 * gi + 1] * prob.log_ref
    return out, t @ cov @ t.T


def _covariance(jac: np.ndarray, sse: float) -> np.ndarray:
    n, p = jac.shape
    if n <= p:
        return np.full((p, p), math.nan)
    h = jac.T @ jac
    if np.linalg.cond(h) > 1e14:
        return np.full((p, p), math.nan)
    return np.linalg.inv(h) * (sse / (n - p))


def _fit_problem(
    prob: _Problem,
    space: str,
    beta_range: tuple[float, float],
    gamma_range: tuple[float, float],
    grid_size: int,
    bootstrap: int,
    seed: int,
) -> tuple[dict[str, PowerLawFit], np.ndarray, np.ndarray]:
    _check_identifiable(prob)
    if grid_size < 3:
        raise ScalingFitError(f"grid_size must be >= 3, got {grid_size}")
    for name, (lo, hi) in (("beta_range", beta_range), ("gamma_range", gamma_range)):
        if not lo < hi:
            raise ScalingFitError(f"{name} must be (low, high) with low < high, got {(lo, hi)}")
    grid = _exponent_grid(prob.k, beta_range, gamma_range, grid_size)
    theta, jac, sse = _solve(prob.groups, space, grid, prob.k)
    reported, cov = _to_reported(theta, _covariance(jac, sse), prob)
    stderr = np.sqrt(np.clip(np.diag(cov), 0, None))
    stderr[~np.isfinite(np.diag(cov))] = math.nan

    ci = None
    if bootstrap > 0:
        ci = _bootstrap(prob, theta, space, grid, bootstrap, seed)

    fits: dict[str, PowerLawFit] = {}
    k = prob.k
    for gi, name in enumerate(prob.names):
        d, y, n = prob.raw[gi]
        names = ["L0", "A", "beta"] + (["gamma"] if k == 2 else [])
        idx = [2 * gi, 2 * gi + 1, *range(theta.size - k, theta.size)]
        fit = PowerLawFit(
            L0=float(reported[2 * gi]),
            A=float(reported[2 * gi + 1]),
            beta=float(reported[-k]),
            gamma=float(reported[-1]) if k == 2 else None,
            stderr={nm: float(stderr[i]) for nm, i in zip(names, idx, strict=True)},
            r2=math.nan,
            r2_log=math.nan,
            n_points=int(y.size),
            space=space,
            ci95={nm: ci[i] for nm, i in zip(names, idx, strict=True)} if ci is not None else None,
        )
        pred = fit.predict(d, n)
        fit.r2 = _r2(y, pred)
        if np.all(y > 0) and np.all(pred > 0):
            fit.r2_log = _r2(np.log(y), np.log(pred))
        for nm, lo, hi in [("beta", *beta_range)] + ([("gamma", *gamma_range)] if k == 2 else []):
            value = fit.params[nm]
            if value <= lo + 1e-9 or value >= hi - 1e-9 or not (lo <= value <= hi):
                fit.warnings.append(f"{nm}={value:.3g} is at or outside the grid range [{lo}, {hi}]; widen the range")
        if y.size <= len(names):
            fit.warnings.append(f"{y.size} points for {len(names)} parameters: the fit is exact, no standard errors")
        fits[name] = fit
    return fits, reported, cov


def _bootstrap(
    prob: _Problem, theta: np.ndarray, space: str, grid: np.ndarray, n_boot: int, seed: int
) -> list[tuple[float, float]]:
    """Residual bootstrap in the fit space: refit ``y_hat (+) resampled residuals`` ``n_boot`` times."""
    rng = np.random.default_rng(seed)
    k = prob.k
    exps = theta[-k:]
    base = []
    for gi, grp in enumerate(prob.groups):
        pred = theta[2 * gi] + theta[2 * gi + 1] * np.exp(grp.x @ exps)
        f = np.log(pred) if space == "log" else pred
        y = np.log(grp.y) if space == "log" else grp.y
        n_par = 2 + k / len(prob.groups)
        inflate = math.sqrt(len(y) / (len(y) - n_par)) if len(y) > n_par else 1.0
        base.append((f, np.sqrt(grp.w) * (y - f) * inflate))  # standardised residuals
    samples = []
    for _ in range(n_boot):
        groups = []
        for grp, (f, res) in zip(prob.groups, base, strict=True):
            y_new = f + rng.choice(res, size=res.size, replace=True) / np.sqrt(grp.w)
            groups.append(_Group(grp.x, np.exp(y_new) if space == "log" else y_new, grp.w))
        try:
            th, _, _ = _solve(groups, space, grid, k)
        except ScalingFitError:
            continue
        samples.append(_to_reported(th, np.zeros((th.size, th.size)), prob)[0])
    if len(samples) < max(10, n_boot // 2):
        return [(math.nan, math.nan)] * theta.size
    arr = np.array(samples)
    return [(float(lo), float(hi)) for lo, hi in zip(*np.percentile(arr, [2.5, 97.5], axis=0), strict=True)]


def fit_power_law(
    budget: Any,
    loss: Any,
    rank: Any = None,
    sigma: Any = None,
    *,
    space: str = "log",
    beta_range: tuple[float, float] = DEFAULT_BETA_RANGE,
    gamma_range: tuple[float, float] = DEFAULT_GAMMA_RANGE,
    grid_size: int = 400,
    bootstrap: int = 0,
    seed: int = 0,
) -> PowerLawFit:
    """Fit ``L = L0 + A * D^beta`` (``* N^gamma`` when ``rank`` is given) to points ``(budget, loss)``.

    ``sigma``: optional per-point standard errors of the loss (weights ``1/sigma^2``); ``bootstrap``: number of
    residual-bootstrap refits for 95% intervals (0: Jacobian standard errors only).
    """
    prob = _problem({"fit": (budget, loss, rank, sigma)}, space)
    fits, _, _ = _fit_problem(prob, space, tuple(beta_range), tuple(gamma_range), grid_size, bootstrap, seed)
    return fits["fit"]


@dataclass
class SharedFit:
    """Per-method ``L0, A`` with one shared ``beta`` (and ``gamma``): makes ``A`` ratios unit-free."""

    fits: dict[str, PowerLawFit]
    _index: dict[str, int]
    _cov: np.ndarray
    _theta: np.ndarray

    def amplitude_ratio(self, numerator: str, denominator: str) -> tuple[float, float]:
        """``A_num / A_den`` and its standard error (delta method on the joint covariance)."""
        i, j = 2 * self._index[numerator] + 1, 2 * self._index[denominator] + 1
        a_i, a_j = self._theta[i], self._theta[j]
        ratio = a_i / a_j if a_j != 0 else math.nan
        grad = np.zeros(self._theta.size)
        grad[i], grad[j] = 1.0 / a_j, -a_i / a_j**2
        var = float(grad @ self._cov @ grad)
        return float(ratio), math.sqrt(var) if np.isfinite(var) and var >= 0 else math.nan


def fit_shared_exponents(
    data: Mapping[str, tuple[Any, Any, Any, Any]],
    *,
    space: str = "log",
    beta_range: tuple[float, float] = DEFAULT_BETA_RANGE,
    gamma_range: tuple[float, float] = DEFAULT_GAMMA_RANGE,
    grid_size: int = 400,
) -> SharedFit:
    """Jointly fit ``{method: (budget, loss, rank | None, sigma | None)}`` with per-method ``L0, A``, shared exponents."""
    if len(data) < 1:
        raise ScalingFitError("no methods to fit")
    prob = _problem(data, space)
    fits, reported, cov = _fit_problem(prob, space, tuple(beta_range), tuple(gamma_range), grid_size, 0, 0)
    return SharedFit(fits=fits, _index={n: i for i, n in enumerate(prob.names)}, _cov=cov, _theta=reported)


def amplitude_ratio(numerator: PowerLawFit, denominator: PowerLawFit) -> tuple[float, float]:
    """``A_num / A_den`` of two independent fits and its standard error (delta method, independent errors).

    Only unit-free when the two ``beta`` agree; :func:`fit_shared_exponents` gives the shared-exponent ratio.
    """
    ratio = numerator.A / denominator.A if denominator.A != 0 else math.nan
    rel = math.hypot(
        numerator.stderr.get("A", math.nan) / numerator.A if numerator.A else math.nan,
        denominator.stderr.get("A", math.nan) / denominator.A if denominator.A else math.nan,
    )
    return float(ratio), float(abs(ratio) * rel)
