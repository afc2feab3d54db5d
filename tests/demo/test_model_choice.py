"""``ExperimentConfig.model`` picks the base model: the set-up loads the configured model (a fake ``load_model``
stands in for the real one), keys its stages by it, never restores another model's shipped set-up, and gives a base
model (``chat=False``) SmolLM2's shipped safe answers instead of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agl_trl.models
from agl_trl.experiments import setup as setup_stages
from agl_trl.experiments.config import apply_overrides, tiny_config
from agl_trl.experiments.shipped import DEFAULT_SETUP, shipped_setup
from agl_trl.models import tiny_llama
from benchmarks.lab.peers_cli import default_out
from benchmarks.lab.peers_config import build_config, config_key


class StopAtTraining(Exception):
    """Raised where the safety LoRA would train: the test needs only what comes before."""


def _set_up_until_training(model: str, out: Path, monkeypatch) -> tuple[list[str], list[str]]:
    """Run ``prepare_setup`` with no loader for ``model`` at tiny sizes up to the safety training; returns the names
    ``load_model`` was called with and the log lines."""
    calls: list[str] = []

    def fake_load_model(name: str, *args, **kwargs):
        calls.append(name)
        return tiny_llama(vocab_size=512, seed=0)

    def stop(*args, **kwargs):
        raise StopAtTraining

    monkeypatch.setattr(agl_trl.models, "load_model", fake_load_model)
    monkeypatch.setattr(setup_stages, "train_lora", stop)
    cfg = apply_overrides(tiny_config(0), [f"model={model}"])
    lines: list[str] = []
    with pytest.raises(StopAtTraining):
        setup_stages.prepare_setup(cfg, out, None, progress=False, log=lines.append, shipped=DEFAULT_SETUP)
    return calls, lines


def _marker(out: Path) -> dict:
    return json.loads((out / "align_data" / ".done.json").read_text(encoding="utf-8"))


def test_the_configured_model_is_loaded_and_keys_its_own_setup(tmp_path, monkeypatch) -> None:
    smol_calls, _ = _set_up_until_training("smollm2-135m-instruct", tmp_path / "smol", monkeypatch)
    gemma_calls, lines = _set_up_until_training("gemma3-270m", tmp_path / "gemma", monkeypatch)
    assert smol_calls == ["smollm2-135m-instruct"] * 2  # its own safe answers, then the safety training
    assert gemma_calls == ["gemma3-270m"]  # only the safety training: a base model's safe answers are not its own
    smol, gemma = _marker(tmp_path / "smol"), _marker(tmp_path / "gemma")
    assert smol["key"] != gemma["key"]
    assert gemma["settings"]["model"] == "gemma3-270m" and gemma["settings"]["safe_answers"] == DEFAULT_SETUP
    assert "safe_answers" not in smol["settings"]  # a chat model's keys are as they were
    assert any("is of model 'smollm2-135m-instruct', not 'gemma3-270m'" in line for line in lines), lines


def test_a_base_model_takes_the_shipped_safe_answers(tmp_path, monkeypatch) -> None:
    _set_up_until_training("gemma3-270m", tmp_path, monkeypatch)
    rows = json.loads((tmp_path / "align_data" / "rows.json").read_text(encoding="utf-8"))
    safe = [r for r in rows if r["label"] == "safe"]
    shipped = shipped_setup(DEFAULT_SETUP).safe_answers()
    assert safe and all(shipped[r["prompt"]] == r["answer"] for r in safe)
    result = _marker(tmp_path)["result"]
    assert result["safe_answers"] == DEFAULT_SETUP and result["n_safe"] == len(safe) + result["safe_without_answer"]


def test_the_peers_results_and_folders_differ_between_models() -> None:
    smol, gemma = build_config("full", None, None, []), build_config("full", None, None, ["model=gemma3-270m"])
    assert gemma.demo.model == "gemma3-270m" and config_key(smol) != config_key(gemma)
    assert default_out("full", "smollm2-135m-instruct") == "runs/peers"  # as before
    assert default_out("full", "gemma3-270m") == "runs/peers-gemma3-270m"
