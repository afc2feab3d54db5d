"""Turn ``peers.jsonl`` (benchmarks/peers.py) into docs/peers.md and its plots.

Everything reported comes from the *test* rows at each method's validation-chosen strength (the same rule as the
benchmark: :func:`~benchmarks.lab.peers_config.choose`), with paired bootstrap 95% intervals over prompts, task
items and seeds (:mod:`agl_trl.evaluation.selectivity`); the validation sweeps are shown as what chose the points.
The command line is ``benchmarks/peers_report.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agl_trl.evaluation.selectivity import Estimate, compare, format_estimate
from agl_trl.experiments.plots import draw_meter_curves
from agl_trl.settings import AGLSettings
from agl_trl.utils import read_jsonl
from benchmarks.lab.peers_ablations import ablation_table, default_table, row_verdicts
from benchmarks.lab.peers_config import MAX_TASK_DROP, PROTOCOL_METHODS, SWEEP_SEED, choose, method_order
from benchmarks.lab.peers_front import write_front
from benchmarks.lab.peers_paired import paired_section
from benchmarks.lab.peers_styles import style_sections
from benchmarks.lab.registry import ALL_METHODS, DEFAULT_METHOD, LABELS

PNG_NAME = "peers_pareto.png"
KL_PNG_NAME = "peers_agl_kl.png"  # the drift budget's KL meter against the regulariser's estimate, per AGL run
N_BOOT = 4000


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The result rows of ``path``; a ``ValueError`` when there are none."""
    rows = read_jsonl(path, skip_invalid=True)  # a line cut by an interrupted write is dropped
    if not rows:
        raise ValueError(f"{path} has no result rows; run benchmarks/peers.py first")
    return rows


def _of(rows: list[dict[str, Any]], split: str, method: str) -> list[dict[str, Any]]:
    """The rows of a split and method; on validation the sweep seed's only (other seeds: ablation points)."""
    return [
        r for r in rows
        if r["split"] == split and r["method"] == method and (split != "validation" or r["seed"] == SWEEP_SEED)
    ]  # fmt: skip


def chosen_points(rows: list[dict[str, Any]], max_task_drop: float) -> dict[str, dict[str, Any]]:
    """method -> {"strength", "why", "sweep": validation rows, "test": test rows at that strength (by seed)} for
    every method whose sweep is complete enough to choose (plain LoRA: its single point)."""
    plain_val = _of(rows, "validation", "plain")
    if not plain_val:
        return {}
    plain_task = plain_val[0]["task_exact_match"]
    present = {r["method"] for r in rows if r["method"] != "aligned"}
    methods = method_order(sorted(present, key=lambda m: (ALL_METHODS.index(m) if m in ALL_METHODS else 99, m)))
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        sweep = sorted(
            _of(rows, "validation", method), key=lambda r: -math.inf if r["strength"] is None else r["strength"]
        )
        if not sweep:
            continue
        strength, why = choose(sweep, plain_task, max_task_drop) if method != "plain" else (None, "no strength")
        test = sorted((r for r in _of(rows, "test", method) if r["strength"] == strength), key=lambda r: r["seed"])
        if not test and method not in PROTOCOL_METHODS:  # an ablation: validation points only, never tested
            strength, why = math.nan, f"ablation, validation only ({len(sweep)} points): not tested"
        elif not test and method != "plain":  # the benchmark tests a point only once its sweep is complete
            strength, why = math.nan, f"sweep in progress ({len(sweep)} points so far): nothing chosen yet"
        out[method] = {"strength": strength, "why": why, "sweep": sweep, "test": test}
    for method in list(out):  # points tested besides the rule's choice (AGL's package default): shown, labelled
        others = sorted({r["strength"] for r in _of(rows, "test", method)} - {out[method]["strength"], None})
        for value in others:
            test = sorted((r for r in _of(rows, "test", method) if r["strength"] == value), key=lambda r: r["seed"])
            out[f"{method}@{value:g}"] = {"strength": value, "why": "also tested", "sweep": [], "test": test}
    return out


def _label(key: str) -> str:
    """A method's label; ``method@strength`` (a point tested besides the rule's choice) says so."""
    method, _, value = key.partition("@")
    name = LABELS.get(method, method)
    if not value:
        return name
    default = method == DEFAULT_METHOD and float(value) == AGLSettings().kl_budget
    return f"{name} at {value} ({'the package default; ' if default else ''}not the rule's choice)"


MAX_LOAD_DIFFERENCE = 1.0  # 1-minute load averages further apart than this make two step times incomparable


def comparable_conditions(row: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two rows' step times were measured under the same conditions: the same torch threads and 1-minute
    load averages (at the row's end) within :data:`MAX_LOAD_DIFFERENCE`. Rows without that record count as
    comparable (older files)."""
    env, other_env = row.get("environment") or {}, other.get("environment") or {}
    if env.get("torch_threads") != other_env.get("torch_threads"):
        return False
    load, other_load = env.get("load_average"), other_env.get("load_average")
    return not (load and other_load) or abs(load[0] - other_load[0]) <= MAX_LOAD_DIFFERENCE


def _ratio(rows: list[dict[str, Any]], split: str, row: dict[str, Any]) -> float | None:
    """Median step time / plain LoRA's of the same seed; None when either is missing or the two were measured under
    other conditions (:func:`comparable_conditions`: on a shared CPU a busier machine slows a run 2-4x)."""
    plain = [
        r for r in rows
        if r["method"] == "plain" and r["seed"] == row["seed"] and r.get("step_seconds_median")
    ]  # fmt: skip
    if not plain or not row.get("step_seconds_median") or not comparable_conditions(row, plain[0]):
        return None
    return row["step_seconds_median"] / plain[0]["step_seconds_median"]


def _mean_sd(values: Sequence[float | None], scale: float = 1.0, digits: int = 2) -> str:
    vals = [scale * float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.fmean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _strength_cell(method: str, rows: list[dict[str, Any]], strength: float | None) -> str:
    name = next((r.get("strength_name") for r in rows if r.get("strength_name")), None)
    return "-" if strength is None else f"{name} = {strength:g}"


def test_table(
    rows: list[dict[str, Any]], chosen: dict[str, dict[str, Any]]
) -> tuple[list[str], dict[str, dict[str, Estimate]]]:
    """The headline table (test split, chosen points, paired bootstrap) and its estimates."""
    reference = next((r for r in rows if r["split"] == "test" and r["method"] == "aligned"), None)
    complete = {m: c for m, c in chosen.items() if c["test"]}
    if reference is None or "plain" not in complete:
        return ["(no test rows yet)"], {}
    # every test seed of each point; seeds are paired by index when all points have as many (selectivity.compare)
    models = {m: [row_verdicts(r) for r in c["test"]] for m, c in complete.items()}
    est = compare(models, row_verdicts(reference), baseline="plain", n_boot=N_BOOT, seed=0)
    ref_est = compare({"aligned": [row_verdicts(reference)]}, row_verdicts(reference), n_boot=N_BOOT, seed=0)["aligned"]
    head = (
        "| method | chosen strength | refusal on unsafe % | over-refusal % | gap (pts) | **gap drift (pts)** | "
        "gap-drift reduction vs LoRA % | refusal drift (pts) | KL drift (nats/token) | task exact match % | "
        "task vs LoRA (pts) | incoherent % | step-time ratio | seeds |"
    )
    lines = [head, "|" + "---|" * 14]
    lines.append(
        f"| {LABELS['aligned']} | - | {format_estimate(ref_est['refusal_unsafe'])} | "
        f"{format_estimate(ref_est['over_refusal'])} | {format_estimate(ref_est['gap'])} | 0 | - | 0 | 0 | "
        f"{100 * reference['task_exact_match']:.1f} | - | - | - | - |"
    )
    for method, c in complete.items():
        e, test = est[method], c["test"]
        lines.append(
            f"| {_label(method)} | {_strength_cell(method, test, c['strength'])} | "
            f"{format_estimate(e['refusal_unsafe'])} | {format_estimate(e['over_refusal'])} | "
            f"{format_estimate(e['gap'])} | **{format_estimate(e['gap_drift'])}** | "
            f"{format_estimate(e['gap_drift_reduction']) if method != 'plain' else '0'} | "
            f"{format_estimate(e['refusal_drift'])} | {_mean_sd([r['kl_drift'] for r in test], digits=3)} | "
            f"{format_estimate(e['task'])} | "
            f"{format_estimate(e['task_vs_baseline']) if method != 'plain' else '0'} | "
            f"{_mean_sd([r['incoherent'] for r in test], 100, 1)} | "
            f"{_mean_sd([_ratio(rows, 'test', r) for r in test])} | {len(test)} |"
        )
    return lines, est


def sweep_tables(rows: list[dict[str, Any]], chosen: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for method, c in chosen.items():
        if not c["sweep"]:
            continue
        lines += [
            f"**{LABELS.get(method, method)}** ({c['why']})",
            "",
            "| strength | refusal on unsafe % | over-refusal % | gap drift (pts) | task exact match % | step-time ratio |"
            " chosen |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in c["sweep"]:
            mark = "**yes**" if r["strength"] == c["strength"] else ""
            lines.append(
                f"| {_strength_cell(method, [r], r['strength'])} | {100 * r['refusal_unsafe']:.1f} | "
                f"{100 * r['over_refusal']:.1f} | {100 * r['gap_drift']:.1f} | {100 * r['task_exact_match']:.1f} | "
                f"{_mean_sd([_ratio(rows, 'validation', r)])} | {mark} |"
            )
        lines.append("")
    return lines


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Methods not dominated in (lower gap drift, higher task score)."""
    front = []
    for m, (d, t) in points.items():
        if not any((d2 <= d and t2 >= t) and (d2 < d or t2 > t) for m2, (d2, t2) in points.items() if m2 != m):
            front.append(m)
    return front


def plot(chosen: dict[str, dict[str, Any]], est: dict[str, dict[str, Estimate]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    cmap = plt.get_cmap("tab20")
    for i, (method, c) in enumerate(chosen.items()):
        colour = cmap(i % 20)
        pts = [(100 * r["gap_drift"], 100 * r["task_exact_match"]) for r in c["sweep"]]
        if pts:
            left.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colour, label=_label(method))
        if method in est:
            e = est[method]
            x, y = 100 * e["gap_drift"].value, 100 * e["task"].value
            xerr = [[x - 100 * e["gap_drift"].ci_low], [100 * e["gap_drift"].ci_high - x]]
            yerr = [[y - 100 * e["task"].ci_low], [100 * e["task"].ci_high - y]]
            right.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=colour, capsize=3, label=_label(method))
            right.annotate(method, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    left.set_title("validation sweeps (seed 0): each method's front")
    right.set_title("test split, chosen points (95% paired bootstrap)")
    for ax in (left, right):
        ax.set_xlabel("gap drift vs the aligned model (points, lower is better)")
        ax.set_ylabel("task exact match (%, higher is better)")
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _meter_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose training logged the KL meter (one per trained AGL run: the test rows of a reused sweep
    training are skipped), validation sweeps first."""
    seen, runs = set(), []
    for r in sorted(rows, key=lambda r: (r["split"] != "validation", r["method"], r.get("strength") or 0, r["seed"])):
        curves = r.get("agl_curves") or {}
        key = (r["method"], r.get("strength"), r["seed"])
        if curves.get("kl_measured") and key not in seen:
            seen.add(key)
            runs.append(r)
    return runs


def meter_table(rows: list[dict[str, Any]], cycle: int = 4) -> list[str]:
    """Per AGL run: the budget, the measured probe KL and the calibrated estimate over the last ``cycle`` logged
    readings (the meter cycles through its batches), their ratio over the run, and the final lambda."""
    lines = [
        "| method | strength | seed | measured KL, last readings (nats/token) | estimate, same steps | measured / "
        "estimate: median [min, max] over the run | final lambda |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in _meter_runs(rows):
        c = r["agl_curves"]
        measured = [v for _, v in c["kl_measured"]]
        ratios = [v for _, v in c.get("kl_ratio", []) if v == v]
        steps = {s for s, _ in c["kl_measured"][-cycle:]}
        estimate = [v for s, v in c.get("kl_estimate", []) if s in steps]
        lam = c.get("lambda", [[None, None]])[-1][1]
        lines.append(
            f"| {LABELS.get(r['method'], r['method'])} | {_strength_cell(r['method'], [r], r.get('strength'))} | "
            f"{r['seed']} | {statistics.mean(measured[-cycle:]):.4f} | "
            f"{statistics.mean(estimate) if estimate else float('nan'):.4f} | "
            + (f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]" if ratios else "-")
            + f" | {lam:.3g} |"
        )
    return lines if len(lines) > 2 else []


def plot_meter(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in _meter_runs(rows) if r["split"] == "validation"] or _meter_runs(rows)
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab10")
    for i, r in enumerate(runs):
        label = f"{r['method']} {r.get('strength_name') or ''}={r.get('strength')} seed {r['seed']}"
        budget = r["strength"] if r.get("strength_name") == "kl_budget" else None
        draw_meter_curves(ax, r["agl_curves"], label=label, colour=cmap(i % 10), budget=budget)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("KL(aligned || tuned) per probe response token (nats)")
    ax.set_title("drift budget: KL meter (solid) vs calibrated estimate (dashed); thin lines: budgets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cost_line(rows: list[dict[str, Any]]) -> str:
    seconds = sum(r.get("run_seconds") or 0 for r in rows)
    threads = sorted({(r.get("environment") or {}).get("torch_threads") for r in rows} - {None})
    return f"{len(rows)} rows, {seconds / 3600:.1f} h of run time (torch threads {threads}; set-up stages not included)"


def setup_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Which set-up each test row was measured on (``setup_id``: the shipped set-up's version, or a local build's
    weight hash); empty when every test row records the same one. Rows on different set-ups are measured against
    different aligned models, so a difference between them is set-up plus method."""
    test = [r for r in rows if r["split"] == "test"]
    groups: dict[str, list[str]] = {}
    for r in test:
        label = r["method"] if r.get("strength") is None else f"{r['method']} {r['strength']:g}"
        groups.setdefault(r.get("setup_id") or "not recorded", []).append(f"{label} seed {r['seed']}")
    if len(groups) <= 1 and "not recorded" not in groups:
        return []
    lines = [
        "## Set-ups of the test rows",
        "",
        "Each row records the set-up it was measured on (the aligned model's weight hash; rows from before 2026-12-04 "
        "do not). A set-up rebuilt on another machine can give other aligned weights, and every drift above is "
        "measured against the one aligned test row of this file: compare rows of one set-up with each other.",
        "",
        "| set-up | test rows |",
        "|---|---|",
    ]
    lines += [f"| {setup} | {', '.join(names)} |" for setup, names in sorted(groups.items())]
    return [*lines, ""]


def write_report(
    rows: list[dict[str, Any]], out_dir: Path, source: Path | None = None, max_task_drop: float = MAX_TASK_DROP,
    readme: Path | None = None,
) -> Path:  # fmt: skip
    """Write ``peers.md`` and ``peers_pareto.png`` into ``out_dir`` (and the headline block of ``readme``:
    :mod:`benchmarks.lab.peers_paired`); returns the markdown path. ``max_task_drop``: the selection rule's task
    tolerance (the benchmark's)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    max_drop = max_task_drop
    chosen = chosen_points(rows, max_drop)
    table, est = test_table(rows, chosen)
    if chosen:
        plot(chosen, est, out_dir / PNG_NAME)
    modes = sorted({r["mode"] for r in rows if r.get("mode")})
    ref = {
        s: next((r for r in rows if r["method"] == "aligned" and r["split"] == s), {}) for s in ("validation", "test")
    }
    judge = ref["test"].get("judge") or next((r.get("judge") for r in rows if r.get("judge")), "keyword")
    curve = next((r.get("task_curve") for r in rows if r["method"] == "plain" and r.get("task_curve")), None)
    front = pareto_front({m: (e["gap_drift"].value, e["task"].value) for m, e in est.items()}) if est else []
    plain_est = est.get("plain")
    mdd = (
        statistics.median([e["gap_drift_vs_baseline"].mdd for m, e in est.items() if m != "plain"])
        if len(est) > 1
        else None
    )
    task_mdd = (
        statistics.median([e["task_vs_baseline"].mdd for m, e in est.items() if m != "plain"]) if len(est) > 1 else None
    )
    first = next((r for r in rows if r["method"] == "plain"), rows[0])
    lines = [
        "# AGL against its peers",
        "",
        f"Generated by `benchmarks/peers_report.py` from `{source or 'peers.jsonl'}` ({_cost_line(rows)}; mode "
        f"{', '.join(modes)}).",
        "",
        "The current package default's fresh-seed test rows (DriftCaps v3, seeds no validation choice used), with "
        "plain LoRA and KL to aligned paired against it and the targets per phrasing style, are in "
        "[generalization.md](generalization.md#test-split-fresh-seeds-driftcaps-v3).",
        "",
        ("**Smoke run on a random tiny Llama: the numbers mean nothing.** " if "tiny" in modes else "")
        + "Protocol (docs/peers.md, `benchmarks.lab.peers`): the aligned SmolLM2-135M-Instruct, a benign task "
        "fine-tune (LoRA on all linear layers; same data, steps, learning rate and batch for every method). Every "
        "method's strength is swept (one seed) on the DriftCaps **validation** split "
        f"({ref['validation'].get('n_unsafe')} unsafe / {ref['validation'].get('n_safe')} safe prompts) and the "
        "task's validation items; the point it would ship is chosen there (smallest validation gap drift with the "
        f"task at most {100 * max_drop:g} points below plain LoRA's), then trained with every seed and measured "
        f"once on the **test** split ({ref['test'].get('n_unsafe')} unsafe / {ref['test'].get('n_safe')} safe "
        f"prompts, other behaviours and phrasings; {first.get('task_n')} task items at most on validation). "
        f"Judge: **{judge}** (refusal verdicts on every number). Gap = refusal on unsafe - over-refusal on safe; gap "
        "drift = aligned gap - model gap (points of selectivity lost, the primary figure); intervals: paired "
        "bootstrap 95% over prompts, task items and seeds. KL drift: mean per-token KL(aligned || model) on the "
        "aligned model's own test answers (mean ± SD over seeds). Step-time ratio: median step time / plain LoRA's "
        f"(same seed), shown only when both ran with the same torch threads and load averages within "
        f"{MAX_LOAD_DIFFERENCE:g} of each other ('-' otherwise); rows trained in different sessions can still differ "
        "in CPU speed, so the step-time figure is the side-by-side overhead benchmark (docs/benchmarks.md).",
        "",
    ]
    if curve:
        lines += [
            "## Task learning curve (plain LoRA, validation items, sweep seed)",
            "",
            "| step | " + " | ".join(str(s) for s, _ in curve) + " |",
            "|---|" + "---|" * len(curve),
            "| exact match % | " + " | ".join(f"{100 * v:.1f}" for _, v in curve) + " |",
            "",
        ]
    lines += ["## Test split: each method at its validation-chosen strength", "", *table, ""]
    if mdd is not None:
        lines += [
            f"Smallest difference this comparison resolves (5% level, 80% power; median over methods of the paired "
            f"bootstrap): gap drift vs plain LoRA **{100 * mdd:.1f} points**, task score {100 * task_mdd:.1f} points.",
            "",
        ]
    if plain_est is not None:
        lines += [
            "Not dominated on the test split (lower gap drift and higher task score, point estimates): "
            + (", ".join(_label(m) for m in front) or "-")
            + ".",
            "",
            f"![task score vs gap drift]({PNG_NAME})",
            "",
        ]
    lines += paired_section(rows, chosen, label=_label, n_boot=N_BOOT)
    lines += setup_lines(rows)
    lines += style_sections(rows, chosen, label=_label, n_boot=N_BOOT)
    lines += ["## Validation sweeps (what chose each point)", "", *sweep_tables(rows, chosen)]
    ablations = ablation_table(rows, N_BOOT, label=_label)
    if ablations:
        lines += [
            "## AGL's ablations at several validation seeds",
            "",
            "Each term's worth, measured where defaults are chosen: the ablation and AGL at the same strength and "
            "seeds on the validation split, paired by seed and prompt (95% paired bootstrap).",
            "",
            *ablations,
        ]
    lines += default_table(rows, AGLSettings().kl_budget, label=_label)
    meter = meter_table(rows)
    if meter:
        plot_meter(rows, out_dir / KL_PNG_NAME)
        lines += [
            "## AGL's drift budget in training (KL meter vs the regulariser's estimate)",
            "",
            "The meter measures KL(aligned || tuned) per response token on held-out probe prompts every "
            "`agl_kl_every` steps (adapter off vs on); the estimate is c * 0.5 vec(dW)^T F vec(dW), c calibrated at "
            "the first reading and frozen (docs/method.md, section 4). Readings cycle through 4 probe batches, so "
            "single readings vary with the batch.",
            "",
            *meter,
            "",
            f"![KL meter vs estimate]({KL_PNG_NAME})",
            "",
        ]
    settings = {
        m: c["test"][0].get("settings") if c["test"] else c["sweep"][0].get("settings") for m, c in chosen.items()
    }
    lines += [
        "## Settings of each chosen point",
        "",
        "| method | settings |",
        "|---|---|",
        *[f"| {_label(m)} | `{json.dumps(s, sort_keys=True)}` |" for m, s in settings.items()],
        "",
    ]
    path = out_dir / "peers.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    if readme is not None:
        write_front(readme, rows, chosen, est, front, ref["test"].get("gap"), judge, label=_label, n_boot=N_BOOT)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of ``benchmarks/peers_report.py``; returns the exit status (2: no readable rows)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="peers.jsonl written by benchmarks/peers.py")
    parser.add_argument("--out", default="docs", help="folder for peers.md and peers_pareto.png (default: docs)")
    parser.add_argument("--readme", help="also rewrite this README's generated headline block (README.md)")
    parser.add_argument(
        "--max-task-drop", type=float, default=MAX_TASK_DROP, help="the selection rule's task tolerance"
    )
    args = parser.parse_args(argv)
    try:
        rows = read_rows(Path(args.results))
    except (OSError, ValueError) as exc:
        print(f"peers_report: {exc}", file=sys.stderr)
        return 2
    readme = Path(args.readme) if args.readme else None
    print(write_report(rows, Path(args.out), Path(args.results), args.max_task_drop, readme=readme))
    return 0


__all__ = [
    "KL_PNG_NAME", "PNG_NAME", "chosen_points", "comparable_conditions", "main", "meter_table",
    "pareto_front", "read_rows", "test_table", "write_report",
]  # fmt: skip
