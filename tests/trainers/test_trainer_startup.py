"""A real run's start-up and end: probe answers generated once and stored, the plan said, the drift read at the end."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
import torch

import agl_trl.generation
from agl_trl.fisher import FISHER_SUBDIR
from agl_trl.fisher.answers import ANSWERS_FILE
from agl_trl.trainers.install import SUMMARY_FILE
from tests.helpers.trainers import (
    FAST_AGL,
    FAST_ARGS,
    PROMPTS,
    agl_sft_trainer,
    write_jsonl,
)

# prompts only: the aligned model answers them. 4 for the Fisher (and the anchor), the last 2 for the KL meter.
PROBE = dict(FAST_AGL, agl_fisher_max_samples=4, agl_kl_sequences=2, agl_kl_batch_size=2, agl_kl_anchor_every=1)


@pytest.fixture
def prompts_only(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS[:6]])


@pytest.fixture
def generated(monkeypatch) -> Counter:
    """Every prompt the probe generation answers, counted."""
    counts: Counter = Counter()
    original = agl_trl.generation.generate_responses

    def counting(model, tokenizer, prompts, *args, **kwargs):
        counts.update(str(p) for p in prompts)
        return original(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(agl_trl.generation, "generate_responses", counting)
    return counts


def make_trainer(output_dir, probe, model_seed: int = 0, **overrides):
    agl = dict(PROBE, agl_probe_dataset=str(probe))
    return agl_sft_trainer(output_dir, agl, dict(FAST_ARGS, output_dir=str(output_dir)), model_seed, **overrides)


def test_probe_answers_are_generated_once_stored_and_reused(tmp_path, prompts_only, generated, caplog):
    caplog.set_level(logging.INFO, logger="agl_trl")
    run = tmp_path / "run"
    first = make_trainer(run, prompts_only, max_steps=2)
    first.train()
    # the Fisher's 4 prompts and the meter's 2, each answered once (the anchor reads the Fisher's answers)
    assert sorted(generated) == sorted(PROMPTS[:6]) and set(generated.values()) == {1}, generated
    assert len(first._agl.meter.meter_batches) == 1 and len(first._agl.meter.anchor_batches) == 2
    stored = (run / FISHER_SUBDIR / ANSWERS_FILE).read_text().splitlines()
    assert len(stored) == 1 + 6 and json.loads(stored[0])["max_new_tokens"] == PROBE["agl_fisher_max_new_tokens"]
    plan = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AGL start-up:")]
    assert len(plan) == 2, plan  # the plan (with the answers' time), then the Fisher estimate's expected time
    assert "6 probe answers to generate" in plan[0] and "expected ~" in plan[0] and "first batch" in plan[0], plan
    assert "for the answers" in plan[0] and "expected ~" in plan[1] and "for the Fisher estimate" in plan[1], plan

    generated.clear()
    caplog.clear()
    second = make_trainer(run, prompts_only, max_steps=2)  # the same output_dir: the artifact and its answers
    second.train()
    assert second._agl.fisher_source == "output_dir" and not generated, generated
    plan = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AGL start-up:")]
    assert len(plan) == 1 and "0 probe answers to generate (6 stored)" in plan[0], plan
    # the same answers: the meter's sequences are token for token the first run's
    for a, b in zip(first._agl.meter.meter_batches, second._agl.meter.meter_batches, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])

    generated.clear()
    third = make_trainer(run, prompts_only, max_steps=1, agl_fisher_max_rank=3)  # a new estimate, the same model
    third.train()
    assert third._agl.fisher_source == "estimated" and not generated, generated


def test_stored_answers_of_another_model_are_not_used(tmp_path, prompts_only, generated):
    run = tmp_path / "run"
    make_trainer(run, prompts_only, max_steps=1).train()
    generated.clear()
    trainer = make_trainer(run, prompts_only, model_seed=1, max_steps=1)  # another model in the same output_dir
    trainer.train()
    assert sorted(generated) == sorted(PROMPTS[:6]), generated


def test_a_run_shorter_than_kl_every_ends_with_a_reading_and_a_summary(tmp_path, probe_file, caplog):
    caplog.set_level(logging.INFO, logger="agl_trl")
    trainer = make_trainer(tmp_path / "run", probe_file, max_steps=3, logging_steps=2, agl_kl_every=10)
    trainer.train()
    readings = [e["agl/kl_measured"] for e in trainer.state.log_history if "agl/kl_measured" in e]
    assert len(readings) == 1, trainer.state.log_history  # at the last step (3), logged with the run's last log
    summary = json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())
    assert summary["step"] == 3 and summary["readings"] == 1
    assert summary["kl_measured"] == pytest.approx(readings[0])
    assert summary["kl_budget"] == trainer._agl.settings.kl_budget
    assert summary["lambda_align"] == trainer._agl.meter.weight
    assert summary["artifact"]["source"] == "estimated"
    assert summary["artifact"]["directory"].endswith(FISHER_SUBDIR)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AGL summary:")]
    assert len(lines) == 1 and "vs budget" in lines[0] and SUMMARY_FILE in lines[0], lines


def test_a_resumed_run_says_what_it_restored(tmp_path, probe_file, generated, caplog):
    run = tmp_path / "run"
    make_trainer(run, probe_file, max_steps=2, save_strategy="steps", save_steps=2, agl_kl_every=1).train()
    caplog.set_level(logging.INFO, logger="agl_trl")
    resumed = make_trainer(run, probe_file, max_steps=3, save_strategy="no", agl_kl_every=1)
    resumed.train(resume_from_checkpoint=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AGL: resumed from")]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "checkpoint-2" in lines[0] and "step 2" in lines[0] and "2 KL readings" in lines[0], lines
    assert "lambda_align" in lines[0] and FISHER_SUBDIR in lines[0], lines
    assert resumed._agl.fisher_source == "checkpoint" and not generated
