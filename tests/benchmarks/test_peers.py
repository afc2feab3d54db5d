"""The peers benchmark (agl_trl.experiments.peers, benchmarks/peers.py) end to end on a tiny random Llama (slow),
its method registry and the report's aggregation (fast), and the benchmark scripts' command lines."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from agl_trl.baselines import registry
from agl_trl.experiments import peers, peers_report

REPO = Path(__file__).resolve().parents[2]


def row(method: str, seed: int, drift: float, task: float, step: float, scenario: str = "standard") -> dict:
    return {
        "scenario": scenario, "method": method, "seed": seed, "refusal_unsafe": 0.8 - drift / 100,
        "over_refusal": 0.1, "incoherent": 0.0, "aligned_refusal_unsafe": 0.8, "aligned_over_refusal": 0.1,
        "drift_points": drift, "n_unsafe": 100, "n_safe": 60, "kl_drift": drift / 100, "task_exact_match": task,
        "judge": "keyword", "step_seconds_median": step, "peak_memory_mb": 10.0, "steps": 10, "learning_rate": 1e-4,
        "settings": {}, "mode": "full",
    }  # fmt: skip


def test_report_aggregates_per_seed_ratios_and_finds_the_pareto_front(tmp_path: Path) -> None:
    rows = [
        row("plain", 0, 40.0, 0.80, 1.0), row("plain", 1, 60.0, 0.90, 2.0),
        row("agl", 0, 20.0, 0.80, 1.5), row("agl", 1, 30.0, 0.90, 2.4),
        row("l2", 0, 50.0, 0.50, 1.1), row("l2", 1, 50.0, 0.50, 2.2),
        row("safe_lora", 0, 30.0, 0.70, None), row("safe_lora", 1, 30.0, 0.70, None),
    ]  # fmt: skip
    stats = peers_report.aggregate(rows)
    agl = stats[("standard", "agl")]
    assert agl["drift_reduction"][0] == pytest.approx(0.5)  # 1 - 20/40 and 1 - 30/60, per seed
    assert agl["step_time_ratio"][0] == pytest.approx((1.5 + 1.2) / 2)
    assert agl["drift_points"][:2] == pytest.approx((25.0, 7.0710678))
    assert stats[("standard", "safe_lora")]["step_time_ratio"][0] == 1.0
    points = {m: (stats[("standard", m)]["drift_points"][0], stats[("standard", m)]["task_exact_match"][0]) for m in
              ("plain", "agl", "l2", "safe_lora")}  # fmt: skip
    assert set(peers_report.pareto_front(points)) == {"agl"}  # agl: less drift at the same task score as plain
    path = peers_report.write_report(rows, tmp_path, source=tmp_path / "peers.jsonl")
    text = path.read_text()
    assert "| AGL (demo settings) | 55.0 ± 7.1 | 25.0 ± 7.1 | 50.0 ± 0.0 |" in text
    assert (tmp_path / peers_report.PNG_NAME).stat().st_size > 1000


def test_runs_order_plain_first_and_safe_lora_after_it() -> None:
    cfg = peers.build_config("tiny", 2, ["safe_lora", "agl", "plain"], [])
    runs = peers.runs_of(cfg)
    standard = [m for s, m, seed in runs if s == "standard" and seed == 0]
    assert standard == ["plain", "agl", "safe_lora"]
    assert {s for s, _, _ in runs} == {"standard", "stress"}
    with pytest.raises(ValueError, match="unknown methods"):
        peers.build_config("tiny", 1, ["nope"], [])
    with pytest.raises(ValueError, match="unknown peers setting"):
        peers.build_config("tiny", 1, None, ["peers.nope=1"])
    assert peers.build_config("tiny", 1, None, ["peers.lambda_l2=0.5"]).peers.lambda_l2 == 0.5


def test_quick_run_is_the_start_of_the_full_run() -> None:
    quick, full = peers.build_config("quick", None, None, []), peers.build_config("full", None, None, [])
    assert peers.config_key(quick) == peers.config_key(full)  # one results file: the full run resumes --quick
    assert set(peers.runs_of(quick)) < set(peers.runs_of(full))
    assert len(peers.runs_of(full)) == 3 * len(peers.ALL_METHODS) + 3 * len(peers.STRESS_METHODS)
    demo_scale = peers.build_config("full", None, None, [], scale="demo")
    assert peers.config_key(demo_scale) != peers.config_key(full)
    assert demo_scale.demo.task.steps > full.demo.task.steps


def test_registry_settings_of_every_method() -> None:
    agl, settings = peers.build_config("tiny", 1, None, []).demo.agl, registry.PeerSettings()
    assert registry.method_settings("agl", agl, settings) == asdict(agl)
    for method, overrides in registry.ABLATIONS.items():
        assert registry.method_agl_settings(method, agl) == replace(agl, **overrides)
        assert registry.method_settings(method, agl, settings) == {**asdict(agl), **overrides}
    assert registry.method_agl_settings("ewc", agl) is None
    assert registry.method_settings("ewc", agl, settings) == {"lambda_ewc": agl.lambda_align}
    assert registry.method_settings("ewc", agl, replace(settings, lambda_ewc=2.0)) == {"lambda_ewc": 2.0}
    assert registry.method_settings("plain", agl, settings) == {}
    assert set(peers.ALL_METHODS) == {"plain", "agl", *registry.ABLATIONS, *registry.PEERS}


@pytest.mark.parametrize("script", ["peers.py", "peers_report.py", "overhead.py", "fisher_cost.py"])
def test_benchmark_scripts_run_from_the_repo_root(script: str) -> None:
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.slow
def test_peers_tiny_end_to_end_resumes_and_reports(tmp_path: Path) -> None:
    from agl_trl.models import tiny_llama

    calls: list[int] = []

    def loader():
        calls.append(1)
        return tiny_llama(vocab_size=512, seed=0)

    out, report = tmp_path / "peers", tmp_path / "report"
    argv = ["--tiny", "--seeds", "1", "--out", str(out), "--no-progress", "--report", "--report-dir", str(report)]
    assert peers.main(argv, loader=loader) == 0
    rows = [json.loads(line) for line in (out / peers.RESULTS_FILE).read_text().splitlines()]
    expected = {("standard", m) for m in peers.ALL_METHODS} | {("stress", m) for m in ("plain", "agl", "safe_lora")}
    assert {(r["scenario"], r["method"]) for r in rows} == expected
    for r in rows:
        assert 0.0 <= r["refusal_unsafe"] <= 1.0 and r["kl_drift"] >= 0 and r["task_n"] == 6
        assert r["method"] == "safe_lora" or r["step_seconds_median"] > 0
    by = {(r["scenario"], r["method"]): r for r in rows}
    assert by[("standard", "plain")]["kl_drift"] > 0, "the fine-tune must move the model"
    assert by[("standard", "safe_lora")]["safe_lora"]["n_projected"] > 0
    assert by[("stress", "plain")]["learning_rate"] > by[("standard", "plain")]["learning_rate"]
    # the penalties really ran inside the trainer: their metrics were logged
    checks = {"agl": "r_align", "l2": "update_norm_sq", "kl_ref": "kl_ref", "asft": "orthogonal_sq", "ewc": "r_align"}
    for method, key in checks.items():
        assert key in by[("standard", method)]["penalty_metrics"], method
    assert by[("standard", "plain")]["penalty_metrics"] == {}
    text = (report / "peers.md").read_text()
    assert "## AGL ablations" in text and "Safe LoRA" in text and (report / peers_report.PNG_NAME).is_file()

    # rerun: every (scenario, method, seed) is skipped, the base model is not even loaded
    calls.clear()
    assert peers.main(argv, loader=loader) == 0
    assert not calls
    assert len((out / peers.RESULTS_FILE).read_text().splitlines()) == len(rows)
    # other settings into the same file are refused (like is compared with like)
    assert peers.main([*argv, "--set", "peers.lambda_l2=0.5"], loader=loader) == 2
    assert len((out / peers.RESULTS_FILE).read_text().splitlines()) == len(rows)
