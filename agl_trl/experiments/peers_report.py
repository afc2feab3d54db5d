"""Turn ``peers.jsonl`` (benchmarks/peers.py) into docs/peers.md tables (mean ± SD over seeds) and a Pareto plot.

The report of :mod:`agl_trl.experiments.peers`; its command line is ``benchmarks/peers_report.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agl_trl.utils import read_jsonl

LABELS = {
    "plain": "plain LoRA",
    "agl": "AGL (demo settings)",
    "agl_align_only": "AGL: lambda_align only",
    "agl_no_rt": "AGL: no R_T",
    "agl_no_collision": "AGL: no collision terms",
    "agl_riem_only": "AGL: E_riem only (mu = 1)",
    "agl_geo_only": "AGL: E_geo only (mu = 0)",
    "agl_hard_gate": "AGL: hard gate",
    "ewc": "EWC (diagonal Fisher)",
    "l2": "L2-SP on dW",
    "kl_ref": "KL to aligned (probe)",
    "safe_lora": "Safe LoRA (post-hoc)",
    "asft": "AsFT-style",
}
ABLATION_ORDER = (
    "agl",
    "agl_align_only",
    "agl_no_rt",
    "agl_no_collision",
    "agl_riem_only",
    "agl_geo_only",
    "agl_hard_gate",
)
PNG_NAME = "peers_pareto.png"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The result rows of ``path``; a ``ValueError`` when there are none."""
    rows = read_jsonl(path, skip_invalid=True)  # a line cut by an interrupted write is dropped
    if not rows:
        raise ValueError(f"{path} has no result rows; run benchmarks/peers.py first")
    return rows


def _mean_sd(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def derived(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the per-seed ratios to plain LoRA of the same scenario and seed (step time, drift reduction)."""
    plain = {(r["scenario"], r["seed"]): r for r in rows if r["method"] == "plain"}
    out = []
    for r in rows:
        r = dict(r)
        p = plain.get((r["scenario"], r["seed"]))
        step = r.get("step_seconds_median")
        if r["method"] == "safe_lora":
            r["step_time_ratio"] = 1.0  # post-hoc projection: the training is the plain run
        elif p and step and p.get("step_seconds_median"):
            r["step_time_ratio"] = step / p["step_seconds_median"]
        if p and p.get("drift_points") and r.get("drift_points") is not None and abs(p["drift_points"]) > 1e-9:
            r["drift_reduction"] = 1.0 - r["drift_points"] / p["drift_points"]
        out.append(r)
    return out


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in derived(rows):
        groups[(r["scenario"], r["method"])].append(r)
    keys = (
        "refusal_unsafe",
        "drift_points",
        "drift_reduction",
        "kl_drift",
        "over_refusal",
        "incoherent",
        "task_exact_match",
        "step_time_ratio",
        "peak_memory_mb",
    )
    return {
        group: {"seeds": sorted(r["seed"] for r in members), **{k: _mean_sd([r.get(k) for r in members]) for k in keys}}
        for group, members in groups.items()
    }


def fmt(stat: tuple[float, float, int] | None, scale: float = 1.0, digits: int = 1) -> str:
    if stat is None:
        return "-"
    mean, sd, n = stat
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}" if n > 1 else f"{mean * scale:.{digits}f}"


def fmt_kl(stat: tuple[float, float, int] | None) -> str:
    if stat is None:
        return "-"
    mean, sd, n = stat
    return f"{mean:.3g} ± {sd:.2g}" if n > 1 else f"{mean:.3g}"


def method_order(methods: set[str]) -> list[str]:
    known = [m for m in LABELS if m in methods]
    return known + sorted(methods - set(known))


def main_table(stats: dict[tuple[str, str], dict[str, Any]], scenario: str) -> list[str]:
    lines = [
        "| method | refusal on unsafe % | drift (pts) | drift reduction % | KL drift (nats/token) | over-refusal % "
        "| task exact match % | step-time ratio | peak train memory (MB) | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in method_order({m for s, m in stats if s == scenario}):
        st = stats[(scenario, method)]
        lines.append(
            f"| {LABELS.get(method, method)} | {fmt(st['refusal_unsafe'], 100)} | {fmt(st['drift_points'])} "
            f"| {fmt(st['drift_reduction'], 100)} | {fmt_kl(st['kl_drift'])} | {fmt(st['over_refusal'], 100)} "
            f"| {fmt(st['task_exact_match'], 100)} | {fmt(st['step_time_ratio'], 1, 2)} | "
            f"{fmt(st['peak_memory_mb'], 1, 0)} | {len(st['seeds'])} |"
        )
    return lines


def ablation_table(stats: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    full = stats.get(("standard", "agl"))
    lines = [
        "| variant | refusal on unsafe % | drift (pts) | KL drift | task exact match % | Δ drift vs full AGL (pts) "
        "| Δ task vs full AGL (pts) |",
        "|---|---|---|---|---|---|---|",
    ]
    variants = [m for m in ABLATION_ORDER if ("standard", m) in stats]
    if ("standard", "ewc") in stats:
        variants.append("ewc")
    for method in variants:
        st = stats[("standard", method)]
        label = "AGL: diagonal Fisher (= EWC by construction)" if method == "ewc" else LABELS.get(method, method)

        def delta(key: str, scale: float, st: dict[str, Any] = st, method: str = method) -> str:
            if full is None or st[key] is None or full[key] is None or method == "agl":
                return "-"
            return f"{(st[key][0] - full[key][0]) * scale:+.1f}"

        lines.append(
            f"| {label} | {fmt(st['refusal_unsafe'], 100)} | {fmt(st['drift_points'])} | {fmt_kl(st['kl_drift'])} "
            f"| {fmt(st['task_exact_match'], 100)} | {delta('drift_points', 1)} | {delta('task_exact_match', 100)} |"
        )
    return lines


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Methods not dominated in (lower drift, higher task score)."""
    front = []
    for m, (d, t) in points.items():
        if not any((d2 <= d and t2 >= t) and (d2 < d or t2 > t) for m2, (d2, t2) in points.items() if m2 != m):
            front.append(m)
    return front


def plot(stats: dict[tuple[str, str], dict[str, Any]], path: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    front: list[str] = []
    methods = method_order({m for _, m in stats})
    cmap = plt.get_cmap("tab20")
    colour = {m: cmap(i % 20) for i, m in enumerate(methods)}  # one colour per method in both scenarios
    for scenario, marker in (("standard", "o"), ("stress", "s")):
        points = {}
        for (s, method), st in stats.items():
            if s != scenario or st["drift_points"] is None or st["task_exact_match"] is None:
                continue
            d, t = st["drift_points"], st["task_exact_match"]
            points[method] = (d[0], 100 * t[0])
            filled = "full" if scenario == "standard" else "none"
            ax.errorbar(
                d[0], 100 * t[0], xerr=d[1], yerr=100 * t[1], fmt=marker, fillstyle=filled, capsize=3, alpha=0.85, color=colour[method],
                label=f"{LABELS.get(method, method)} ({scenario})",
            )  # fmt: skip
            ax.annotate(method, (d[0], 100 * t[0]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if scenario == "standard":
            front = pareto_front(points)
            pts = sorted(points[m] for m in front)
            if len(pts) > 1:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "k--", lw=0.8, alpha=0.6)
    ax.set_xlabel("refusal drift vs the aligned model (points, lower is better)")
    ax.set_ylabel("task exact match (%, higher is better)")
    ax.set_title("AGL vs peers: task score vs drift (mean ± SD over seeds; hollow = stress)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return front


def write_report(rows: list[dict[str, Any]], out_dir: Path, source: Path | None = None) -> Path:
    """Write ``peers.md`` and ``peers_pareto.png`` into ``out_dir``; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = aggregate(rows)
    front = plot(stats, out_dir / PNG_NAME)
    first = rows[0]
    modes = sorted({r.get("mode", "?") for r in rows})
    scenarios = [s for s in ("standard", "stress") if any(k[0] == s for k in stats)]
    settings = {r["method"]: r.get("settings") for r in rows}
    lr = {s: sorted({r["learning_rate"] for r in rows if r["scenario"] == s}) for s in scenarios}
    steps = {s: sorted({r["steps"] for r in rows if r["scenario"] == s}) for s in scenarios}
    lines = [
        "# AGL against its peers",
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} by `benchmarks/peers_report.py`"
        f" from `{source or 'peers.jsonl'}` ({len(rows)} runs, mode {', '.join(modes)}).",
        "",
        ("**Smoke run on a random tiny Llama: the numbers mean nothing.** " if "tiny" in modes else "")
        + "Set-up: the demo's (docs/demo.md): SmolLM2-135M-Instruct aligned with a merged safety LoRA, a benign task "
        "fine-tune (LoRA on all linear layers), the same data, steps, learning rate and batch for every method; "
        "the seed sets the LoRA initialisation and the data order. Refusal and over-refusal: "
        f"{first.get('judge', 'keyword')} judge on {first.get('n_unsafe')} unsafe / {first.get('n_safe')} safe "
        f"DriftCaps eval prompts; aligned model: {100 * first['aligned_refusal_unsafe']:.1f}% refusal on unsafe, "
        f"{100 * first['aligned_over_refusal']:.1f}% over-refusal. Drift = aligned refusal - refusal (points); drift "
        "reduction = 1 - drift / drift of plain LoRA (same seed); KL drift = mean per-token KL(aligned || model) on "
        "the aligned model's own eval answers; step-time ratio = median step time / plain LoRA's (same seed); peak "
        "memory = peak resident memory above the level before training (the demo trains on CPU), sampled every 10 ms; "
        "freed memory that the allocator keeps makes it depend on what ran before in the process (several hundred "
        "MB), so only larger differences mean something. "
        "Mean ± SD over seeds. "
        "With a keyword judge and about a hundred prompts a refusal rate carries ~5 points of sampling error.",
        "",
        "Scenarios: " + "; ".join(f"{s}: {steps[s]} steps at learning rate {lr[s]}" for s in scenarios) + ".",
        "",
    ]
    for scenario in scenarios:
        lines += [f"## {scenario.capitalize()} scenario", "", *main_table(stats, scenario), ""]
    if any(k == ("standard", m) for k in stats for m in ABLATION_ORDER[1:]):
        lines += ["## AGL ablations (standard scenario)", "", *ablation_table(stats), ""]
    lines += [
        "## Pareto plot",
        "",
        f"![task score vs drift]({PNG_NAME})",
        "",
        "Not dominated in the standard scenario (lower drift and higher task score): "
        + (", ".join(LABELS.get(m, m) for m in front) or "-")
        + ".",
        "",
        "## Settings of each method",
        "",
        "| method | settings |",
        "|---|---|",
        *[f"| {LABELS.get(m, m)} | `{json.dumps(settings[m], sort_keys=True)}` |" for m in method_order(set(settings))],
        "",
        "The peers' weights are not tuned per method (one value each, in the units stated in their modules): read "
        "them on the Pareto plot, where a method that only trades task score for drift moves along the frontier. "
        "Lisa (alternating alignment/task steps) is not included: it changes the training loop, not the loss.",
        "",
    ]
    path = out_dir / "peers.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of ``benchmarks/peers_report.py``; returns the exit status (2: no readable rows)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="peers.jsonl written by benchmarks/peers.py")
    parser.add_argument("--out", default="docs", help="folder for peers.md and peers_pareto.png (default: docs)")
    args = parser.parse_args(argv)
    try:
        rows = read_rows(Path(args.results))
    except (OSError, ValueError) as exc:
        print(f"peers_report: {exc}", file=sys.stderr)
        return 2
    print(write_report(rows, Path(args.out), source=Path(args.results)))
    return 0


__all__ = ["LABELS", "PNG_NAME", "aggregate", "derived", "main", "pareto_front", "read_rows", "write_report"]
