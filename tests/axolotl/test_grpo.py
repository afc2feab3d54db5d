"""Real ``axolotl train`` runs of Axolotl's online trainer (``rl: grpo``: ``AxolotlGRPOTrainer``) with the AGL plugin,
on CPU: a tiny random Llama, 2 completions of 8 tokens per prompt, 3 optimizer steps; also with GDPO's reward
aggregation (``rl: gdpo`` itself cannot take a LoRA adapter in Axolotl 0.21, so AGL refuses it and says what to use).

The reward is a module written into the workspace (``trl.reward_funcs`` takes dotted paths): the completion's length,
which varies between completions, so the advantages and the task gradient do not vanish (the recipe's own exact-match
reward is 0 for every completion of a random model).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.helpers.axolotl import (
    axolotl_train,
    load_recipe,
    log_history,
    requires_axolotl,
    train_logs,
    write_config,
)
from tests.helpers.data import tail

pytestmark = [pytest.mark.axolotl, requires_axolotl, pytest.mark.timeout(900)]

RECIPE = "tiny-grpo-cpu.yaml"
AGL_KEYS = ("agl/loss", "agl/r_align", "agl/r_task", "agl/kl_estimate", "agl/e_geo", "agl/leakage")
OFF_KEYS = ("agl/e_riem", "agl/tau")  # the collision terms are opt-in: not computed, not logged by default
REWARDS = '''def length_reward(prompts, completions, **kwargs):
    """Characters in the completion (varies between completions)."""
    return [float(len(c if isinstance(c, str) else c[0]["content"])) for c in completions]
'''


@pytest.fixture
def grpo_workspace(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (workspace / "tiny_rewards.py").write_text(REWARDS)
    monkeypatch.setenv("PYTHONPATH", str(workspace))  # axolotl imports the reward module by name
    return workspace


def _trl(**overrides) -> dict:
    return {**load_recipe(RECIPE)["trl"], "reward_funcs": ["tiny_rewards.length_reward"], **overrides}


def _run(workspace: Path, run_name: str, **overrides) -> Path:
    config = write_config(workspace, RECIPE, run_name, **overrides)
    proc = axolotl_train(workspace, config)
    assert proc.returncode == 0, tail(proc)
    return workspace / "outputs" / run_name


# GDPO = GRPO with multi-objective aggregation (what Axolotl's rl: gdpo sets), here over two rewards
VARIANTS = {
    "grpo": {},
    "gdpo-aggregation": {
        "multi_objective_aggregation": "normalize_then_sum",
        "reward_funcs": ["tiny_rewards.length_reward", "agl_trl.experiments.online.task_reward"],
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_agl_grpo_run_logs_terms_and_writes_adapter_fisher_and_state(grpo_workspace: Path, variant: str) -> None:
    out = _run(grpo_workspace, f"{variant}-agl", trl=_trl(**VARIANTS[variant]))
    logs = train_logs(log_history(out))
    assert len(logs) == 3
    for key in AGL_KEYS:
        assert all(key in entry and math.isfinite(entry[key]) for entry in logs), (key, logs[-1].keys())
    assert not any(key in entry for key in OFF_KEYS for entry in logs), logs[-1].keys()
    assert all("reward" in entry for entry in logs)  # GRPO's own metrics are still logged
    # LoRA B starts at 0, so every term is 0 at step 1; after the first optimizer step they are not
    for key in ("agl/loss", "agl/r_align", "agl/kl_estimate"):
        assert logs[-1][key] > 0, (key, logs[-1])
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "agl_fisher").is_dir() and any((out / "agl_fisher").iterdir())
    assert (out / "checkpoint-3" / "agl_state.json").is_file()
    log = (grpo_workspace / f"{variant}-agl.yaml").with_suffix(".log").read_text()
    assert "AGL Fisher estimation" in log


def test_gdpo_and_ebft_are_refused_with_what_to_use_instead() -> None:
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    for rl, advice in (("gdpo", "use `rl: grpo` with that key"), ("ebft", "strided mode has its own loss")):
        cfg = DictDefault({**load_recipe(RECIPE), "rl": rl, **({"ebft": {"mode": "strided"}} if rl == "ebft" else {})})
        prepare_plugins(cfg)
        with pytest.raises(Exception, match=rf"does not support `rl: {rl}`.*{advice}"):
            validate_config(cfg)
    cfg = DictDefault(load_recipe(RECIPE))  # the recipe itself validates: rl: grpo is supported
    prepare_plugins(cfg)
    assert validate_config(cfg).rl == "grpo"


def test_agl_disabled_grpo_matches_plain_axolotl(grpo_workspace: Path) -> None:
    plain_keys = {key: None for key in load_recipe(RECIPE) if key.startswith("agl_") or key == "plugins"}
    off = _run(grpo_workspace, "grpo-off", trl=_trl(), agl_enabled=False)
    plain = _run(grpo_workspace, "grpo-plain", trl=_trl(), **plain_keys)
    off_logs, plain_logs = train_logs(log_history(off)), train_logs(log_history(plain))
    assert not any(key.startswith("agl/") for entry in off_logs for key in entry)
    assert not (off / "agl_fisher").exists()
    assert len(off_logs) == len(plain_logs) == 3
    for key in ("loss", "grad_norm", "reward"):
        assert [e[key] for e in off_logs] == pytest.approx([e[key] for e in plain_logs], rel=1e-6, abs=1e-7), key
    assert any(e["grad_norm"] > 0 for e in plain_logs), "no task gradient: the comparison would be blind"
