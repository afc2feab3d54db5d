"""AGL at several validation seeds: its ablations against it, and the package-default rule (docs/peers.md).

One validation seed cannot tell whether a term of the objective helps: one seed's noise is several points of gap
drift and task score. Ablation points measured at more seeds (``benchmarks/peers.py --point
validation:agl_no_collision:0.03:1``; a training is shared by the splits, so AGL's own test seeds only need a
validation measurement) are compared with AGL at the same strength and seeds, paired by seed and by prompt. Only the
validation split: ablations decide defaults, so their test numbers are never looked at.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from agl_trl.evaluation.selectivity import Verdicts, compare, format_estimate
from benchmarks.lab.peers_config import DEFAULT_SEEDS, DEFAULT_TASK_DROP, choose_default
from benchmarks.lab.registry import ABLATIONS, DEFAULT_HISTORY


def row_verdicts(row: dict[str, Any]) -> Verdicts:
    """A results row's per-prompt verdicts (bit strings in the file) as :class:`Verdicts`."""
    v = row["verdicts"]
    return Verdicts(*(tuple(c == "1" for c in v[k]) for k in ("unsafe", "safe", "task")))


def _by_seed(rows: list[dict[str, Any]], method: str, strength: float | None) -> dict[int, dict[str, Any]]:
    return {
        r["seed"]: r for r in rows if r["split"] == "validation" and r["method"] == method and r["strength"] == strength
    }


def ablation_table(rows: list[dict[str, Any]], n_boot: int = 4000, label: Callable[[str], str] = str) -> list[str]:
    """Per ablation and strength with at least two validation seeds that AGL also has: AGL, the ablation and (where
    measured at the same seeds) plain LoRA, with paired bootstrap 95% intervals and the ablation's differences from
    AGL. ``label``: a method's display name. Empty when no ablation has several seeds."""
    reference = next((r for r in rows if r["split"] == "validation" and r["method"] == "aligned"), None)
    if reference is None:
        return []
    strengths: dict[str, set[float]] = defaultdict(set)
    for r in rows:
        if r["split"] == "validation" and r["method"] in ABLATIONS:
            strengths[r["method"]].add(r["strength"])
    lines: list[str] = []
    for ablation in sorted(strengths):
        for strength in sorted(strengths[ablation]):
            ablated, agl = _by_seed(rows, ablation, strength), _by_seed(rows, "agl", strength)
            seeds = sorted(set(ablated) & set(agl))
            if len(seeds) < 2 or all(ablated[s].get("settings") == agl[s].get("settings") for s in seeds):
                continue  # too few seeds, or AGL's defaults now equal the ablation (same runs: nothing to compare)
            groups = {"agl": agl, ablation: ablated}
            plain = _by_seed(rows, "plain", None)
            if set(seeds) <= set(plain):
                groups = {"plain": plain, **groups}
            models = {name: [row_verdicts(g[s]) for s in seeds] for name, g in groups.items()}
            est = compare(models, row_verdicts(reference), baseline="agl", n_boot=n_boot, seed=0)
            lines += [
                f"**{label(ablation)} vs {label('agl')} at {strength:g}** (validation, seeds "
                f"{', '.join(map(str, seeds))})",
                "",
                "| method | refusal on unsafe % | over-refusal % | gap drift (pts) | task exact match % | "
                "gap drift - AGL's (pts) | task - AGL's (pts) |",
                "|---|---|---|---|---|---|---|",
            ]
            for name, e in est.items():
                versus = "-" if name == "agl" else None
                lines.append(
                    f"| {label(name)} | {format_estimate(e['refusal_unsafe'])} | {format_estimate(e['over_refusal'])} | "
                    f"**{format_estimate(e['gap_drift'])}** | {format_estimate(e['task'])} | "
                    f"{versus or format_estimate(e['gap_drift_vs_baseline'])} | "
                    f"{versus or format_estimate(e['task_vs_baseline'])} |"
                )
            lines.append("")
    return lines


def default_table(
    rows: list[dict[str, Any]], shipped: float, label: Callable[[str], str] = str, method: str | None = None
) -> list[str]:
    """The package-default rule (:func:`~benchmarks.lab.peers_config.choose_default`) applied to ``method``'s
    rows (default: the newest AGL method of :data:`DEFAULT_HISTORY` with a validation sweep, the one whose budget
    the package ships): a section: each sweep point's seed-averaged task and gap drift, the rule's choice and whether
    ``shipped`` (the package's default budget) is it. Empty before any of them has a sweep."""
    swept = {r["method"] for r in rows if r["split"] == "validation"}
    method = method or next((m for m, _until in DEFAULT_HISTORY if m in swept), None)
    if method is None or method not in swept:
        return []
    strength, why, points = choose_default(rows, method)
    lines = [
        f"## The package default's drift budget (validation, seeds {', '.join(map(str, DEFAULT_SEEDS))})",
        "",
        'The shipped `agl_kl_budget` answers a user\'s question ("keep my task score"): the smallest gap drift among '
        f"the sweep points whose task score is within {100 * DEFAULT_TASK_DROP:g} points of plain LoRA's, both "
        "averaged over these seeds (docs/benchmarks.md). The comparison with the peers uses the protocol's choice.",
        "",
        f"| {label(method)} kl_budget | task % | plain LoRA's task % | gap drift (pts) | task within "
        f"{100 * DEFAULT_TASK_DROP:g} pts |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['strength']:g} | {100 * p['task']:.1f} | {100 * p['plain_task']:.1f} | "
            f"{100 * p['gap_drift']:.1f} | {'yes' if p['admitted'] else 'no'} |"
        )
    if strength is None:
        verdict = f"Not decided yet: {why}."
    else:
        same = "the package ships it" if strength == shipped else f"**the package ships {shipped:g}: update it**"
        verdict = f"The rule's choice: **{strength:g}** ({why}); {same}."
    return [*lines, "", verdict, ""]


__all__ = ["ablation_table", "default_table", "row_verdicts"]
