"""The peers report's breakdown by phrasing style and by form (test split, each method's chosen point).

Two tables per grouping: refusal on unsafe / over-refusal on safe (seeds pooled), and the gap-drift reduction vs plain
LoRA within each group, with paired bootstrap 95% intervals over that group's prompts and the seeds. Protection that
holds on some phrasings and not on others is phrasing, not harm, so the second table is where a method's headline
reduction is checked style by style. A row's verdicts are split into groups through its ``prompt_ids`` and the
DriftCaps file's labels and styles (:func:`prompt_groups`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agl_trl.evaluation.selectivity import Verdicts, compare, format_estimate
from benchmarks.lab.peers_ablations import row_verdicts

Groups = Mapping[str, tuple[str, str | None]]  # prompt id -> (label, group)


def prompt_groups(key: str = "style", path: str | Path | None = None) -> dict[str, tuple[str, str | None]]:
    """Prompt id -> (label, the prompt's ``key``: ``style`` or ``form``) for every DriftCaps prompt (or ``path``'s)."""
    from agl_trl.driftcaps import load_driftcaps

    return {it.id: (it.label, getattr(it, key)) for it in load_driftcaps("all", path=path)}


def held_out_first(names: set[str] | list[str], key: str = "by_style") -> list[str]:
    """``names`` sorted, the test-only styles first (marked in the tables): phrasings no probe, meter, anchor or
    validation choice saw come before the ones they did (only for styles; forms keep plain order)."""
    from agl_trl.driftcaps import test_only_styles

    held = set(test_only_styles()) if key in ("by_style", "style") else set()
    return sorted(names, key=lambda n: (n not in held, n))


def shown(name: str, key: str = "by_style") -> str:
    """A style's column name: test-only styles marked ``(test only)``."""
    from agl_trl.driftcaps import test_only_styles

    return f"{name} (test only)" if key in ("by_style", "style") and name in test_only_styles() else name


def group_verdicts(row: Mapping[str, Any], groups: Groups, group: str) -> Verdicts:
    """The verdicts of ``row`` on the prompts of one group (no task verdicts: the task is not phrased by style).

    A row's unsafe (safe) verdicts are in the order of its unsafe (safe) prompt ids; a row whose ids do not match its
    verdict counts raises a ``ValueError`` naming the row, rather than pairing verdicts with the wrong prompts."""
    v = row_verdicts(dict(row))
    ids = list(row.get("prompt_ids") or [])
    by_label = {label: [i for i in ids if groups[i][0] == label] for label in ("unsafe", "safe")}
    if len(by_label["unsafe"]) != len(v.unsafe) or len(by_label["safe"]) != len(v.safe):
        raise ValueError(
            f"row {row.get('method')} seed {row.get('seed')}: {len(by_label['unsafe'])} unsafe / "
            f"{len(by_label['safe'])} safe prompt ids for {len(v.unsafe)} / {len(v.safe)} verdicts; "
            "re-run its evaluation (benchmarks/peers.py) so that ids and verdicts come from the same prompts"
        )

    def keep(label: str, bits: tuple[bool, ...]) -> tuple[bool, ...]:
        return tuple(b for i, b in zip(by_label[label], bits, strict=True) if groups[i][1] == group)

    return Verdicts(keep("unsafe", v.unsafe), keep("safe", v.safe))


def rate_table(rows: list[dict[str, Any]], chosen: Mapping[str, Mapping[str, Any]], key: str = "by_style",
               label: Callable[[str], str] = str) -> list[str]:  # fmt: skip
    """Refusal on unsafe / over-refusal per group (``by_style`` or ``by_form``) on the test split, seeds pooled."""
    reference = next((r for r in rows if r["split"] == "test" and r["method"] == "aligned"), None)
    if reference is None:
        return []
    names = held_out_first(reference[key], key)
    lines = ["| method | " + " | ".join(shown(n, key) for n in names) + " |", "|---|" + "---|" * len(names)]
    entries = [("aligned", [reference])] + [(m, c["test"]) for m, c in chosen.items() if c["test"]]
    for method, test in entries:
        cells = []
        for g in names:
            parts = []
            for part in ("refusal_unsafe", "over_refusal"):
                k = sum(r[key].get(g, {}).get(part, {}).get("k", 0) for r in test)
                n = sum(r[key].get(g, {}).get(part, {}).get("n", 0) for r in test)
                parts.append(f"{100 * k / n:.0f}" if n else "-")
            cells.append(" / ".join(parts))
        lines.append(f"| {label(method)} | " + " | ".join(cells) + " |")
    return lines


def reduction_table(
    rows: list[dict[str, Any]],
    chosen: Mapping[str, Mapping[str, Any]],
    groups: Groups,
    label: Callable[[str], str] = str,
    n_boot: int = 4000,
    key: str = "style",
) -> list[str]:
    """Per group (``key``: ``style`` or ``form``, the test-only styles first): the aligned gap, plain LoRA's gap drift (points) and each chosen point's gap-drift reduction vs
    plain LoRA (%), with paired bootstrap 95% intervals over the group's prompts and the seeds; "-" where plain
    LoRA's gap drift interval includes 0 (no resolved drift to reduce). Empty without test rows of the aligned model
    and plain LoRA, or when a row's prompts are not all in ``groups``."""
    reference = next((r for r in rows if r["split"] == "test" and r["method"] == "aligned"), None)
    complete = {m: c["test"] for m, c in chosen.items() if c["test"]}
    if reference is None or "plain" not in complete:
        return []
    tested = [reference, *(r for test in complete.values() for r in test)]
    if any(i not in groups for r in tested for i in r.get("prompt_ids") or [None]):
        return []
    names = held_out_first({groups[i][1] for i in reference["prompt_ids"]} - {None}, key)
    columns: dict[str, list[str]] = {"aligned": [], "plain": [], **{m: [] for m in complete if m != "plain"}}
    heads = []
    for g in names:
        ref = group_verdicts(reference, groups, g)
        heads.append(f"{shown(g, key)} ({len(ref.unsafe)} / {len(ref.safe)})")
        if not ref.unsafe or not ref.safe:  # a gap needs both
            for cells in columns.values():
                cells.append("-")
            continue
        models = {m: [group_verdicts(r, groups, g) for r in test] for m, test in complete.items()}
        est = compare(models, ref, baseline="plain", n_boot=n_boot, seed=0)
        columns["aligned"].append(f"{100 * (sum(ref.unsafe) / len(ref.unsafe) - sum(ref.safe) / len(ref.safe)):.1f}")
        columns["plain"].append(format_estimate(est["plain"]["gap_drift"], digits=1))
        resolved = est["plain"]["gap_drift"].ci_low > 0  # a reduction of an unresolved drift is a ratio of noise
        for m in columns:
            if m not in ("aligned", "plain"):
                columns[m].append(format_estimate(est[m]["gap_drift_reduction"], digits=0) if resolved else "-")
    titles = {"aligned": f"{label('aligned')}: gap (pts)", "plain": f"{label('plain')}: gap drift (pts)"}
    lines = ["| | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for m, cells in columns.items():
        lines.append(f"| {titles.get(m, label(m) + ': gap-drift reduction %')} | " + " | ".join(cells) + " |")
    return lines


def style_sections(
    rows: list[dict[str, Any]], chosen: Mapping[str, Mapping[str, Any]], label: Callable[[str], str] = str,
    n_boot: int = 4000, groups: Mapping[str, Groups] | None = None,
) -> list[str]:  # fmt: skip
    """The report's markdown sections by phrasing style and by form. ``groups``: ``{"style": ..., "form": ...}``
    (default: read from the DriftCaps file)."""
    lines: list[str] = []
    for key, title in (("style", "phrasing style"), ("form", "form")):
        rates = rate_table(rows, chosen, f"by_{key}", label)
        if not rates:
            continue
        lines += [
            f"## Refusal on unsafe / over-refusal on safe by {title} (test split, %, seeds pooled)",
            "",
            *rates,
            "",
        ]
        of = (groups or {}).get(key) or prompt_groups(key)
        reductions = reduction_table(rows, chosen, of, label, n_boot, key)
        if reductions:
            lines += [
                f"## Gap-drift reduction vs plain LoRA by {title} (test split)",
                "",
                f"Within each {title} (unsafe / safe test prompts in brackets): the aligned model's gap, plain LoRA's "
                "gap drift and each method's gap-drift reduction, paired bootstrap 95% over that group's prompts and "
                "the seeds. A reduction is shown only where plain LoRA's drift is resolved (its interval excludes "
                "0; '-' otherwise: a ratio to an unresolved drift is noise). Few prompts per group make these "
                "intervals wide; a reduction is read as protection on that phrasing only where its interval "
                "excludes 0.",
                "",
                *reductions,
                "",
            ]
    return lines


__all__ = [
    "group_verdicts",
    "held_out_first",
    "prompt_groups",
    "shown",
    "rate_table",
    "reduction_table",
    "style_sections",
]
