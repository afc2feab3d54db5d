"""End-to-end demo pipeline on a tiny random Llama (no SmolLM2, no hub): every stage, the report, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agl_trl.demo.pipeline import run_demo
from agl_trl.demo.report import summary_table
from agl_trl.experiments.config import DemoConfig, apply_overrides
from agl_trl.experiments.config import tiny_config as base_tiny_config
from agl_trl.models import tiny_llama

STAGES = ("align_data", "aligned", "fisher", "lora", "agl", "gen_aligned", "gen_lora", "gen_agl", "kl_lora", "kl_agl")


def tiny_config() -> DemoConfig:
    return apply_overrides(base_tiny_config(0), ["agl.lambda_align=5.0"])


def loader_counting(calls: list[int]):
    def load():
        calls.append(1)
        return tiny_llama(vocab_size=512, seed=0)

    return load


def test_pipeline_end_to_end_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    calls: list[int] = []
    threads_before = torch.get_num_threads()
    report = run_demo(tiny_config(), out, model_loader=loader_counting(calls), progress=False, log=None)
    assert calls, "the injected loader was not used"
    assert torch.get_num_threads() == threads_before  # run_demo restores the caller's thread count
    for name in STAGES:
        assert (out / name / ".done.json").is_file(), name
    assert (out / "aligned" / "model" / "config.json").is_file()
    assert (out / "fisher" / "artifact").is_dir()
    for name in ("lora", "agl"):
        assert (out / name / "adapter" / "adapter_config.json").is_file()
    for file in ("report.json", "report.md", "summary.png", "training.png", "drift/drift.json"):
        assert (out / file).is_file(), file
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["models"].keys() == {"aligned", "lora", "agl"}
    assert on_disk["eval_set"]["n_unsafe"] == 4 and on_disk["eval_set"]["n_safe"] == 4
    agl, lora = report["models"]["agl"], report["models"]["lora"]
    assert lora["kl_drift"] is not None and agl["kl_drift"] is not None
    assert report["comparison"]["step_time_ratio"] > 0
    from agl_trl.precision import bf16_is_fast

    expected = "bf16" if bf16_is_fast(on_cpu=True) else "fp32"  # training records name the precision they ran in
    for name in ("lora", "agl"):
        record = json.loads((out / name / ".done.json").read_text())["result"]["train"]
        assert record["precision"] == expected and record["threads"] == report["environment"]["torch_threads"]
    assert report["environment"]["precision"] == expected
    assert agl["task"]["n"] == 6
    # the selectivity headline: gap drift with a paired bootstrap interval, vs the aligned model, judge named
    gd = lora["selectivity"]["gap_drift"]
    assert gd["ci_low"] <= gd["value"] <= gd["ci_high"]
    ref = report["models"]["aligned"]["selectivity"]
    assert gd["value"] == pytest.approx(ref["gap"]["value"] - lora["selectivity"]["gap"]["value"])
    text = (out / "report.md").read_text()
    assert "**gap drift**" in text and "judge: **keyword**" in text and "By phrasing style" in text
    # the report opens with the two-axis answer (refusal kept, over-refusal, the task) and its picture
    assert text.index("## The answer") < text.index("![the answer](summary.png)") < text.index("|")
    assert f"`agl` {100 * agl['task']['exact_match']:.1f}% ({agl['task']['k']}/6)" in text
    assert "Selectivity (primary)" in (out / "drift" / "drift.md").read_text()
    assert report["settings"]["agl"]["lambda_align"] == 5.0
    # the AGL run really added the regulariser (its metrics were logged), the plain run did not
    records = json.loads((out / "agl" / ".done.json").read_text())["result"]["train"]
    assert "kl_estimate" in records["agl_curves"]
    plain = json.loads((out / "lora" / ".done.json").read_text())["result"]["train"]
    assert plain["agl_curves"] == {}
    assert "| agl |" in summary_table(report)

    # resume: everything cached, the base model is not even loaded
    calls.clear()
    again = run_demo(tiny_config(), out, model_loader=loader_counting(calls), progress=False, log=None)
    assert not calls
    assert all(again["stages"][name]["cached"] for name in STAGES)
    assert again["models"]["agl"]["refusal_unsafe"] == report["models"]["agl"]["refusal_unsafe"]

    # a changed AGL setting re-runs the AGL branch only
    cfg = apply_overrides(tiny_config(), ["agl.lambda_align=0.5", "agl.kl_every=1"])
    third = run_demo(cfg, out, model_loader=loader_counting(calls), progress=False, log=None)
    rerun = {name for name in STAGES if not third["stages"][name]["cached"]}
    assert rerun == {"agl", "gen_agl", "kl_agl"}
    curves = json.loads((out / "agl" / ".done.json").read_text())["result"]["train"]["agl_curves"]
    assert [s for s, _ in curves["kl_measured"]] == [1, 2]  # the meter's readings, which training.png draws
