"""``agl-trl grpo`` / ``agl-trl rloo``: the tiny recipes train (reward functions named as ``trl grpo`` names them),
the 8B recipe parses, and bad reward names fail at config time with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agl_trl import cli
from tests.helpers.online import prompt_records
from tests.helpers.trainers import write_jsonl

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes" / "trl"


def overrides(model_dir, probe, output_dir, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--agl_probe_dataset", str(probe), "--output_dir", str(output_dir),
        "--logging_steps", "1", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_tiny_recipe_trains_with_agl_and_writes_adapter_and_fisher(kind, tmp_path, tiny_model_dir, probe_file):
    out = tmp_path / kind
    # the recipe's own data and reward (the task, exact match), plus one of TRL's CLI names and a dotted path
    rewards = ["--reward_funcs", "agl_trl.experiments.online.task_reward", "think_format_reward"]
    rewards += ["tests.helpers.online.length_reward"]
    argv = [kind, "--config", str(RECIPES / f"tiny-{kind}.yaml"), *overrides(tiny_model_dir, probe_file, out, *rewards)]
    argv += ["--dataset_name", str(REPO / "recipes" / "data" / "tiny-grpo.jsonl")]
    assert cli.main(argv) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "agl_fisher" / "fisher.json").is_file()
    assert json.loads((out / "agl_fisher" / "fisher.json").read_text())["modules"]


def test_tiny_grpo_logs_agl_terms_and_rewards(tmp_path, tiny_model_dir, probe_file, capsys):
    data = write_jsonl(tmp_path / "prompts.jsonl", prompt_records(8))
    out = tmp_path / "grpo-logs"
    argv = ["grpo", "--config", str(RECIPES / "tiny-grpo.yaml"), "--dataset_name", str(data)]
    argv += overrides(tiny_model_dir, probe_file, out, "--reward_funcs", "tests.helpers.online.length_reward")
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    for key in ("agl/r_align", "agl/kl_estimate", "rewards/length_reward/mean"):
        assert key in text, key


def test_8b_recipe_parses_with_the_grpo_script():
    from agl_trl.scripts import train

    parser = train.make_parser("grpo")
    script_args, training_args, model_args, _ = parser.parse_args_and_config(
        ["--config", str(RECIPES / "llama3.1-8b-instruct-qlora-grpo.yaml"), "--use_cpu", "--bf16", "false"]
    )
    assert script_args.dataset_name == "trl-lib/DeepMath-103K"
    assert script_args.reward_funcs == ["accuracy_reward"]
    assert model_args.load_in_4bit and model_args.use_peft and model_args.lora_r == 16
    assert training_args.num_generations == 8 and training_args.agl_enabled
    assert type(training_args).__name__ == "AGLGRPOConfig"
    from trl.rewards import accuracy_reward

    from agl_trl.scripts._online import resolve_reward_funcs

    assert resolve_reward_funcs(script_args) == [accuracy_reward]


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (["--reward_funcs", "accuracy"], r"Invalid `reward_funcs` entry 'accuracy': expected one of accuracy_reward"),
        (["--reward_funcs", "no_such_module.reward"], r"module 'no_such_module' does not import"),
        (["--reward_funcs", "tests.helpers.online.missing"], r"has no callable 'missing'"),
        ([], r"Online RL needs a reward: set `reward_funcs`"),
    ],
)
@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_bad_rewards_fail_at_config_time_with_one_line(kind, reward, message, tmp_path, probe_file, capsys):
    import re

    recipe = tmp_path / "r.yaml"
    text = (RECIPES / f"tiny-{kind}.yaml").read_text()
    recipe.write_text("\n".join(line for line in text.splitlines() if not line.startswith("reward_funcs")))
    # a model path that does not exist: the error must come before anything tries to load it
    argv = [kind, "--config", str(recipe), "--model_name_or_path", str(tmp_path / "no-model"), *reward]
    argv += ["--agl_probe_dataset", str(probe_file), "--dataset_name", str(tmp_path / "x.jsonl")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("agl-trl: error: ") and len(err.splitlines()) == 1, err
    assert re.search(message, err), err
