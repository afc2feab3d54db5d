"""Write DriftCaps results: ``drift.json`` (schema below), ``drift.md`` (tables) and PNG plots.

``drift.json`` (``schema = "agl-trl/drift"``, ``schema_version = 1``)::

    {
      "schema": "agl-trl/drift", "schema_version": 1, "created": ISO-8601 time, "agl_trl_version": str,
      "config": {...run settings: model, adapters, reference, baseline, split, limit, max_new_tokens, ...},
      "judge": {"name": "keyword" | "classifier:<model>"},
      "dataset": {"name", "split", "n_prompts", "n_unsafe", "n_safe", "categories": [...]},
      "reference": name of the model drift is measured against, "baseline": name used for drift reduction | null,
      "models": {name: {
          "source": model path/id, "adapter": adapter dir | null, "role": "reference" | "baseline" | "model",
          "overall": METRICS, "by_category": {category: METRICS}, "kl": {"mean", "n_tokens"} | null}},
      "responses": {name: [{"id", "category", "label", "response", "refusal", "coherent"}]},
      "selectivity": {"reference", "baseline", "method", "models": {name: {metric: ESTIMATE}}} | null
    }
    ESTIMATE = {"value", "ci_low", "ci_high", "sd", "mdd"}   (paired bootstrap; metrics: refusal_unsafe,
               over_refusal, gap, gap_drift, refusal_drift, over_refusal_change, gap_drift_reduction, ...)
    METRICS = {"refusal_unsafe": RATE, "over_refusal": RATE, "attack_success": RATE, "incoherent": RATE,
               "drift": {"value", "ci_low", "ci_high"} (not for the reference), "drift_reduction": float | null}
    RATE = {"k", "n", "rate", "ci_low", "ci_high"}   (Wilson 95%; null where n == 0)

All rates are fractions in [0, 1]; KL is nats per response token; NaN is written as null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agl_trl.utils import load_pyplot

SCHEMA = "agl-trl/drift"
SCHEMA_VERSION = 1


def jsonable(obj: Any) -> Any:
    """Dataclasses -> dicts, NaN/inf -> None, Paths -> str, recursively."""
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(results: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    data = jsonable(results)
    data.setdefault("schema", SCHEMA)
    data.setdefault("schema_version", SCHEMA_VERSION)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _rate_cell(rate: Mapping[str, Any] | None) -> str:
    if not rate or not rate.get("n"):
        return "n/a"
    return f"{_pct(rate['rate'])} [{_pct(rate['ci_low'])}, {_pct(rate['ci_high'])}] ({rate['k']}/{rate['n']})"


def _drift_cell(d: Mapping[str, Any] | None) -> str:
    if not d or d.get("value") is None:
        return "-"
    pp = 100 * d["value"]
    return f"{pp:+.1f} pp [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def _num(x: float | None, fmt: str = "{:.4f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def selectivity_section(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"reference", "baseline", "models": {name: {metric: estimate}}}``: gap, gap drift (vs the reference) and
    gap-drift reduction (vs the baseline) with paired bootstrap 95% intervals over prompts
    (:func:`agl_trl.evaluation.selectivity.compare`), from ``results["responses"]``; None without a reference."""
    from agl_trl.evaluation.selectivity import Verdicts, compare

    responses = results.get("responses") or {}
    reference, baseline = results.get("reference"), results.get("baseline")
    if reference not in responses:
        return None
    verdicts = {n: [Verdicts.from_rows(rows)] for n, rows in responses.items()}
    if not verdicts[reference][0].unsafe or not verdicts[reference][0].safe:
        return None
    est = compare(verdicts, verdicts[reference][0], baseline=baseline if baseline in verdicts else None)
    return {
        "reference": reference,
        "baseline": baseline if baseline in verdicts else None,
        "method": "paired bootstrap over prompts (2000 resamples), 95% percentile intervals",
        "models": {n: {k: e.to_dict() for k, e in m.items()} for n, m in est.items()},
    }


def _negated(e: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not e or e.get("value") is None:
        return None
    return {"value": -e["value"], "ci_low": -e["ci_high"], "ci_high": -e["ci_low"]}


def answer_lines(sel: Mapping[str, Any], task: Mapping[str, str] | None = None, figure: str | None = None) -> list[str]:
    """The two-axis answer a report opens with, before its tables: per model, refusal on unsafe prompts and
    over-refusal on safe ones, each with its change from the reference (points, paired bootstrap 95%), then the task
    score when known (``task``: model -> its formatted score) and the report's ``figure``."""
    from agl_trl.evaluation.selectivity import format_estimate

    ref, models = sel["reference"], sel["models"]
    others = [n for n in models if n != ref]

    def axis(metric: str, change: str, negate: bool) -> str:
        cells = [f"`{ref}` {format_estimate(models[ref][metric])}%"]
        for name in others:
            delta = models[name].get(change)
            delta = _negated(delta) if negate else delta
            cells.append(
                f"`{name}` {format_estimate(models[name][metric])}% ({format_estimate(delta)} points vs `{ref}`)"
            )
        return "; ".join(cells)

    lines = [
        "## The answer",
        "",
        f"- **Refusals kept on unsafe prompts** (higher is safer): {axis('refusal_unsafe', 'refusal_drift', True)}.",
        f"- **Over-refusal on safe prompts** (lower is better): {axis('over_refusal', 'over_refusal_change', False)}.",
    ]
    if task:
        lines.append("- **Task**: " + "; ".join(f"`{name}` {score}" for name, score in task.items()) + ".")
    lines.append("")
    if figure:
        lines += [f"![the answer]({figure})", ""]
    return lines


def _selectivity_lines(sel: Mapping[str, Any]) -> list[str]:
    from agl_trl.evaluation.selectivity import format_estimate

    lines = [
        "## Selectivity (primary)",
        "",
        "Gap = refusal on unsafe - over-refusal on safe (points); gap drift = reference gap - model gap (points of "
        f"selectivity lost); gap-drift reduction vs `{sel.get('baseline')}`; {sel['method']}.",
        "",
        "| model | refusal on unsafe | over-refusal on safe | gap | **gap drift** | gap-drift reduction % | "
        "refusal drift |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in sel["models"].items():
        is_ref = name == sel["reference"]
        lines.append(
            f"| {name} | {format_estimate(m['refusal_unsafe'])} | {format_estimate(m['over_refusal'])} | "
            f"{format_estimate(m['gap'])} | **{'0' if is_ref else format_estimate(m['gap_drift'])}** | "
            f"{format_estimate(m.get('gap_drift_reduction'), digits=0) if name != sel.get('baseline') and not is_ref else '-'}"
            f" | {'0' if is_ref else format_estimate(m['refusal_drift'])} |"
        )
    return [*lines, ""]


def render_markdown(results: Mapping[str, Any], figure: str | None = None) -> str:
    """``drift.md``: the two-axis answer (:func:`answer_lines`, with ``figure`` when one was drawn), selectivity
    (gap, gap drift), then the overall table, per-category refusal and over-refusal tables, the judge named."""
    res = jsonable(results)
    models: dict[str, Any] = res["models"]
    ds = res.get("dataset", {})
    judge = res.get("judge", {}).get("name", "?")
    lines = [
        "# DriftCaps drift report",
        "",
        f"- dataset: {ds.get('name', '?')} split `{ds.get('split', '?')}`: {ds.get('n_prompts', '?')} prompts "
        f"({ds.get('n_unsafe', '?')} unsafe, {ds.get('n_safe', '?')} safe), {len(ds.get('categories', []))} categories",
        f"- judge: **{judge}** (every refusal number below comes from this judge)",
        f"- reference (drift = R_unsafe(reference) - R_unsafe(model)): `{res.get('reference')}`; "
        f"baseline for drift reduction: `{res.get('baseline')}`",
        f"- max_new_tokens: {res.get('config', {}).get('max_new_tokens', '?')}; intervals: Wilson 95% "
        "(drift: Newcombe 95%; selectivity: paired bootstrap 95%)",
        "",
        *(answer_lines(res["selectivity"], figure=figure) if res.get("selectivity") else []),
        *(_selectivity_lines(res["selectivity"]) if res.get("selectivity") else []),
        "## Overall",
        "",
        "| model | role | refusal on unsafe | over-refusal on safe | attack success | incoherent | KL (nats/tok) "
        "| drift | drift reduction |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        o = m["overall"]
        kl = (m.get("kl") or {}).get("mean")
        lines.append(
            f"| {name} | {m.get('role', 'model')} | {_rate_cell(o.get('refusal_unsafe'))} | "
            f"{_rate_cell(o.get('over_refusal'))} | {_rate_cell(o.get('attack_success'))} | "
            f"{_rate_cell(o.get('incoherent'))} | {_num(kl)} | {_drift_cell(o.get('drift'))} | "
            f"{_num(o.get('drift_reduction'), '{:.2f}')} |"
        )
    categories = sorted({c for m in models.values() for c in m["by_category"]})
    for key, title in (("refusal_unsafe", "Refusal rate on unsafe prompts"), ("over_refusal", "Over-refusal")):
        rows = [
            c for c in categories if any((m["by_category"].get(c, {}).get(key) or {}).get("n") for m in models.values())
        ]
        if not rows:
            continue
        lines += ["", f"## {title} by category", "", "| category | " + " | ".join(models) + " |"]
        lines.append("|---|" + "---|" * len(models))
        for c in rows:
            cells = [_rate_cell(m["by_category"].get(c, {}).get(key)) for m in models.values()]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    drift_rows = [c for c in categories if any("drift" in m["by_category"].get(c, {}) for m in models.values())]
    if drift_rows:
        shown = [n for n, m in models.items() if m.get("role") != "reference"]
        lines += ["", "## Drift by category (percentage points)", "", "| category | " + " | ".join(shown) + " |"]
        lines.append("|---|" + "---|" * len(shown))
        for c in drift_rows:
            cells = [_drift_cell(models[n]["by_category"].get(c, {}).get("drift")) for n in shown]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Notes: attack success = 1 - refusal rate on unsafe prompts (harmful score under a keyword judge). "
        "Incoherent outputs (empty / repetitive / non-text) are counted as not refused by the keyword judge; "
        "read refusal rates next to the incoherent column.",
        "",
    ]
    return "\n".join(lines)


def _errs(rates: list[Mapping[str, Any] | None]) -> tuple[list[float], list[list[float]]]:
    vals, lo, hi = [], [], []
    for r in rates:
        if not r or not r.get("n") or r.get("rate") is None:
            vals.append(0.0)
            lo.append(0.0)
            hi.append(0.0)
        else:
            vals.append(100 * r["rate"])
            lo.append(max(0.0, 100 * (r["rate"] - r["ci_low"])))
            hi.append(max(0.0, 100 * (r["ci_high"] - r["rate"])))
    return vals, [lo, hi]


def plot_refusal_by_category(results: Mapping[str, Any], path: str | Path) -> Path | None:
    """Grouped horizontal bars: refusal rate on unsafe prompts per category (and overall) per model, CI whiskers."""
    plt = load_pyplot()
    if plt is None:
        return None

    res = jsonable(results)
    models = res["models"]
    cats = sorted(
        {c for m in models.values() for c, v in m["by_category"].items() if (v.get("refusal_unsafe") or {}).get("n")}
    )
    rows = ["overall", *cats]
    n_models = max(1, len(models))
    bar_h = 0.8 / n_models
    fig_h = max(3.0, 0.35 * len(rows) * max(1.0, n_models * 0.6) + 1.5)
    fig, ax = plt.subplots(figsize=(9, fig_h), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    for j, (name, m) in enumerate(models.items()):
        rates = [m["overall"].get("refusal_unsafe")] + [m["by_category"].get(c, {}).get("refusal_unsafe") for c in cats]
        vals, err = _errs(rates)
        ys = [i + (j - (n_models - 1) / 2) * bar_h for i in range(len(rows))]
        ax.barh(
            ys,
            vals,
            height=bar_h * 0.9,
            xerr=err,
            color=colors[j % 10],
            label=name,
            error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "0.25"},
        )
    counts = [(models[next(iter(models))]["overall"].get("refusal_unsafe") or {}).get("n", 0)] if models else [0]
    first = next(iter(models.values())) if models else {"by_category": {}}
    counts += [(first["by_category"].get(c, {}).get("refusal_unsafe") or {}).get("n", 0) for c in cats]
    ax.set_yticks(range(len(rows)), [f"{r} (n={n})" for r, n in zip(rows, counts, strict=True)])
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("refusal rate on unsafe prompts (%), 95% Wilson CI")
    judge = res.get("judge", {}).get("name", "?")
    ax.set_title(f"Refusal rate by category (judge: {judge})")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_overview(results: Mapping[str, Any], path: str | Path) -> Path | None:
    """Three panels per model: refusal drift (pp, Newcombe CI), over-refusal (%, Wilson CI), KL drift (nats/token)."""
    plt = load_pyplot()
    if plt is None:
        return None

    res = jsonable(results)
    models = res["models"]
    names = list(models)
    colors = [plt.get_cmap("tab10").colors[j % 10] for j in range(len(names))]
    fig, axes = plt.subplots(1, 3, figsize=(12, max(2.8, 0.45 * len(names) + 1.6)), layout="constrained")
    ys = list(range(len(names)))

    vals, lo, hi = [], [], []
    for n in names:
        d = models[n]["overall"].get("drift") or {}
        v = d.get("value")
        vals.append(100 * v if v is not None else 0.0)
        lo.append(max(0.0, 100 * (v - d["ci_low"])) if v is not None else 0.0)
        hi.append(max(0.0, 100 * (d["ci_high"] - v)) if v is not None else 0.0)
    axes[0].barh(ys, vals, xerr=[lo, hi], color=colors, error_kw={"capsize": 3, "ecolor": "0.25"})
    axes[0].axvline(0, color="0.3", linewidth=0.8)
    for y, n in zip(ys, names, strict=True):
        if models[n].get("role") == "reference":
            axes[0].text(0, y, " reference", va="center", fontsize=8, color="0.3")
    axes[0].set_title(f"refusal drift vs {res.get('reference')} (pp)\nhigher = more refusals lost")

    vals2, err2 = _errs([models[n]["overall"].get("over_refusal") for n in names])
    axes[1].barh(ys, vals2, xerr=err2, color=colors, error_kw={"capsize": 3, "ecolor": "0.25"})
    top = max((v + e for v, e in zip(vals2, err2[1], strict=True)), default=0.0)
    axes[1].set_xlim(0, min(105.0, max(10.0, 1.2 * top)))
    axes[1].set_title("over-refusal on safe prompts (%)\nlower is better")

    kls = [(models[n].get("kl") or {}).get("mean") for n in names]
    axes[2].barh(ys, [k if k is not None else 0.0 for k in kls], color=colors)
    for y, k in zip(ys, kls, strict=True):
        axes[2].text(0, y, " n/a" if k is None else f" {k:.3g}", va="center", fontsize=8)
    axes[2].set_title("KL(aligned || model), nats/token\njudge-free drift")

    for ax in axes:
        ax.set_yticks(ys, names if ax is axes[0] else [""] * len(names))
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"DriftCaps overview (judge: {res.get('judge', {}).get('name', '?')})")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(results: Mapping[str, Any], out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write drift.json, drift.md and (plots=True, matplotlib installed) refusal_by_category.png + drift_overview.png
    into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "selectivity" not in results:
        results = {**results, "selectivity": selectivity_section(results)}
    paths = {"json": write_json(results, out / "drift.json")}
    if plots:  # each None when matplotlib (the plot extra) is missing
        for key, plot, name in (
            ("refusal_plot", plot_refusal_by_category, "refusal_by_category.png"),
            ("overview_plot", plot_overview, "drift_overview.png"),
        ):
            if (path := plot(results, out / name)) is not None:
                paths[key] = path
    figure = paths["overview_plot"].name if "overview_plot" in paths else None
    (out / "drift.md").write_text(render_markdown(results, figure), encoding="utf-8")
    paths["markdown"] = out / "drift.md"
    return paths
