"""benchmarks/grpo.py --tiny: the GRPO scenario end to end on a random tiny Llama (set-up, validation sweep of AGL's
kl_budget, the peers' choice rule, test seeds), resumable, with the summary table."""

from __future__ import annotations

import pytest

from agl_trl.utils import read_jsonl
from benchmarks.lab.grpo_bench import RESULTS_FILE, grpo_config, main
from benchmarks.lab.peers_config import choose

pytestmark = pytest.mark.slow


def test_tiny_grpo_scenario_runs_chooses_on_validation_and_resumes(tmp_path, capsys):
    out = tmp_path / "grpo"
    assert main(["--tiny", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    rows = read_jsonl(out / RESULTS_FILE)
    cfg, grpo = grpo_config("tiny", None, [])
    validation = [r for r in rows if r["split"] == "validation" and r["method"] == "agl"]
    assert sorted(r["strength"] for r in validation) == sorted(cfg.grid("agl"))
    plain = next(r for r in rows if r["split"] == "validation" and r["method"] == "plain")
    chosen, _ = choose(validation, plain["task_exact_match"], cfg.max_task_drop)
    test = [r for r in rows if r["split"] == "test" and r["method"] != "aligned"]
    assert {(r["method"], r["strength"]) for r in test} == {("plain", None), ("agl", chosen)}
    assert sorted(r["seed"] for r in test) == sorted(cfg.seeds * 2)
    for row in test:
        assert {"refusal_unsafe", "over_refusal", "gap", "gap_drift", "task_exact_match"} <= set(row)
        assert row["grpo"]["steps"] == grpo.steps and row["step_seconds_median"] > 0
        assert row["generation_seconds_median"] > 0  # measured apart from the step time
    agl = next(r for r in test if r["method"] == "agl")
    assert agl["agl_curves"]["r_align"], "the AGL run did not run the regulariser"
    printed = capsys.readouterr().out
    assert "validation:" in printed and "test:" in printed and "step-time ratio" in printed

    assert main(["--tiny", "--out", str(out), "--no-progress", "--threads", "1"]) == 0  # resumes: nothing new
    assert len(read_jsonl(out / RESULTS_FILE)) == len(rows)
