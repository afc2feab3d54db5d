"""``agl-trl scaling``: fit the forgetting scaling law to a run log and write ``scaling.json``, ``.md`` and ``.png``.

Example::

    agl-trl scaling --log runs.jsonl --out runs/scaling            # every metric in the log, one panel each
    agl-trl scaling --log runs.csv --metric responses --bootstrap 0

The project's own sweep (plain LoRA and AGL on the demo's set-up, measured, then fitted by this command) is a
benchmark outside the package: ``python benchmarks/scaling_sweep.py`` (docs/scaling.md).

Per metric and method: ``L0, A, beta`` (``gamma`` when the method has several ranks) with standard errors (and
residual-bootstrap 95% intervals), R^2, the error of predicting the largest budget from a fit without it, and the
ratio ``A_treatment / A_baseline`` (default ``agl`` / ``lora``) from the separate fits and from a fit with a shared
``beta`` (the unit-free comparison).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fit import (
    DEFAULT_BETA_RANGE,
    DEFAULT_GAMMA_RANGE,
    SPACES,
    PowerLawFit,
    ScalingFitError,
    amplitude_ratio,
    fit_power_law,
    fit_shared_exponents,
)
from .holdout import Extrapolation, holdout_extrapolation
from .io import BudgetPoint, RunLogError, aggregate, budget_unit_of, metrics_in, read_run_log
from .plot import MethodSeries, plot_scaling

LAW = "L(D) = L0 + A * D^beta"
LAW_RANK = "L(D, N) = L0 + A * D^beta * N^gamma"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agl-trl scaling", description="Fit the forgetting scaling law to a run log.")
    p.add_argument(
        "--log", default=None, help="run log (.jsonl or .csv; columns method, budget, loss[, metric, rank, seed])"
    )
    p.add_argument("--metric", default=None, help="only this metric (default: every metric in the log)")
    p.add_argument("--out", default="scaling", help="output directory (default: ./scaling)")
    p.add_argument("--space", choices=SPACES, default="log", help="fit residuals in log L (default) or in L")
    p.add_argument("--beta-range", nargs=2, type=float, default=list(DEFAULT_BETA_RANGE), metavar=("LOW", "HIGH"))
    p.add_argument("--gamma-range", nargs=2, type=float, default=list(DEFAULT_GAMMA_RANGE), metavar=("LOW", "HIGH"))
    p.add_argument("--bootstrap", type=int, default=200, help="residual-bootstrap refits for 95%% intervals (0: off)")
    p.add_argument("--weighted", action="store_true", help="weight points by 1/SEM^2 over seeds (needs >= 2 seeds)")
    p.add_argument("--baseline", default="lora", help="denominator method of the A ratio (default: lora)")
    p.add_argument("--treatment", default="agl", help="numerator method of the A ratio (default: agl)")
    p.add_argument(
        "--budget-unit",
        default=None,
        help="axis label for the budget (default: the log's budget_unit column, or tokens)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-plot", action="store_true", help="skip scaling.png")
    return p


@dataclass
class MethodAnalysis:
    points: list[BudgetPoint]
    fit: PowerLawFit | None = None
    fit_error: str | None = None
    heldout: Extrapolation | None = None
    heldout_error: str | None = None

    def columns(self) -> tuple[Any, ...]:
        d = [p.budget for p in self.points]
        y = [p.mean for p in self.points]
        ranks = {p.rank for p in self.points}
        if len(ranks) > 1 and None in ranks:
            raise ScalingFitError("some runs have a rank and some do not; give every run of a method its rank")
        rank = [p.rank for p in self.points] if len(ranks) > 1 else None
        return d, y, rank

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": [
                {"budget": p.budget, "rank": p.rank, "mean": p.mean, "std": p.std, "n_seeds": p.n_seeds}
                for p in self.points
            ],
            "fit": self.fit.to_dict() if self.fit else None,
            "fit_error": self.fit_error,
            "heldout": self.heldout.to_dict() if self.heldout else None,
            "heldout_error": self.heldout_error,
        }


def _sigma(points: Sequence[BudgetPoint], weighted: bool) -> list[float] | None:
    if not weighted:
        return None
    if any(p.n_seeds < 2 or p.sem <= 0 for p in points):
        raise ScalingFitError("--weighted needs >= 2 seeds with a non-zero spread at every budget; drop --weighted")
    return [p.sem for p in points]


def analyze_metric(points: dict[str, list[BudgetPoint]], args: argparse.Namespace) -> dict[str, Any]:
    """Fit, held-out extrapolation and A ratio for one metric; failures are recorded, not raised."""
    kwargs = {
        "space": args.space,
        "beta_range": tuple(args.beta_range),
        "gamma_range": tuple(args.gamma_range),
    }
    methods: dict[str, MethodAnalysis] = {}
    for method, pts in points.items():
        m = MethodAnalysis(points=pts)
        try:
            d, y, rank = m.columns()
            sigma = _sigma(pts, args.weighted)
            m.fit = fit_power_law(d, y, rank, sigma, bootstrap=args.bootstrap, seed=args.seed, **kwargs)
        except ScalingFitError as exc:
            m.fit_error = str(exc)
        if m.fit is not None:
            try:
                m.heldout = holdout_extrapolation(d, y, rank, sigma, **kwargs)
            except ScalingFitError as exc:
                m.heldout_error = str(exc)
        methods[method] = m

    ratio: dict[str, Any] = {"numerator": args.treatment, "denominator": args.baseline}
    num, den = methods.get(args.treatment), methods.get(args.baseline)
    if num is None or den is None or num.fit is None or den.fit is None:
        ratio["error"] = f"needs fits of both {args.treatment!r} and {args.baseline!r}"
    else:
        ratio["A_ratio"], ratio["A_ratio_stderr"] = amplitude_ratio(num.fit, den.fit)
        try:
            data = {}
            for name, m in ((args.treatment, num), (args.baseline, den)):
                d, y, rank = m.columns()
                data[name] = (d, y, rank, _sigma(m.points, args.weighted))
            shared = fit_shared_exponents(data, **kwargs)
            ratio["A_ratio_shared_beta"], ratio["A_ratio_shared_beta_stderr"] = shared.amplitude_ratio(
                args.treatment, args.baseline
            )
            ratio["shared_beta"] = shared.fits[args.baseline].beta
            ratio["shared_beta_stderr"] = shared.fits[args.baseline].stderr["beta"]
        except ScalingFitError as exc:
            ratio["shared_error"] = str(exc)
    return {"methods": methods, "ratio": ratio}


def _num(value: Any, err: Any = None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = f"{value:.4g}"
    if err is not None and isinstance(err, float) and math.isfinite(err):
        text += f" ± {err:.2g}"
    return text


def _rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for metric, res in results.items():
        for method, m in res["methods"].items():
            f = m.fit
            row = [metric, method, str(len(m.points))]
            if f is None:
                row += ["-"] * 5 + [f"fit failed: {m.fit_error}"]
            else:
                row += [
                    _num(f.L0, f.stderr["L0"]),
                    _num(f.A, f.stderr["A"]),
                    _num(f.beta, f.stderr["beta"]),
                    _num(f.gamma, f.stderr.get("gamma")) if f.gamma is not None else "-",
                    f"{f.r2:.4f}",
                    f"{100 * m.heldout.rel_error:.1f}%" if m.heldout else "-",
                ]
            rows.append(row)
    return rows


HEADER = ["metric", "method", "points", "L0", "A", "beta", "gamma", "R^2", "held-out err"]


def _ratio_text(ratio: dict[str, Any]) -> str:
    name = f"A_{ratio['numerator']} / A_{ratio['denominator']}"
    if "error" in ratio:
        return f"{name}: - ({ratio['error']})"
    text = f"{name} = {_num(ratio['A_ratio'], ratio['A_ratio_stderr'])} (separate fits)"
    if "A_ratio_shared_beta" in ratio:
        text += (
            f"; {_num(ratio['A_ratio_shared_beta'], ratio['A_ratio_shared_beta_stderr'])} at a shared "
            f"beta = {_num(ratio['shared_beta'], ratio['shared_beta_stderr'])}"
        )
    elif "shared_error" in ratio:
        text += f"; shared-beta fit failed: {ratio['shared_error']}"
    return text


def format_table(results: dict[str, dict[str, Any]]) -> str:
    rows = [HEADER, *_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1] for r in rows]
    lines += [f"{metric}: {_ratio_text(res['ratio'])}" for metric, res in results.items()]
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """NaN/inf -> None so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "log": str(args.log),
        "law": LAW,
        "law_with_rank": LAW_RANK,
        "settings": {
            "space": args.space,
            "beta_range": list(args.beta_range),
            "gamma_range": list(args.gamma_range),
            "bootstrap": args.bootstrap,
            "weighted": args.weighted,
            "budget_unit": args.budget_unit,
        },
        "metrics": {
            metric: {
                "methods": {name: m.to_dict() for name, m in res["methods"].items()},
                "ratio": res["ratio"],
            }
            for metric, res in results.items()
        },
    }


def to_markdown(results: dict[str, dict[str, Any]], args: argparse.Namespace, plotted: bool) -> str:
    lines = [
        "# Forgetting scaling law",
        "",
        f"Log: `{args.log}`. Law: `{LAW}` (`{LAW_RANK}` for methods with several ranks), fitted in {args.space} "
        f"space; ± are standard errors (Jacobian covariance). `held-out err`: relative error of predicting the "
        f"largest budget from a fit without it.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(results)]
    lines.append("")
    for metric, res in results.items():
        lines.append(f"- **{metric}**: {_ratio_text(res['ratio'])}")
        for method, m in res["methods"].items():
            for w in (m.fit.warnings if m.fit else []) + ([m.heldout_error] if m.heldout_error else []):
                lines.append(f"  - {method}: {w}")
    if plotted:
        lines += ["", "![forgetting scaling law](scaling.png)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.log is None:
        print(
            "agl-trl scaling: --log PATH is required (a run log; `python benchmarks/scaling_sweep.py` measures one)",
            file=sys.stderr,
        )
        return 2
    try:
        records = read_run_log(args.log)
        args.budget_unit = args.budget_unit or budget_unit_of(args.log) or "tokens"
        metrics = [args.metric] if args.metric else metrics_in(records)
        data = {metric: aggregate(records, metric) for metric in metrics}
    except RunLogError as exc:
        print(f"agl-trl scaling: {exc}", file=sys.stderr)
        return 2
    if args.bootstrap < 0:
        print("agl-trl scaling: --bootstrap must be >= 0", file=sys.stderr)
        return 2
    results = {metric: analyze_metric(points, args) for metric, points in data.items()}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(
        json.dumps(_clean(to_json(results, args)), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    plotted = False
    if not args.no_plot:
        panels = {
            metric: {
                method: MethodSeries(m.points, m.fit, m.heldout.budget if m.heldout else None)
                for method, m in res["methods"].items()
            }
            for metric, res in results.items()
        }
        plotted = plot_scaling(panels, out / "scaling.png", budget_unit=args.budget_unit) is not None
    (out / "scaling.md").write_text(to_markdown(results, args, plotted), encoding="utf-8")
    print(format_table(results))
    print(f"wrote {out / 'scaling.json'}, {out / 'scaling.md'}" + (f", {out / 'scaling.png'}" if plotted else ""))
    fitted = any(m.fit is not None for res in results.values() for m in res["methods"].values())
    return 0 if fitted else 1


if __name__ == "__main__":
    raise SystemExit(main())
