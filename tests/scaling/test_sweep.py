"""The forgetting sweep (``benchmarks/scaling_sweep.py``, then ``agl-trl scaling``) on a random tiny Llama: log rows, resume, the constant-LR
prefix property that lets one run's checkpoints stand for separate runs, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agl_trl.models import tiny_llama
from agl_trl.scaling.cli import main as fit
from agl_trl.scaling.io import read_run_log
from benchmarks.lab.scaling_sweep import SweepConfig, load_heldout_texts, main, run_sweep, tiny_sweep_config


def loader():
    return tiny_llama(vocab_size=512, seed=0)


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_heldout_texts_are_the_v1_file() -> None:
    texts = load_heldout_texts()
    assert len(texts) == 48 and len(set(texts)) == 48
    assert all(70 <= len(t.split()) <= 110 for t in texts)


def test_config_validation() -> None:
    cfg = tiny_sweep_config()
    with pytest.raises(ValueError, match="unknown sweep methods"):
        SweepConfig(demo=cfg.demo, methods=["lora", "ewc"])
    with pytest.raises(ValueError, match=">= 3 distinct"):
        SweepConfig(demo=cfg.demo, budget_steps=[2, 2, 4])
    assert SweepConfig(demo=cfg.demo, budget_steps=[4, 1, 2]).budget_steps == [1, 2, 4]


def test_sweep_rows_resume_and_prefix_property(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    cfg = tiny_sweep_config(seeds=1)
    log = run_sweep(cfg, tmp_path / "a", loader=loader, demo_dir=demo_dir, progress=False, log=None)
    rows = rows_of(log)
    assert len(rows) == 2 * 4 * 2  # methods x budgets x metrics
    for method in ("lora", "agl"):
        for metric in ("responses", "general"):
            mine = sorted(
                (r for r in rows if r["method"] == method and r["metric"] == metric), key=lambda r: r["steps"]
            )
            assert [r["steps"] for r in mine] == [1, 2, 3, 4]
            assert [r["budget"] for r in mine] == [s * cfg.demo.task.batch_size for s in (1, 2, 3, 4)]
            assert {r["budget_unit"] for r in mine} == {"examples"}
            tokens = [r["tokens"] for r in mine]
            assert tokens == sorted(tokens) and tokens[0] > 0 and len(set(tokens)) == 4  # tokens seen grow
            assert len({round(r["aligned_nll"], 6) for r in mine}) == 1  # one reference: the adapter disabled
            assert mine[-1]["model_nll"] != mine[-1]["aligned_nll"]  # the fine-tune moved the model
            assert all(r["loss"] == pytest.approx(r["model_nll"] - r["aligned_nll"]) for r in mine)
    records = read_run_log(log)  # the log is a valid scaling run log
    assert {r.rank for r in records} == {cfg.demo.lora.r} and {r.seed for r in records} == {0}

    assert run_sweep(cfg, tmp_path / "a", loader=loader, demo_dir=demo_dir, progress=False, log=None) == log
    assert len(rows_of(log)) == len(rows)  # resumed: nothing rerun
    other = SweepConfig(demo=cfg.demo, seeds=[0], budget_steps=[1, 2, 3])
    with pytest.raises(ValueError, match="other settings"):
        run_sweep(other, tmp_path / "a", loader=loader, demo_dir=demo_dir, progress=False, log=None)

    # a shorter run (3 steps) at the constant LR passes through the same states at steps 1 and 2
    shorter = rows_of(run_sweep(other, tmp_path / "b", loader=loader, demo_dir=demo_dir, progress=False, log=None))
    for r in rows:
        if r["steps"] in (1, 2):
            twin = next(
                s for s in shorter if (s["method"], s["metric"], s["steps"]) == (r["method"], r["metric"], r["steps"])
            )
            assert twin["model_nll"] == pytest.approx(r["model_nll"], rel=1e-5, abs=1e-6)
            assert twin["tokens"] == r["tokens"]


def test_cli_sweep_then_fit(tmp_path: Path) -> None:
    out = tmp_path / "scaling"
    argv = ["--sweep-size", "tiny", "--seeds", "1", "--out", str(out), "--no-progress"]
    rc = main([*argv, "--space", "linear", "--bootstrap", "0", "--no-plot"])
    assert rc == 0
    assert (out / "runs.jsonl").is_file() and (out / "sweep.json").is_file()
    result = json.loads((out / "scaling.json").read_text())
    assert set(result["metrics"]) == {"responses", "general"}
    assert set(result["metrics"]["responses"]["methods"]) == {"lora", "agl"}
    assert result["settings"]["budget_unit"] == "examples"  # from the log's budget_unit column
    assert main(["--log", str(out / "runs.jsonl"), "--out", str(out)]) == 2  # one source only
    assert fit(["--out", str(out)]) == 2
