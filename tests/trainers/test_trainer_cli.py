"""The agl-trl command line, the scripts and the recipes."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from agl_trl import cli
from tests.helpers.trainers import dpo_records, sft_records, write_jsonl

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes" / "trl"
AGL_TRL = Path(sys.executable).parent / "agl-trl"


@pytest.fixture
def data(tmp_path, probe_file):
    return {
        "sft": write_jsonl(tmp_path / "sft.jsonl", sft_records(8)),
        "dpo": write_jsonl(tmp_path / "dpo.jsonl", dpo_records(8)),
        "probe": probe_file,
    }


def overrides(model_dir, dataset, probe, output_dir) -> list[str]:
    return [
        "--model_name_or_path",
        str(model_dir),
        "--dataset_name",
        str(dataset),
        "--agl_probe_dataset",
        str(probe),
        "--output_dir",
        str(output_dir),
    ]


def test_help_lists_every_subcommand():
    result = subprocess.run([str(AGL_TRL), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in ("sft", "dpo", "kto", "orpo", "cpo", "grpo", "rloo", "fisher", "drift", "demo", "scaling"):
        assert name in result.stdout


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_parses_with_its_script(recipe):
    import importlib

    kind = next((k for k in ("dpo", "grpo", "rloo") if k in recipe.name), "sft")
    parser = importlib.import_module("agl_trl.scripts.train").make_parser(kind)
    # local probe paths of the tiny recipes need not exist here; bf16 GPU recipes are checked on CPU
    overrides_ = ["--agl_probe_dataset", "driftcaps", "--use_cpu"]
    script_args, training_args, model_args, _ = parser.parse_args_and_config(["--config", str(recipe), *overrides_])
    assert model_args.use_peft
    assert training_args.agl_enabled
    assert script_args.dataset_name
    if "llama3.1-8b" in recipe.name:
        assert model_args.load_in_4bit and model_args.lora_r == 16
        assert model_args.lora_target_modules == "all-linear"
        assert training_args.bf16


@pytest.mark.slow
def test_console_script_sft_trains_and_writes_adapter_and_fisher(tmp_path, tiny_model_dir, data):
    out = tmp_path / "out"
    argv = [
        "sft",
        "--config",
        str(RECIPES / "tiny-sft.yaml"),
        *overrides(tiny_model_dir, data["sft"], data["probe"], out),
    ]
    result = subprocess.run([str(AGL_TRL), *argv], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "adapter_config.json").is_file()
    assert (out / "agl_fisher" / "fisher.json").is_file()
    assert "agl/r_align" in result.stdout + result.stderr


@pytest.mark.slow
def test_in_process_dpo_and_fisher_then_sft_reuses_it(tmp_path, tiny_model_dir, data, capsys):
    out = tmp_path / "dpo"
    argv = [
        "dpo",
        "--config",
        str(RECIPES / "tiny-dpo.yaml"),
        *overrides(tiny_model_dir, data["dpo"], data["probe"], out),
    ]
    assert cli.main(argv) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "agl_fisher" / "fisher.json").is_file()

    sft_out = tmp_path / "sft"
    common = [
        "--config",
        str(RECIPES / "tiny-sft.yaml"),
        *overrides(tiny_model_dir, data["sft"], data["probe"], sft_out),
    ]
    assert cli.main(["fisher", *common]) == 0
    printed = capsys.readouterr().out
    assert "ignoring keys that only matter for training" in printed and "--learning_rate" in printed
    artifact = sft_out / "agl_fisher" / "fisher.safetensors"
    stamp = artifact.stat().st_mtime_ns
    assert cli.main(["sft", *common]) == 0
    assert artifact.stat().st_mtime_ns == stamp  # reused, not re-estimated
    assert (sft_out / "adapter_model.safetensors").is_file()


def test_multi_process_flags_go_to_accelerate(tmp_path, monkeypatch, recipe_model):
    calls = []
    monkeypatch.setattr(cli, "launch_with_accelerate", lambda *a: calls.append(a))
    recipe = tmp_path / "r.yaml"
    recipe.write_text((RECIPES / "tiny-sft.yaml").read_text() + "num_processes: 2\n")
    argv = ["sft", "--config", str(recipe), "--agl_probe_dataset", "driftcaps", "--accelerate_config", "zero2"]
    assert cli.main(argv) == 0
    (module, launch_args, script_args) = calls[0]
    assert module == "agl_trl.scripts.train"
    assert launch_args[0] == "--config_file" and launch_args[1].endswith("zero2.yaml")
    assert "--num_processes" in launch_args and "2" in launch_args
    assert script_args == ["sft", "--config", str(recipe), "--agl_probe_dataset", "driftcaps"]


def test_launch_helpers():
    assert cli._needs_torchrun_on_cpu(["--num_processes", "2"]) is not __import__("torch").cuda.is_available()
    assert cli._needs_torchrun_on_cpu(["--num_processes", "1"]) is False
    assert cli._needs_torchrun_on_cpu(["--num_processes", "2", "--multi_gpu"]) is False
    launch, other = cli.split_launch_args(["--num_processes", "2", "--learning_rate", "0.1", "--multi_gpu", "--x"])
    assert launch == ["--num_processes", "2", "--multi_gpu"]
    assert other == ["--learning_rate", "0.1", "--x"]


def test_forwarded_commands(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("agl_fake_cli")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "agl_fake_cli", fake)
    monkeypatch.setitem(cli.FORWARDED_COMMANDS, "drift", ("agl_fake_cli", "x"))
    assert cli.main(["drift", "--model", "m"]) == 0
    assert seen == [["--model", "m"]]
    monkeypatch.setitem(cli.FORWARDED_COMMANDS, "scaling", ("agl_trl.not_written_yet.cli", "x"))
    assert cli.main(["scaling"]) == 2
    assert "not available" in capsys.readouterr().err
    assert cli.main(["nonsense"]) == 2
