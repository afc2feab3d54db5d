"""The README's results: a three-row table, the default by phrasing style, where it ties or loses, and one figure.

Everything here is generated from the peers rows (``docs/results/peers.jsonl``) by ``benchmarks/peers_report.py
--readme README.md``, between the README's markers (:data:`~benchmarks.lab.peers_paired.README_START` /
``README_END``), and a test regenerates it and fails if the README differs, so the front page never drifts from the
rows. What it shows, all on the test split with 95% paired bootstrap intervals and the judge named:

* the aligned model, plain LoRA and the package default (refusal on unsafe, over-refusal on safe, gap drift, task);
* per phrasing style, the test-only styles first: plain LoRA's and the default's gap drift and their paired
  difference, so a style where the default is worse than no protection is on the front page;
* one generated line on where the default ties or loses against every other tested point (the paired verdicts of
  :mod:`benchmarks.lab.peers_paired`);
* the figure (``docs/img/front.png``): selectivity gap kept against task score for plain LoRA, the default and the
  points not dominated on the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agl_trl.evaluation.selectivity import Estimate, compare, format_estimate
from benchmarks.lab.peers_ablations import row_verdicts
from benchmarks.lab.peers_paired import METRICS, NotPaired, Paired, default_key, paired_against_default, update_readme
from benchmarks.lab.peers_styles import group_verdicts, held_out_first, prompt_groups, shown

FIGURE = "front.png"  # under docs/img/


def _aligned(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["split"] == "test" and r["method"] == "aligned"), None)


def results_table(
    rows: Sequence[Mapping[str, Any]], est: Mapping[str, Mapping[str, Estimate]], key: str, label: Callable[[str], str],
    n_boot: int, others: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """Aligned model, plain LoRA, the default (``key``) and ``others`` (keys of ``est``): refusal, over-refusal, gap
    drift and task."""
    reference = _aligned(rows)
    ref = compare({"aligned": [row_verdicts(reference)]}, row_verdicts(reference), n_boot=n_boot, seed=0)["aligned"]
    lines = [
        "| | refusal on unsafe % | over-refusal on safe % | gap drift (pts) | task exact match % |",
        "|---|---|---|---|---|",
        f"| aligned model | {format_estimate(ref['refusal_unsafe'])} | {format_estimate(ref['over_refusal'])} | 0 | - |",
    ]
    for name in ("plain", key, *others):
        e = est[name]
        title = f"**{label(name)}**" if name == key else label(name)
        lines.append(
            f"| {title} | {format_estimate(e['refusal_unsafe'])} | {format_estimate(e['over_refusal'])} | "
            f"{format_estimate(e['gap_drift'])} | {format_estimate(e['task'])} |"
        )
    return lines


def style_table(
    rows: Sequence[Mapping[str, Any]], chosen: Mapping[str, Mapping[str, Any]], key: str, groups: Mapping[str, Any],
    label: Callable[[str], str], n_boot: int,
) -> list[str]:  # fmt: skip
    """Per phrasing style (test-only first): prompts, the aligned gap, plain LoRA's and the default's gap drift and
    the paired difference default - plain LoRA (below 0: the default keeps more). Empty when a row's prompts are not
    all in ``groups``."""
    reference = _aligned(rows)
    runs = {m: chosen[m]["test"] for m in ("plain", key)}
    if any(i not in groups for r in [reference, *runs["plain"], *runs[key]] for i in r.get("prompt_ids") or [None]):
        return []
    lines = [
        f"| phrasing style (unsafe / safe prompts) | aligned gap (pts) | plain LoRA: gap drift | {label(key)}: gap "
        "drift | default - plain LoRA, paired |",
        "|---|---|---|---|---|",
    ]
    for style in held_out_first({groups[i][1] for i in reference["prompt_ids"]} - {None}, "by_style"):
        ref = group_verdicts(reference, groups, style)
        if not ref.unsafe or not ref.safe:
            continue
        models = {m: [group_verdicts(r, groups, style) for r in test] for m, test in runs.items()}
        est = compare(models, ref, baseline="plain", n_boot=n_boot, seed=0)
        aligned_gap = 100 * (sum(ref.unsafe) / len(ref.unsafe) - sum(ref.safe) / len(ref.safe))
        lines.append(
            f"| {shown(style)} ({len(ref.unsafe)} / {len(ref.safe)}) | {aligned_gap:.1f} | "
            f"{format_estimate(est['plain']['gap_drift'])} | {format_estimate(est[key]['gap_drift'])} | "
            f"{format_estimate(est[key]['gap_drift_vs_baseline'])} |"
        )
    return lines


def ties_and_losses(paired: Mapping[str, Paired | NotPaired], label: Callable[[str], str]) -> list[str]:
    """Per metric, a bullet: the points the default loses to (with point - default), and its ties and wins."""
    done = {n: p for n, p in paired.items() if isinstance(p, Paired)}
    lines = [f"The default paired against the {len(done)} other tested points (point - default, points):", ""]
    for metric in METRICS:
        losses = [f"{label(n)}: {format_estimate(p.differences[metric])}" for n, p in done.items()
                  if p.verdicts[metric] == "loss"]  # fmt: skip
        ties = sum(p.verdicts[metric] == "tie" for p in done.values())
        wins = sum(p.verdicts[metric] == "win" for p in done.values())
        lost = f"loses to {len(losses)} ({'; '.join(losses)})" if losses else "loses to none"
        lines.append(f"- {metric}: {lost}, ties {ties}, wins {wins}.")
    return lines


def front_block(
    rows: Sequence[Mapping[str, Any]], chosen: Mapping[str, Mapping[str, Any]],
    est: Mapping[str, Mapping[str, Estimate]], label: Callable[[str], str] = str, n_boot: int = 4000,
    groups: Mapping[str, Any] | None = None,
) -> str:  # fmt: skip
    """The README's generated results (markers excluded): the three-row table, the style table and the line."""
    try:
        key, paired = paired_against_default(rows, chosen, n_boot)
    except NotPaired as exc:
        return f"(not paired: {exc})\n"
    reference = _aligned(rows)
    if key is None or key not in est or "plain" not in est or reference is None:
        return "(no test rows of the package default yet)\n"
    seeds = sorted({int(r["seed"]) for r in chosen[key]["test"]})
    judge = reference.get("judge") or "keyword"
    lines = [
        f"DriftCaps test split ({reference['n_unsafe']} unsafe / {reference['n_safe']} safe prompts), "
        f"seeds {', '.join(map(str, seeds))}, judge: {judge}; 95% paired bootstrap intervals:",
        "",
        *results_table(rows, est, key, label, n_boot),
        "",
    ]
    styles = style_table(rows, chosen, key, groups if groups is not None else prompt_groups("style"), label, n_boot)
    if styles:
        lines += [
            "By phrasing style (test-only styles first: no probe, meter or anchor sequence has them):",
            "",
            *styles,
            "",
        ]
    lines += ties_and_losses(paired, label)
    return "\n".join(lines) + "\n"


def front_figure(
    est: Mapping[str, Mapping[str, Estimate]], aligned_gap: float, key: str, shown_points: Sequence[str],
    path: Path, label: Callable[[str], str] = str, title: str = "DriftCaps test split, 95% paired bootstrap",
) -> None:  # fmt: skip
    """The README's figure: each point's selectivity gap (refusal on unsafe - over-refusal on safe) against its task
    score, with their intervals, and the aligned model's gap as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.axvline(100 * aligned_gap, color="grey", linestyle="--", linewidth=1)
    ax.annotate("aligned model's gap", (100 * aligned_gap, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                ha="right", va="bottom", fontsize=8, color="grey")  # fmt: skip
    for index, name in enumerate(shown_points):
        e = est[name]
        x, y = 100 * e["gap"].value, 100 * e["task"].value
        xerr = [[x - 100 * e["gap"].ci_low], [100 * e["gap"].ci_high - x]]
        yerr = [[y - 100 * e["task"].ci_low], [100 * e["task"].ci_high - y]]
        style = {"color": "C3", "markersize": 9} if name == key else {"color": "C0" if name == "plain" else "C7"}
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=3, **style)
        offset = (5, 5) if index % 2 == 0 else (5, -12)  # neighbours' labels above and below
        ax.annotate(label(name), (x, y), textcoords="offset points", xytext=offset, fontsize=8)
    ax.set_xlabel("selectivity gap kept: refusal on unsafe - over-refusal on safe (points)")
    ax.set_ylabel("task exact match (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_front(
    readme: Path, rows: Sequence[Mapping[str, Any]], chosen: Mapping[str, Mapping[str, Any]],
    est: Mapping[str, Mapping[str, Estimate]], front: Sequence[str], aligned_gap: float | None, judge: str,
    label: Callable[[str], str] = str, n_boot: int = 4000,
) -> None:  # fmt: skip
    """Rewrite ``readme``'s generated block (:func:`front_block`) and draw its figure (``docs/img/front.png`` beside
    it): plain LoRA, the default and the points of ``front`` (not dominated on the test split)."""
    update_readme(readme, front_block(rows, chosen, est, label=label, n_boot=n_boot))
    key = default_key(chosen)
    if key not in est or "plain" not in est or aligned_gap is None:
        return
    shown = ["plain", key, *(m for m in front if m not in ("plain", key))]
    short = {"plain": "plain LoRA", key: "agl-trl default"}
    title = f"DriftCaps test split, {len(chosen[key]['test'])} seeds, {judge} judge; 95% paired bootstrap"
    front_figure(est, aligned_gap, key, shown, readme.parent / "docs" / "img" / FIGURE,
                 label=lambda m: short.get(m, label(m)), title=title)  # fmt: skip


__all__ = [
    "FIGURE", "front_block", "front_figure", "results_table", "style_table", "ties_and_losses", "write_front",
]  # fmt: skip
