"""Selectivity metrics (gap, gap drift) and the paired bootstrap of agl_trl.evaluation.selectivity."""

from __future__ import annotations

import math

import pytest

from agl_trl.evaluation.selectivity import (
    MDD_FACTOR,
    Estimate,
    Verdicts,
    by_group,
    compare,
    format_estimate,
    selectivity,
)


def v(unsafe: int, n_unsafe: int, safe: int, n_safe: int, task: tuple[bool, ...] = ()) -> Verdicts:
    return Verdicts(
        tuple([True] * unsafe + [False] * (n_unsafe - unsafe)), tuple([True] * safe + [False] * (n_safe - safe)), task
    )


def test_selectivity_point_estimates_and_rows() -> None:
    s = selectivity(v(30, 40, 6, 30, (True, False, True, True)))
    assert s == pytest.approx({"refusal_unsafe": 0.75, "over_refusal": 0.2, "gap": 0.55, "task": 0.75})
    rows = [
        {"label": "unsafe", "refusal": True},
        {"label": "safe", "refusal": False},
        {"label": "unsafe", "refusal": 0},
    ]
    assert Verdicts.from_rows(rows) == Verdicts((True, False), (False,))


def test_refusing_everything_keeps_refusal_but_loses_the_whole_gap() -> None:
    reference = v(32, 40, 3, 30)  # 80% / 10%: gap 0.7
    blanket = v(40, 40, 30, 30)  # refuses everything: no refusal drift, but no selectivity left
    est = compare({"blanket": [blanket]}, reference, n_boot=200)["blanket"]
    assert est["refusal_drift"].value == pytest.approx(-0.2)  # "gained" refusals on unsafe
    assert est["gap"].value == pytest.approx(0.0)
    assert est["gap_drift"].value == pytest.approx(0.7)


def test_paired_bootstrap_is_tighter_than_the_spread_of_either_model_and_resolves_a_real_difference() -> None:
    n = 200
    reference = v(160, n, 20, 150)
    plain = v(60, n, 15, 150)
    better = Verdicts(tuple(i < 100 for i in range(n)), plain.safe)  # refuses plain's 60 and 40 more
    est = compare({"plain": [plain], "better": [better]}, reference, baseline="plain", n_boot=2000, seed=1)
    diff = est["better"]["gap_drift_vs_baseline"]
    assert diff.value == pytest.approx(-40 / n)
    assert diff.ci_high < 0  # resolved
    # paired: the difference's spread is far below what two independent rates of this size would give
    independent_sd = math.sqrt(0.3 * 0.7 / n + 0.5 * 0.5 / n)
    assert diff.sd < 0.6 * independent_sd
    ref_gap = 160 / n - 20 / 150
    assert est["better"]["gap_drift_reduction"].value == pytest.approx(1 - (ref_gap - 0.4) / (ref_gap - 0.2))
    assert est["plain"]["gap_drift_reduction"].value == pytest.approx(0.0)
    assert diff.to_dict()["mdd"] == pytest.approx(MDD_FACTOR * diff.sd)


def test_identical_models_have_a_zero_width_difference_and_seeds_are_averaged() -> None:
    reference = v(8, 10, 1, 10, (True,) * 5)
    a = [v(5, 10, 2, 10, (True, False, True, False, True)), v(7, 10, 2, 10, (True,) * 5)]
    est = compare({"a": a, "b": list(a)}, reference, baseline="a", n_boot=300)
    assert est["a"]["refusal_unsafe"].value == pytest.approx(0.6)  # mean over the two seeds
    assert est["a"]["task"].value == pytest.approx(0.8)
    d = est["b"]["gap_drift_vs_baseline"]
    assert d.value == 0 and d.ci_low == 0 and d.ci_high == 0
    assert est["b"]["task_vs_baseline"].ci_high == 0
    assert est["b"]["over_refusal_vs_baseline"].ci_low == est["b"]["over_refusal_vs_baseline"].ci_high == 0


def test_over_refusal_difference_is_paired_model_minus_baseline() -> None:
    n = 100
    reference = v(80, n, 10, n)
    base = v(50, n, 10, n)
    more = Verdicts(base.unsafe, tuple(i < 25 for i in range(n)))  # base's 10 safe refusals and 15 more
    d = compare({"base": [base], "more": [more]}, reference, baseline="base", n_boot=1000)["more"]
    assert d["over_refusal_vs_baseline"].value == pytest.approx(0.15)
    assert d["over_refusal_vs_baseline"].ci_low > 0


def test_compare_rejects_mismatched_inputs() -> None:
    ref = v(5, 10, 1, 10)
    with pytest.raises(ValueError, match="baseline"):
        compare({"a": [ref]}, ref, baseline="nope")
    with pytest.raises(ValueError, match="unsafe items"):
        compare({"a": [v(5, 9, 1, 10)]}, ref)
    with pytest.raises(ValueError, match="both unsafe and safe"):
        compare({"a": [v(5, 10, 0, 0)]}, v(5, 10, 0, 0))
    with pytest.raises(ValueError, match="different numbers"):
        compare({"a": [v(5, 10, 1, 10), v(5, 9, 1, 10)]}, ref)


def test_by_group_and_format() -> None:
    rows = [
        {"label": "unsafe", "refusal": True, "style": "roleplay"},
        {"label": "unsafe", "refusal": False, "style": "roleplay"},
        {"label": "safe", "refusal": True, "style": "embedded"},
    ]
    g = by_group(rows, "style")
    assert g["roleplay"]["refusal_unsafe"].rate == 0.5 and g["roleplay"]["over_refusal"].n == 0
    assert g["embedded"]["over_refusal"].k == 1
    assert format_estimate(Estimate(0.123, 0.1, 0.15, 0.01)) == "12.3 [10.0, 15.0]"
    assert format_estimate(None) == "-" and format_estimate({"value": None}) == "-"
