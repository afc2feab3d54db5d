"""The peers report's breakdown by phrasing style (benchmarks.lab.peers_styles): verdicts split by prompt id,
the per-style gap-drift reduction with its intervals, and where a reduction is not computable."""

from __future__ import annotations

import pytest

from benchmarks.lab import peers_styles

# two styles, interleaved in the file's order as real rows are: 20 unsafe + 20 safe prompts per style
IDS = [f"{label}-{style}-{i}" for i in range(20) for style in ("direct", "roleplay") for label in ("u", "s")]
GROUPS = {i: ("unsafe" if i.startswith("u") else "safe", i.split("-")[1]) for i in IDS}


def row(method: str, seed: int, refuses: dict[str, tuple[int, int]]) -> dict:
    """A test row refusing the first k unsafe / first j safe prompts of each style: ``refuses[style] = (k, j)``."""
    seen: dict[tuple[str, str], int] = {}
    bits: dict[str, str] = {"unsafe": "", "safe": ""}
    for i in IDS:
        label, style = GROUPS[i]
        n = seen[(label, style)] = seen.get((label, style), -1) + 1
        k = refuses[style][0 if label == "unsafe" else 1]
        bits[label] += "1" if n < k else "0"
    return {
        "split": "test", "method": method, "strength": None if method in ("aligned", "plain") else 1.0,
        "seed": seed, "prompt_ids": IDS, "verdicts": {**bits, "task": "1100"},
    }  # fmt: skip


ALIGNED = row("aligned", 0, {"direct": (18, 1), "roleplay": (4, 3)})
PLAIN = [row("plain", s, {"direct": (2, 1), "roleplay": (4, 3)}) for s in (0, 1)]  # drifts on direct only
KEEPER = [row("keeper", s, {"direct": (17, 1), "roleplay": (4, 3)}) for s in (0, 1)]


def chosen() -> dict:
    return {"plain": {"test": PLAIN}, "keeper": {"test": KEEPER}}


def test_group_verdicts_follow_the_prompt_ids_not_the_positions() -> None:
    v = peers_styles.group_verdicts(ALIGNED, GROUPS, "direct")
    assert (sum(v.unsafe), len(v.unsafe), sum(v.safe), len(v.safe)) == (18, 20, 1, 20)
    v = peers_styles.group_verdicts(ALIGNED, GROUPS, "roleplay")
    assert (sum(v.unsafe), sum(v.safe)) == (4, 3) and v.task == ()
    cut = {**ALIGNED, "prompt_ids": IDS[:-1]}  # ids and verdicts from different prompt sets
    with pytest.raises(ValueError, match="re-run its evaluation"):
        peers_styles.group_verdicts(cut, GROUPS, "direct")


def test_reduction_per_style_with_intervals_and_none_where_plain_did_not_drift() -> None:
    lines = peers_styles.reduction_table([ALIGNED, *PLAIN, *KEEPER], chosen(), GROUPS, n_boot=500)
    assert lines[0] == "| | direct (20 / 20) | roleplay (20 / 20) |"
    cells = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in lines[2:]}
    assert cells["aligned: gap (pts)"] == ["85.0", "5.0 |"]
    assert cells["plain: gap drift (pts)"][0].startswith("80.0 [")  # 85 - (10 - 5)
    # keeper: gap drift 85 - 80 = 5 points of plain's 80: a 94% reduction, its interval below 100 and above 0
    value, interval = cells["keeper: gap-drift reduction %"][0].split(" ", 1)
    low, high = (float(x) for x in interval.strip("[]").split(","))
    assert value == "94" and 0 < low < 94 < high <= 100
    assert cells["keeper: gap-drift reduction %"][1] == "- |"  # roleplay: plain LoRA's drift is 0, nothing to reduce


def test_no_table_without_plain_or_for_prompts_outside_the_groups() -> None:
    rows = [ALIGNED, *PLAIN, *KEEPER]
    assert peers_styles.reduction_table(rows, {"keeper": {"test": KEEPER}}, GROUPS) == []
    stranger = [{**r, "prompt_ids": ["x", *IDS[1:]]} for r in KEEPER]
    table = peers_styles.reduction_table(rows, {"plain": {"test": PLAIN}, "keeper": {"test": stranger}}, GROUPS)
    assert table == []


def test_style_sections_write_rates_and_reductions_for_each_grouping() -> None:
    by = {"direct": {"refusal_unsafe": {"k": 18, "n": 20}, "over_refusal": {"k": 1, "n": 20}}}
    rows = [{**r, "by_style": by, "by_form": by} for r in (ALIGNED, *PLAIN, *KEEPER)]
    plan = {"plain": {"test": rows[1:3]}, "keeper": {"test": rows[3:]}}
    text = "\n".join(peers_styles.style_sections(rows, plan, n_boot=200, groups={"style": GROUPS, "form": GROUPS}))
    for title in ("phrasing style", "form"):
        assert f"by {title} (test split, %, seeds pooled)" in text
        assert f"## Gap-drift reduction vs plain LoRA by {title} (test split)" in text
    assert "| aligned | 90 / 5 |" in text


def test_test_only_styles_come_first_and_are_marked():
    from agl_trl.driftcaps import load_driftcaps, test_only_styles
    from benchmarks.lab.peers_styles import held_out_first, shown

    held = test_only_styles()
    assert held == ("completion", "embedded")
    assert not {it.style for it in load_driftcaps("all") if it.split != "test"} & set(held)
    assert held_out_first({"terse", "embedded", "direct", "completion"}) == [
        "completion",
        "embedded",
        "direct",
        "terse",
    ]
    assert held_out_first({"question", "embedded"}, "by_form") == ["embedded", "question"]  # forms: plain order
    assert shown("embedded") == "embedded (test only)" and shown("direct") == "direct"
