"""Checkpoints carry the regulariser state; resuming continues exactly like the uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from agl_trl.config import AGLSFTConfig
from agl_trl.fisher import FISHER_SUBDIR
from agl_trl.trainers import AGL_STATE_FILE, AGLSFTTrainer
from tests.helpers.trainers import (
    FAST_AGL,
    FAST_ARGS,
    lora_config,
    randomise_lora_b,
    sft_records,
    tiny_model_and_tokenizer,
)

STRONG = dict(agl_lambda_align=50.0, agl_lambda_task=50.0, agl_lambda_collision=5.0, agl_tau_momentum=0.5)


def make_trainer(output_dir, probe_file, **overrides):
    model, tokenizer = tiny_model_and_tokenizer()
    torch.manual_seed(0)
    args = dict(FAST_ARGS, max_steps=4, save_strategy="steps", save_steps=2, output_dir=str(output_dir))
    args.update(overrides)
    config = AGLSFTConfig(**args, **FAST_AGL, **STRONG, agl_probe_dataset=str(probe_file))
    trainer = AGLSFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(sft_records(16)),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    randomise_lora_b(trainer.model)
    return trainer


def losses(trainer) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}


def lora_params(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


@pytest.mark.slow
def test_save_and_resume_continue_identically(tmp_path, probe_file):
    full = make_trainer(tmp_path / "run", probe_file)
    full.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    state = json.loads((checkpoint / AGL_STATE_FILE).read_text())
    assert state["global_step"] == 2
    assert state["fisher_dir"].endswith(FISHER_SUBDIR)
    assert any(v > 0 for v in state["regularizer"]["tau"].values()), "tau never adapted: the test is blind"
    assert (tmp_path / "run" / "checkpoint-4" / AGL_STATE_FILE).is_file()

    resumed = make_trainer(tmp_path / "run", probe_file)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed._agl.restored_from == str(checkpoint)
    assert resumed._agl.fisher_source == "checkpoint"  # the artifact was reused, not re-estimated
    assert {k: losses(resumed)[k] for k in (3, 4)} == {k: losses(full)[k] for k in (3, 4)}
    for name, value in lora_params(full).items():
        torch.testing.assert_close(lora_params(resumed)[name], value, rtol=0, atol=0)
    assert resumed.agl_regularizer.state_dict() == full.agl_regularizer.state_dict()

    # control: without the saved regulariser state the resumed run drifts (tau restarts from 0)
    (checkpoint / AGL_STATE_FILE).unlink()
    fresh = make_trainer(tmp_path / "run", probe_file)
    fresh.train(resume_from_checkpoint=str(checkpoint))
    assert fresh._agl.restored_from is None
    assert losses(fresh)[3] != losses(full)[3]


def test_resume_true_finds_the_last_checkpoint(tmp_path, probe_file):
    first = make_trainer(tmp_path / "run", probe_file, max_steps=2)
    first.train()
    assert (tmp_path / "run" / "checkpoint-2" / AGL_STATE_FILE).is_file()
    second = make_trainer(tmp_path / "run", probe_file, max_steps=3)
    second.train(resume_from_checkpoint=True)
    assert second._agl.restored_from == str(tmp_path / "run" / "checkpoint-2")
    assert second.state.global_step == 3


def test_fisher_artifact_is_reused_from_output_dir(tmp_path, probe_file):
    first = make_trainer(tmp_path / "run", probe_file, max_steps=1, save_strategy="no")
    first.train()
    assert first._agl.fisher_source == "estimated"
    assert (tmp_path / "run" / FISHER_SUBDIR / "fisher.json").is_file()
    second = make_trainer(tmp_path / "run", probe_file, max_steps=1, save_strategy="no")
    second.train()
    assert second._agl.fisher_source == "output_dir"
    # other Fisher settings: the stored artifact does not fit and is re-estimated
    third = make_trainer(tmp_path / "run", probe_file, max_steps=1, save_strategy="no")
    third._agl.fisher_settings.max_rank = 3
    third.train()
    assert third._agl.fisher_source == "estimated"
    # the artifact it replaced is kept beside it, under the hash of its fisher.json, not overwritten
    kept = [p for p in (tmp_path / "run").iterdir() if p.name.startswith(FISHER_SUBDIR + ".")]
    assert len(kept) == 1 and (kept[0] / "fisher.json").is_file() and (kept[0] / "fisher.safetensors").is_file()
    assert json.loads((kept[0] / "fisher.json").read_text())["settings"]["max_rank"] != 3
