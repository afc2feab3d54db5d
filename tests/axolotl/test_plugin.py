"""The plugin inside Axolotl's own config pipeline (prepare_plugins + validate_config) and CLI: keys, errors, no-op."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers.axolotl import (
    PLUGIN,
    axolotl_train,
    load_recipe,
    requires_axolotl,
    write_config,
)
from tests.helpers.data import tail

pytestmark = [pytest.mark.axolotl, requires_axolotl]


def validate(**overrides: Any) -> Any:
    """Validate the tiny SFT recipe (with ``overrides``; ``None`` deletes a key) the way ``axolotl train`` does."""
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    raw = copy.deepcopy(load_recipe("tiny-sft-cpu.yaml"))
    for key, value in overrides.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    cfg = DictDefault(raw)
    prepare_plugins(cfg)
    return validate_config(cfg)


def test_agl_keys_reach_the_validated_cfg() -> None:
    cfg = validate(agl_lambda_align=2.5, agl_gate="hard")
    assert cfg.agl_enabled is True
    assert cfg.agl_lambda_align == 2.5
    assert cfg.agl_gate == "hard"
    assert cfg.agl_fisher_max_rank == 8
    assert cfg.agl_mu == 0.5  # default filled in


def test_agl_enabled_unset_means_off() -> None:
    cfg = validate(agl_enabled=None)
    assert cfg.agl_enabled is False


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"agl_mu": 2.0}, r"agl_mu.*must lie in \[0, 1\]"),
        ({"agl_lambda_align": -1.0}, r"agl_lambda_align.*must be >= 0"),
        ({"agl_gate": "medium"}, r"agl_gate\s+Input should be 'soft' or 'hard'"),
        ({"agl_fisher_max_rank": 0}, r"agl_fisher_max_rank.*must be >= 1"),
        ({"agl_enabled": "maybe"}, r"agl_enabled\s+Input should be a valid boolean"),
        ({"agl_probe_dataset": "missing-probe.jsonl"}, r"agl_probe_dataset.*does not exist"),
        ({"adapter": None}, r"needs a LoRA adapter"),
        ({"rl": "gdpo"}, r"does not support `rl: gdpo`; AGL supports .*simpo, grpo\. Axolotl 0\.21 cannot build"),
    ],
)
def test_invalid_agl_values_are_axolotl_validation_errors(overrides: dict[str, Any], match: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=match):
        validate(**overrides)


def test_disabled_agl_skips_adapter_and_rl_checks() -> None:
    cfg = validate(agl_enabled=False, adapter=None, lora_target_modules=None)
    assert cfg.agl_enabled is False


def test_plugin_is_a_noop_when_disabled() -> None:
    from agl_trl.integrations.axolotl import AGLPlugin
    from agl_trl.integrations.axolotl.plugin import ARGS_PATH

    plugin = AGLPlugin()
    assert plugin.get_input_args() == ARGS_PATH == "agl_trl.integrations.axolotl.args.AGLAxolotlArgs"
    assert plugin.get_trainer_cls(validate()) is None  # never replaces Axolotl's trainer class (RL builder pitfall)

    class Trainer:
        pass

    trainer = Trainer()
    for cfg in (validate(agl_enabled=False), validate(agl_enabled=None)):
        plugin.post_trainer_create(cfg, trainer)
        assert type(trainer) is Trainer and not hasattr(trainer, "_agl")


def test_plugin_refuses_unsupported_rl_when_called_directly() -> None:
    from axolotl.utils.dict import DictDefault

    from agl_trl.integrations.axolotl import AGLPlugin

    with pytest.raises(ValueError, match="does not support `rl: ebft`"):
        AGLPlugin().post_trainer_create(DictDefault(agl_enabled=True, rl="ebft"), SimpleNamespace())


def test_cli_reports_invalid_agl_value(workspace) -> None:
    config = write_config(workspace, "tiny-sft-cpu.yaml", "cli-invalid", agl_tau_quantile=1.5)
    proc = axolotl_train(workspace, config, timeout=300)
    assert proc.returncode != 0, tail(proc)
    output = proc.stdout + proc.stderr
    assert "agl_tau_quantile" in output and "must lie strictly between 0 and 1" in output, tail(proc)
    assert not (workspace / "outputs" / "cli-invalid" / "checkpoint-1").exists()


@pytest.mark.parametrize(
    "name", ["tiny-sft-cpu.yaml", "tiny-dpo-cpu.yaml", "llama31-8b-qlora-sft-agl.yaml", "llama31-8b-qlora-dpo-agl.yaml"]
)
def test_recipes_validate_with_agl_on(name: str) -> None:
    """Every shipped recipe passes Axolotl's validation (no model is loaded) with the plugin and AGL enabled."""
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    recipe = load_recipe(name)
    assert recipe["plugins"] == [PLUGIN], name
    cfg = DictDefault(recipe)
    prepare_plugins(cfg)
    cfg = validate_config(cfg)
    assert cfg.agl_enabled is True and cfg.adapter in ("lora", "qlora"), name
    if name.startswith("llama31"):
        assert cfg.load_in_4bit is True and cfg.adapter == "qlora", name
