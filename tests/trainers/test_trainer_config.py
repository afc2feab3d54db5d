"""AGL configs: fields mirror the core settings, TrlParser reads every agl_* key from YAML and CLI, validation."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import yaml

from agl_trl.config import AGLArgs, AGLDPOConfig, AGLKTOConfig, AGLSFTConfig
from agl_trl.fisher import FisherSettings
from agl_trl.regularizers import AGLSettings
from agl_trl.settings import SETTING_KEYS, AGLTrainingSettings

REPO = Path(__file__).resolve().parents[2]
BASE = dict(output_dir="unused", report_to="none", bf16=False, use_cpu=True)

# a valid non-default value for every agl_* field (the test fails if a field is added without one here)
NON_DEFAULTS = {
    "agl_enabled": False,
    "agl_fisher_path": "some/artifact",
    "agl_probe_dataset": "org/probe-set",
    "agl_probe_split": "validation",
    "agl_save_fisher": False,
    "agl_lambda_align": 0.25,
    "agl_kl_budget": 0.05,
    "agl_kl_every": 5,
    "agl_kl_batch_size": 2,
    "agl_kl_sequences": 8,
    "agl_kl_anchor_every": 4,
    "agl_kl_anchor_tokens": 12,
    "agl_lambda_floor": 0.5,
    "agl_align_penalty": False,
    "agl_lambda_task": 0.5,
    "agl_lambda_collision": 0.75,
    "agl_mu": 0.3,
    "agl_beta": 2.5,
    "agl_gate": "hard",
    "agl_gate_damping": 0.2,
    "agl_riem_block": 16,
    "agl_tau_quantile": 0.8,
    "agl_tau_momentum": 0.5,
    "agl_fisher_estimator": "diagonal",
    "agl_fisher_targets": "empirical",
    "agl_fisher_positions": "response",
    "agl_fisher_max_rank": 7,
    "agl_fisher_explained_variance": 0.5,
    "agl_fisher_max_samples": 9,
    "agl_fisher_batch_size": 3,
    "agl_fisher_max_length": 33,
    "agl_fisher_max_new_tokens": 5,
    "agl_fisher_sketch": "nystrom",
    "agl_fisher_memory_budget_gb": 1.5,
    "agl_fisher_seed": 11,
}


def _default(f):
    return f.default if f.default is not MISSING else f.default_factory()


def test_fields_mirror_core_settings_one_to_one():
    names = set(SETTING_KEYS)
    agl_defaults = {f.name: _default(f) for f in fields(AGLArgs)}
    for f in fields(AGLSettings):
        assert f"agl_{f.name}" in names, f"AGLArgs lacks agl_{f.name} (new AGLSettings field)"
        assert agl_defaults[f"agl_{f.name}"] == _default(f), f"default of agl_{f.name} differs from AGLSettings"
    for f in fields(FisherSettings):
        assert f"agl_fisher_{f.name}" in names, f"AGLArgs lacks agl_fisher_{f.name} (new FisherSettings field)"
        assert agl_defaults[f"agl_fisher_{f.name}"] == _default(f), f"default of agl_fisher_{f.name} differs"
    core = {f"agl_{f.name}" for f in fields(AGLSettings)} | {f"agl_fisher_{f.name}" for f in fields(FisherSettings)}
    extra = names - core
    assert extra == {"agl_enabled", "agl_fisher_path", "agl_probe_dataset", "agl_probe_split", "agl_save_fisher"}
    for f in fields(AGLArgs):
        assert f.metadata.get("help"), f"{f.name} has no help text"
        # argparse chokes on a stray '%' in help; the one directive is agl_trl.config.agl_field's
        assert "%" not in f.metadata["help"].replace("%(default).0s", ""), f"{f.name}: argparse chokes on '%' in help"
    assert set(NON_DEFAULTS) == names


def test_settings_objects_are_built_from_the_fields():
    args = AGLArgs(agl_lambda_align=0.3, agl_gate="hard", agl_fisher_max_rank=5, agl_fisher_estimator="diagonal")
    settings = AGLTrainingSettings.from_prefixed(args, none_is_default=False)
    assert settings.regularizer.lambda_align == 0.3
    assert settings.regularizer.gate == "hard"
    assert settings.fisher.max_rank == 5
    assert settings.fisher.estimator == "diagonal"


@pytest.mark.parametrize("config_cls", [AGLSFTConfig, AGLDPOConfig, AGLKTOConfig])
def test_trl_configs_carry_the_fields(config_cls):
    config = config_cls(**BASE, agl_lambda_align=0.5)
    assert config.agl_lambda_align == 0.5
    assert config.agl_enabled is True
    assert config.to_dict()["agl_lambda_align"] == 0.5  # serialised with the rest of TrainingArguments


def test_experimental_configs_are_lazy_and_carry_the_fields():
    code = (
        "import sys, agl_trl.config as c\n"
        "assert 'trl.experimental.orpo' not in sys.modules\n"
        "cfg = c.AGLORPOConfig(output_dir='x', report_to='none', bf16=False, use_cpu=True, agl_mu=0.2)\n"
        "assert cfg.agl_mu == 0.2 and 'trl.experimental.orpo' in sys.modules\n"
        "cpo = c.AGLCPOConfig(output_dir='x', report_to='none', bf16=False, use_cpu=True, agl_beta=1.0)\n"
        "assert cpo.agl_beta == 1.0\n"
        "try:\n"
        "    c.AGLCPOConfig(output_dir='x', report_to='none', bf16=False, use_cpu=True, agl_mu=3.0)\n"
        "except ValueError as e:\n"
        "    assert 'agl_mu' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no validation')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_import_agl_trl_is_cheap():
    code = (
        "import sys, agl_trl\n"
        "heavy = [m for m in ('torch', 'trl', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert 'AGLSFTTrainer' in dir(agl_trl)\n"
        "from agl_trl import AGLArgs\n"
        "assert AGLArgs().agl_enabled\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def _parser():
    from agl_trl.scripts.train import make_parser

    return make_parser("sft")


# a fixed lambda_align conflicts with a non-default kl_budget or lambda_floor (docs/errors.md): two passes
ADAPTIVE_ONLY = ("agl_kl_budget", "agl_lambda_floor")
READ_PASSES = [
    {k: v for k, v in NON_DEFAULTS.items() if k not in ADAPTIVE_ONLY},
    {k: NON_DEFAULTS[k] for k in ADAPTIVE_ONLY},
]


@pytest.mark.parametrize("values", READ_PASSES, ids=["all-but-kl_budget", "kl_budget"])
def test_trl_parser_reads_every_agl_field_from_yaml(tmp_path, values):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), **BASE | {"output_dir": "o"}, **values}))
    _, training_args, _, _ = _parser().parse_args_and_config(["--config", str(path)])
    for name, value in values.items():
        assert getattr(training_args, name) == value, name


@pytest.mark.parametrize("values", READ_PASSES, ids=["all-but-kl_budget", "kl_budget"])
def test_trl_parser_reads_every_agl_field_from_the_cli(values):
    argv = ["--output_dir", "o", "--report_to", "none", "--use_cpu", "--bf16", "false"]
    for name, value in values.items():
        if isinstance(value, bool):
            argv += [f"--{name}", str(value).lower()]
        else:
            argv += [f"--{name}", str(value)]
    _, training_args, _, _ = _parser().parse_args_and_config(argv)
    for name, value in values.items():
        assert getattr(training_args, name) == value, name


def test_cli_overrides_yaml_and_bool_flags(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**BASE, "agl_lambda_align": 0.1, "agl_gate": "hard", "agl_save_fisher": True}))
    _, args, _, _ = _parser().parse_args_and_config(
        ["--config", str(path), "--agl_lambda_align", "0.7", "--no_agl_save_fisher", "--agl_fisher_seed", "3"]
    )
    assert args.agl_lambda_align == 0.7  # CLI wins
    assert args.agl_gate == "hard"  # YAML kept
    assert args.agl_save_fisher is False
    assert args.agl_fisher_seed == 3


def test_parser_rejects_a_bad_choice():
    with pytest.raises(SystemExit):
        _parser().parse_args_and_config(["--output_dir", "o", "--agl_gate", "medium"])


BAD_VALUES = [
    ("agl_lambda_align", -1.0, ">= 0"),
    ("agl_lambda_task", float("nan"), "finite"),
    ("agl_mu", 1.5, "[0, 1]"),
    ("agl_beta", -0.1, ">= 0"),
    ("agl_gate", "medium", "'soft'"),
    ("agl_gate_damping", 0.0, "> 0"),
    ("agl_riem_block", 0, ">= 1"),
    ("agl_tau_quantile", 1.0, "between 0 and 1"),
    ("agl_tau_momentum", 1.0, "[0, 1)"),
    ("agl_fisher_estimator", "full", "'kfac'"),
    ("agl_fisher_targets", "greedy", "'sampled'"),
    ("agl_fisher_max_rank", 0, ">= 1"),
    ("agl_fisher_explained_variance", 0.0, "(0, 1]"),
    ("agl_fisher_max_samples", 0, ">= 1"),
    ("agl_fisher_batch_size", 2.5, "integer"),
    ("agl_fisher_max_length", 1, ">= 2"),
    ("agl_fisher_max_new_tokens", 0, ">= 1"),
    ("agl_fisher_sketch", "svd", "'nystrom'"),
    ("agl_fisher_memory_budget_gb", -2.0, "> 0"),
    ("agl_fisher_seed", -1, ">= 0"),
    ("agl_enabled", "yes", "true or false"),
    ("agl_fisher_path", "  ", "directory"),
    ("agl_probe_dataset", "missing/probe.jsonl", "does not exist"),
    ("agl_probe_split", "", "split"),
]


@pytest.mark.parametrize(("name", "value", "fix"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_validation_names_field_value_and_fix(name, value, fix):
    with pytest.raises(ValueError) as info:
        AGLSFTConfig(**BASE, **{name: value})
    message = str(info.value)
    assert name in message
    assert fix in message
    if isinstance(value, str) and value.strip():
        assert repr(value) in message


def test_validation_needs_a_fisher_source_when_enabled(tmp_path):
    with pytest.raises(ValueError, match="agl_probe_dataset"):
        AGLDPOConfig(**BASE, agl_probe_dataset=None)
    # fine with a saved artifact (its metadata is checked at config time: tests/core/test_errors.py), or AGL disabled
    (tmp_path / "fisher.safetensors").write_bytes(b"")
    (tmp_path / "fisher.json").write_text('{"format_version": 1, "estimator": "kfac", "modules": {"m": {}}}')
    assert AGLDPOConfig(**BASE, agl_probe_dataset=None, agl_fisher_path=str(tmp_path)).agl_fisher_path == str(tmp_path)
    assert AGLDPOConfig(**BASE, agl_probe_dataset=None, agl_enabled=False).agl_enabled is False


def test_settings_from_other_sources():
    class DictDefault(dict):  # Axolotl's cfg answers None for unknown keys
        def __getattr__(self, item):
            return self.get(item)

    cfg = DictDefault(agl_lambda_align=0.2, agl_gate=None)
    args = AGLTrainingSettings.from_prefixed(cfg).to_prefixed()
    assert args["agl_lambda_align"] == 0.2
    assert args["agl_gate"] == "soft"  # None -> default
    assert args["agl_probe_dataset"] == "driftcaps"
    with pytest.raises(ValueError, match="agl_mu"):
        AGLTrainingSettings.from_prefixed({"agl_mu": -1})
    plain = type("Plain", (), {"agl_beta": 3.0})()
    assert AGLTrainingSettings.from_prefixed(plain).regularizer.beta == 3.0
    AGLArgs(**AGLTrainingSettings.from_prefixed(plain).to_prefixed())


def test_declared_fields_equal_the_settings():
    """``AGLArgs`` declares every setting, in order, with the type, default, help and choices of settings.py."""
    import typing

    from agl_trl.settings import setting_fields

    hints = typing.get_type_hints(AGLArgs)
    declared = fields(AGLArgs)
    assert [f.name for f in declared] == [spec.key for spec in setting_fields()]
    for f, spec in zip(declared, setting_fields(), strict=True):
        assert hints[f.name] == spec.type, f.name
        assert _default(f) == spec.default, f.name
        assert f.metadata["help"].removesuffix("%(default).0s") == spec.described_help, f.name
        assert f.metadata.get("choices") == (list(spec.choices) if spec.choices else None), f.name


def test_help_shows_the_resolved_default_of_unset_settings():
    """``--help`` prints what an unset ``agl_kl_anchor_every`` / ``agl_lambda_align`` resolves to, not None."""
    from trl import TrlParser

    from agl_trl.settings import DEFAULT_KL_ANCHOR_EVERY

    text = " ".join(TrlParser((AGLSFTConfig,)).format_help().split())
    anchor = text[text.index("--agl_kl_anchor_every AGL_KL_ANCHOR_EVERY,") :]
    anchor = anchor[: anchor.index("--agl_lambda_task AGL_LAMBDA_TASK,")]
    assert f"(default: {DEFAULT_KL_ANCHOR_EVERY} (off under DeepSpeed ZeRO-3" in anchor
    assert "(default: None)" not in anchor
    align = text[text.index("--agl_lambda_align AGL_LAMBDA_ALIGN,") :]
    align = align[: align.index("--agl_kl_budget AGL_KL_BUDGET,")]
    assert "(default: adaptive" in align and "(default: None)" not in align
