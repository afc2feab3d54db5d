"""The real-trainer step-time benchmark: ratios per round, the cost criterion the fold rule reads, and a tiny run
that times the trainer's steps (meter and anchor included) and resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.lab import peers_folds as pf
from benchmarks.lab import step_time as st


def timing(method: str, strength: float | None, shape: tuple[int, int], index: int, seconds: float) -> dict:
    return {"method": method, "strength": strength, "shape": list(shape), "round": index, "mean_step_seconds": seconds}


def test_ratio_is_the_median_over_rounds_of_the_same_rounds_plain_lora() -> None:
    rows = [
        timing("plain", None, (8, 256), 0, 1.0), timing("agl", 0.1, (8, 256), 0, 1.2),
        timing("plain", None, (8, 256), 1, 2.0), timing("agl", 0.1, (8, 256), 1, 2.1),  # a slow round: 1.05x
        timing("plain", None, (8, 256), 2, 1.0), timing("agl", 0.1, (8, 256), 2, 1.1),
        timing("agl", 0.1, (8, 256), 3, 9.9),  # no plain LoRA in round 3: not a ratio
        timing("plain", None, (4, 128), 0, 0.5), timing("agl", 0.1, (4, 128), 0, 1.0),
    ]  # fmt: skip
    found = {(r.method, r.shape): r for r in st.ratios(rows)}
    big = found["agl", (8, 256)]
    assert big.median == pytest.approx(1.1) and (big.low, big.high, big.rounds) == (pytest.approx(1.05), 1.2, 3)
    assert big.plain_seconds == pytest.approx(1.0)
    assert found["agl", (4, 128)].median == pytest.approx(2.0)
    assert "| agl 0.1 | 2.000x (2.000-2.000, 1) | 1.100x (1.050-1.200, 3) |" in st.table(rows)


def test_the_fold_rule_reads_its_cost_from_the_side_by_side_timing(tmp_path: Path) -> None:
    record = tmp_path / "bf16"
    record.mkdir()
    rows = [timing("plain", None, st.COST_SHAPE, 0, 1.0), timing("cheap", 0.1, st.COST_SHAPE, 0, 1.04)]
    rows += [timing("costly", 0.1, st.COST_SHAPE, 0, 1.5), timing("costly", 0.1, (4, 128), 0, 1.0)]
    (record / f"{st.RUN_NAME}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    costs = st.cost_ratios("bf16", tmp_path)
    assert costs == {("cheap", 0.1): pytest.approx(1.04), ("costly", 0.1): pytest.approx(1.5)}
    assert st.cost_ratios("fp32", tmp_path) == {}  # another precision's rows never count

    from tests.helpers.folds import FOLDS, GROUPS, fold_rows

    # by the fold rows' own step times "costly" is as cheap as plain LoRA and the better of the two
    folds = fold_rows(
        cheap={"fa": ("1100", "1100", 0.8, 1.0), "fb": ("1100", "1100", 0.8, 1.0)},
        costly={"fa": ("1111", "1111", 0.8, 1.0), "fb": ("1111", "1111", 0.8, 1.0)},
    )
    order = [("cheap", 0.1), ("costly", 0.1)]
    scores, plain_task, _ = pf.score_folds(folds, order, FOLDS, GROUPS)
    assert pf.choose_by_folds(scores, plain_task)[0].method == "costly"
    scores, plain_task, _ = pf.score_folds(folds, order, FOLDS, GROUPS, step_ratios=costs)
    chosen, why = pf.choose_by_folds(scores, plain_task)
    assert chosen.method == "cheap" and "PROVISIONAL" not in why
    scores, _, _ = pf.score_folds(folds, order, FOLDS, GROUPS, step_ratios={("cheap", 0.1): 1.0})
    assert "PROVISIONAL: no step time for costly 0.1" in pf.choose_by_folds(scores, plain_task)[1]


def test_bad_shapes_and_steps_are_refused() -> None:
    assert st.parse_shape("8x256") == (8, 256)
    with pytest.raises(ValueError, match="BATCHxTOKENS"):
        st.parse_shape("8*256")
    with pytest.raises(ValueError, match="multiple of 10"):
        st.run_step_time(None, Path("unused"), [("plain", None)], steps=15)
    assert st.main(["--shapes", "big", "--report"]) == 2
    assert st.table([timing("plain", None, (8, 256), 0, 1.0)]) == [
        "(no timing rows yet: python benchmarks/trainer_step_time.py)"
    ]


@pytest.mark.slow
def test_tiny_run_times_every_step_with_the_meter_and_resumes(tmp_path: Path) -> None:
    import torch

    from agl_trl.models import tiny_llama
    from benchmarks.lab.peers_config import build_config

    torch.set_num_threads(1)
    calls: list[int] = []

    def loader() -> Any:
        calls.append(1)
        return tiny_llama(vocab_size=512, seed=0)

    cfg = build_config("tiny", None, None, [])
    methods = [("agl_kl_anchor", 0.1)]
    rows = st.run_step_time(cfg, tmp_path, methods, [(2, 128)], rounds=2, steps=10, progress=False, loader=loader)
    assert [(r["method"], r["round"]) for r in rows] == [
        ("plain", 0),
        ("agl_kl_anchor", 0),
        ("agl_kl_anchor", 1),
        ("plain", 1),
    ]  # the order reverses every round
    for r in rows:
        assert r["steps"] == 10 and len(r["step_seconds"]) == 10 and r["mean_step_seconds"] > 0
    anchored = [r for r in rows if r["method"] == "agl_kl_anchor"]
    assert all(r["meter_readings"] >= 1 for r in anchored)  # the meter read inside the timed steps
    assert st.ratios(rows)[0].rounds == 2
    calls.clear()
    again = st.run_step_time(cfg, tmp_path, methods, [(2, 128)], rounds=2, steps=10, progress=False, loader=loader)
    assert len(again) == 4 and not calls  # every row there: nothing loaded, nothing trained
