"""Issue 34's targets read from test rows: paired seeds only, per-style rows, and verdicts that can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.lab import peers_targets as pt
from tests.helpers.folds import GROUPS, row


def _test(r: dict, seed: int, task: str = "1111") -> dict:
    return {**r, "split": "test", "seed": seed, "verdicts": {**r["verdicts"], "task": task}}


def test_targets_read_the_default_against_plain_on_the_paired_seeds_and_per_style() -> None:
    aligned = _test(row("aligned", None, "1111", "1111"), 0)
    rows = [aligned]
    for seed in (100, 101):
        rows.append(_test(row("plain", None, "0000", "0000"), seed))
        rows.append(_test(row("agl_x", 0.1, "1111", "1100"), seed))  # keeps style a, half of style b
    rows.append(_test(row("agl_x", 0.1, "0000", "0000"), 102))  # no plain row at 102: not read
    result = pt.targets(rows, ("agl_x", 0.1), groups=GROUPS, n_boot=200)
    assert result["seeds"] == [100, 101]
    assert result["per_style"]["a"]["gap_drift_reduction"].value == pytest.approx(1.0)
    assert result["per_style"]["b"]["gap_drift_reduction"].value == pytest.approx(0.5)
    assert result["overall"]["default"]["gap_drift_reduction"].value == pytest.approx(0.75)
    assert not result["verdicts"]["reduction_overall"] and result["verdicts"]["reduction_every_style"]
    assert result["verdicts"]["task_within"] and result["verdicts"]["never_worse_than_plain"]
    lines = pt.table(result, "agl_x 0.1")
    assert any(line.startswith("| all styles |") for line in lines) and "reduction_overall: missed" in lines[-1]


def test_targets_refuse_rows_without_a_shared_seed() -> None:
    rows = [_test(row("aligned", None, "1111", "1111"), 0), _test(row("plain", None, "0000", "0000"), 100)]
    with pytest.raises(ValueError, match="no seed has both plain and agl_x"):
        pt.targets(rows, ("agl_x", 0.1), groups=GROUPS)


def _fresh_rows() -> list[dict]:
    aligned = {**_test(row("aligned", None, "1111", "1111"), 0), "n_unsafe": 8, "n_safe": 8}
    rows = [aligned]
    for seed in (100, 101):
        rows.append(_test(row("plain", None, "0000", "0000"), seed))
        rows.append(_test(row("agl_x", 0.1, "1111", "0000"), seed))  # loses style b
        rows.append(_test(row("kl_ref", 3.0, "1111", "1111"), seed))
    rows.append(_test(row("agl_kl_anchor", 0.1, "0000", "0000"), 100))  # one seed of two: not paired, named
    return rows


def test_fresh_block_pairs_each_peer_on_the_shared_seeds_and_names_the_partial_ones() -> None:
    block = pt.fresh_block(_fresh_rows(), ("agl_x", 0.1), groups=GROUPS, n_boot=200)
    assert "fresh seeds 100, 101" in block and "(8 unsafe / 8 safe prompts)" in block
    table_rows = [line for line in block.splitlines() if line.startswith("| kl_ref |")]
    assert len(table_rows) == 2  # its results row and its paired row
    # kl_ref keeps style b, which the default loses: the default loses on gap drift
    assert table_rows[1].endswith("| loss / tie / tie |")
    assert "Not yet at every seed, so not shown: agl_kl_anchor (seeds [100])." in block
    assert "| agl_kl_anchor |" not in block


def test_readme_and_generalization_fresh_blocks_are_generated_from_the_committed_rows() -> None:
    """README's and docs/generalization.md's fresh-seed blocks are the ones the committed rows regenerate."""
    from agl_trl.settings import AGLSettings
    from agl_trl.utils import read_jsonl
    from benchmarks.lab.peers_paired import readme_block_of
    from benchmarks.lab.registry import DEFAULT_METHOD, LABELS

    repo = Path(__file__).resolve().parents[2]
    rows = read_jsonl(repo / pt.FRESH_ROWS)
    block = pt.fresh_block(rows, (DEFAULT_METHOD, AGLSettings().kl_budget), label=pt.fresh_label(LABELS))
    for page in pt.FRESH_PAGES:
        committed = readme_block_of((repo / page).read_text(encoding="utf-8"), pt.FRESH_MARKERS)
        assert committed == block, f"{page}'s fresh-seed block is stale: python benchmarks/peers_targets.py --write"


def test_a_named_default_without_rows_is_never_replaced_by_another_method() -> None:
    from benchmarks.lab.peers_paired import paired_against_default

    rows = _fresh_rows()
    chosen, _ = pt.fresh_points(rows, ("agl_x", 0.1))
    # a method of the package's default history with test rows: what an unnamed default would fall back to
    chosen["agl_kl_anchor"] = {
        "strength": 0.1,
        "test": [{**r, "method": "agl_kl_anchor"} for r in chosen["agl_x"]["test"]],
    }
    assert paired_against_default(rows, chosen, n_boot=50)[0] == "agl_kl_anchor"
    assert paired_against_default(rows, chosen, n_boot=50, key="absent") == (None, {})
    key, paired = paired_against_default(rows, chosen, n_boot=50, key="agl_x")
    assert key == "agl_x" and set(paired) == {"plain", "kl_ref", "agl_kl_anchor"}
