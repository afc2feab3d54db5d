"""Real ``axolotl train`` runs (CLI subprocess, CPU, tiny random Llama, a few steps) with the AGL plugin.

SFT (Axolotl's ``AxolotlTrainer``) and DPO (``AxolotlDPOTrainer``; TRL builds the LoRA adapter): with AGL the run
completes, logs non-zero ``agl/*`` terms, and writes the adapter and the Fisher artifact; with ``agl_enabled: false``
the losses equal those of the same recipe without the plugin.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.axolotl import axolotl_train, log_history, requires_axolotl, train_logs, write_config
from tests.helpers.data import tail

pytestmark = [pytest.mark.axolotl, requires_axolotl, pytest.mark.timeout(900)]

AGL_KEYS = ("agl/loss", "agl/r_align", "agl/r_task", "agl/kl_estimate", "agl/e_geo", "agl/leakage")
OFF_KEYS = ("agl/e_riem", "agl/tau")  # the collision terms are opt-in: not computed, not logged by default
RECIPES = {"sft": "tiny-sft-cpu.yaml", "dpo": "tiny-dpo-cpu.yaml"}


def _run(workspace: Path, kind: str, run_name: str, **overrides) -> Path:
    return _train(workspace, kind, run_name, **overrides)[0]


def _train(workspace: Path, kind: str, run_name: str, **overrides) -> tuple[Path, str]:
    """The run's output_dir and its console (stdout, where Axolotl prints its log lines and the logged dicts)."""
    config = write_config(workspace, RECIPES[kind], run_name, **overrides)
    proc = axolotl_train(workspace, config)
    assert proc.returncode == 0, tail(proc)
    return workspace / "outputs" / run_name, proc.stdout


def _plain_overrides(kind: str) -> dict:
    """The recipe without the plugin and without any agl_* key."""
    from tests.helpers.axolotl import load_recipe

    return {key: None for key in load_recipe(RECIPES[kind]) if key.startswith("agl_") or key == "plugins"}


def _losses(output_dir: Path) -> list[float]:
    return [entry["loss"] for entry in train_logs(log_history(output_dir))]


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_agl_run_logs_terms_and_writes_adapter_and_fisher(workspace: Path, kind: str) -> None:
    out, console = _train(workspace, kind, f"{kind}-agl")
    logs = train_logs(log_history(out))
    assert len(logs) == 3
    for key in AGL_KEYS:
        assert all(key in entry for entry in logs), (key, logs[0].keys())
        assert all(math.isfinite(entry[key]) for entry in logs), (key, logs)
    assert not any(key in entry for key in OFF_KEYS for entry in logs), logs[-1].keys()
    # LoRA B starts at 0, so the update and every term are 0 at step 1; after the first optimizer step they are not
    for key in ("agl/loss", "agl/r_align", "agl/r_task", "agl/kl_estimate"):
        assert logs[-1][key] > 0, (key, logs[-1])
    assert (out / "adapter_model.safetensors").is_file()
    fisher = out / "agl_fisher"
    assert fisher.is_dir() and any(fisher.iterdir()), sorted(p.name for p in out.iterdir())
    assert (out / "checkpoint-3" / "agl_state.json").is_file()
    # on Axolotl's console: the start-up plan (before step 1), the end-of-run summary; a reading at the last step
    lines = console.replace("\r", "\n").splitlines()
    plan = [line for line in lines if "AGL start-up:" in line]
    summary = [line for line in lines if "AGL summary:" in line]
    assert len(plan) == 1 and "expected" in plan[0] and len(summary) == 1, console[-6000:]
    assert console.index("AGL start-up:") < console.index("'loss'") < console.index("AGL summary:"), console[-6000:]
    assert "agl/kl_measured" in logs[-1], logs[-1]
    assert json.loads((out / "agl_summary.json").read_text())["kl_measured"] == pytest.approx(
        logs[-1]["agl/kl_measured"]
    )


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_agl_disabled_matches_plain_axolotl(workspace: Path, kind: str) -> None:
    off = _run(workspace, kind, f"{kind}-off", agl_enabled=False)
    plain = _run(workspace, kind, f"{kind}-plain", **_plain_overrides(kind))
    off_logs = train_logs(log_history(off))
    assert not any(key.startswith("agl/") for entry in off_logs for key in entry)
    assert not (off / "agl_fisher").exists()
    assert _losses(off) == pytest.approx(_losses(plain), rel=1e-6, abs=1e-7)
    assert len(_losses(off)) == 3


# The other preference trainers Axolotl builds: the tiny DPO recipe with another `rl:` (and a dataset of its format).
OTHER_RL = {
    "ipo": {},  # DPOTrainer with loss_type ipo
    "kto": {
        "datasets": [{"path": "./data/kto.jsonl", "ds_type": "json", "type": "chatml.prompt_pairs"}],
        "remove_unused_columns": False,  # Axolotl requires it for KTO
    },
    "orpo": {"datasets": [{"path": "./data/orpo.jsonl", "ds_type": "json", "type": "chat_template.argilla"}]},
    "simpo": {"simpo_gamma": 0.5},  # CPOTrainer with loss_type simpo on the DPO data
}


@pytest.mark.parametrize("rl", sorted(OTHER_RL))
def test_agl_other_preference_trainers(workspace: Path, rl: str) -> None:
    out = _run(workspace, "dpo", f"{rl}-agl", rl=rl, **OTHER_RL[rl])
    logs = train_logs(log_history(out))
    assert len(logs) == 3
    assert all(key in logs[-1] for key in AGL_KEYS), logs[-1].keys()
    assert logs[-1]["agl/loss"] > 0 and logs[-1]["agl/r_align"] > 0, logs[-1]
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_agl_qlora_4bit(workspace: Path, kind: str) -> None:
    """QLoRA (bitsandbytes NF4 base on CPU) through Axolotl's loader, with AGL.

    The probe has responses, so the Fisher needs no generation: on AVX512-BF16 CPUs, bitsandbytes 0.50.2 repacks a
    4-bit weight for its CPU inference kernel on the first no-grad eval-mode forward (e.g. probe generation), after
    which backward through it yields no input gradient; GPU runs are unaffected.
    """
    out = _run(
        workspace, kind, f"{kind}-qlora", adapter="qlora", load_in_4bit=True, agl_probe_dataset="./data/probe.jsonl"
    )
    logs = train_logs(log_history(out))
    assert len(logs) == 3
    assert logs[-1]["agl/loss"] > 0 and logs[-1]["agl/r_align"] > 0, logs[-1]
    assert (out / "adapter_model.safetensors").is_file() and (out / "agl_fisher").is_dir()
    assert '"load_in_4bit": true' in (workspace / f"{kind}-qlora.log").read_text()
