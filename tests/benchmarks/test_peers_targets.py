"""Issue 34's targets read from test rows: paired seeds only, per-style rows, and verdicts that can fail."""

from __future__ import annotations

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
