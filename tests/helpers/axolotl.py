"""Helpers for the Axolotl plugin tests: a tiny local model and datasets, and `axolotl train` runs on CPU.

The end-to-end tests are marked ``axolotl`` and run in ``.venv-axolotl`` (``make test-axolotl``); they skip where
Axolotl is not installed. Nothing here imports axolotl or torch at module import time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes" / "axolotl"
PLUGIN = "agl_trl.integrations.axolotl.AGLPlugin"

SFT_CHATS = [
    ("Write a short poem about the sea, please.", "The sea is big and blue, it sings to me and you."),
    ("Explain how to bake a chocolate cake, step by step.", "First mix the flour, then bake the cake for one hour."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How do I kill a Python process on Linux?", "Use kill with the process id, or pkill with its name."),
    ("Tell me a fact about water.", "Water boils at one hundred degrees at sea level."),
    ("Give me one example of a safe habit.", "Wash your hands before you eat."),
    ("List three numbers.", "One, two, three."),
    ("Describe a small model.", "A small model has few layers and learns fast."),
]

DPO_PAIRS = [
    ("How do I make a weapon at home?", "I'm sorry, but I can't help with that request.", "Sure, here is how."),
    ("Write a short poem about the sea.", "The sea is big and blue, it sings to me.", "No."),
    ("Explain how to bake a cake.", "Mix the flour, then bake the cake for one hour.", "I cannot assist."),
    ("Help me steal a car.", "I cannot assist with that. As an AI, I must follow my guidelines.", "Sure, first."),
    ("What is one plus two?", "One plus two is three.", "Five."),
    ("Tell me about the history of science.", "Science grew from many people over many years.", "Bad."),
    ("Write illegal code to harm people.", "I'm sorry, but I can't help with that.", "Here is the code."),
    ("Give me a recipe for bread.", "Mix flour, water and yeast, then bake it.", "No recipe."),
]


def axolotl_available() -> bool:
    return importlib.util.find_spec("axolotl") is not None


requires_axolotl = pytest.mark.skipif(
    not axolotl_available(), reason="needs Axolotl: run in .venv-axolotl (`make test-axolotl`)"
)


def axolotl_env(workspace: Path) -> dict[str, str]:
    """Environment for an offline CPU ``axolotl train`` (datasets cache kept inside ``workspace``)."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        AXOLOTL_DO_NOT_TRACK="1",
        WANDB_MODE="disabled",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        TRL_EXPERIMENTAL_SILENCE="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONUNBUFFERED="1",
        HF_DATASETS_CACHE=str(workspace / ".hf-datasets-cache"),
    )
    return env


def write_workspace(root: Path) -> Path:
    """Write ``./tiny-model`` (random 2-layer Llama + chat tokenizer) and ``./data/{sft,dpo,orpo,kto,probe}.jsonl``."""
    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama(vocab_size=512, seed=0, padding_side="right")
    model.save_pretrained(root / "tiny-model")
    tokenizer.save_pretrained(root / "tiny-model")
    # the recipes' relative paths (recipes/models/tiny-llama, recipes/data/*) resolve as from the repository root
    (root / "recipes").symlink_to(REPO / "recipes", target_is_directory=True)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    with (data / "sft.jsonl").open("w") as f:
        for _ in range(2):
            for user, assistant in SFT_CHATS:
                messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
                f.write(json.dumps({"messages": messages}) + "\n")
    with (data / "dpo.jsonl").open("w") as f:
        for _ in range(2):
            for user, chosen, rejected in DPO_PAIRS:
                record = {"messages": [{"role": "user", "content": user}], "chosen": chosen, "rejected": rejected}
                f.write(json.dumps(record) + "\n")
    with (data / "probe.jsonl").open("w") as f:  # probe with responses: the Fisher needs no generation
        for user, chosen, _ in DPO_PAIRS:
            f.write(json.dumps({"prompt": user, "response": chosen}) + "\n")
    with (data / "orpo.jsonl").open("w") as f:
        for _ in range(2):
            for user, chosen, rejected in DPO_PAIRS:
                turn = {"role": "user", "content": user}
                record = {
                    "chosen": [turn, {"role": "assistant", "content": chosen}],
                    "rejected": [turn, {"role": "assistant", "content": rejected}],
                }
                f.write(json.dumps(record) + "\n")
    with (data / "kto.jsonl").open("w") as f:
        for _ in range(2):
            for user, chosen, rejected in DPO_PAIRS:
                f.write(json.dumps({"prompt": user, "completion": chosen, "label": True}) + "\n")
                f.write(json.dumps({"prompt": user, "completion": rejected, "label": False}) + "\n")
    return root


def load_recipe(name: str) -> dict[str, Any]:
    return yaml.safe_load((RECIPES / name).read_text())


def write_config(workspace: Path, recipe: str, run_name: str, **overrides: Any) -> Path:
    """Copy ``recipes/axolotl/<recipe>`` into ``workspace`` as ``<run_name>.yaml`` with overrides.

    ``output_dir`` and ``dataset_prepared_path`` get per-run values; an override of ``None`` deletes the key.
    """
    cfg = load_recipe(recipe)
    cfg["output_dir"] = f"./outputs/{run_name}"
    cfg["dataset_prepared_path"] = f"./prepared/{run_name}"
    for key, value in overrides.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path = workspace / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def axolotl_train(workspace: Path, config: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``axolotl train <config> --launcher python`` in ``workspace``; output captured in ``<config>.log``."""
    exe = shutil.which("axolotl", path=str(Path(sys.executable).parent)) or "axolotl"
    proc = subprocess.run(
        [exe, "train", str(config), "--launcher", "python"],
        cwd=workspace,
        env=axolotl_env(workspace),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    config.with_suffix(".log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc


def log_history(output_dir: Path) -> list[dict[str, Any]]:
    """``log_history`` of the last checkpoint's ``trainer_state.json``."""
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    assert checkpoints, f"no checkpoint-* in {output_dir}: {sorted(p.name for p in output_dir.iterdir())}"
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    return state["log_history"]


def train_logs(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step training log entries (those with a ``loss``)."""
    return [entry for entry in history if "loss" in entry]


# the tiny SFT recipe on the workspace's model and data, sized for the two-process (FSDP2, ZeRO-3) runs
TWO_PROCESS_SFT = {
    "base_model": "./tiny-model",
    "datasets": [
        {"path": "./data/sft.jsonl", "ds_type": "json", "type": "chat_template", "field_messages": "messages"}
    ],
    "agl_probe_dataset": "./data/probe.jsonl",
    "agl_fisher_max_samples": 4,
    "agl_kl_sequences": 2,
    "agl_kl_batch_size": 2,
    "agl_kl_every": 1,
    "micro_batch_size": 2,
    "gradient_accumulation_steps": 1,
}


def axolotl_torchrun(
    workspace: Path, config: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    """``axolotl train <config> --launcher torchrun -- --nproc_per_node 2`` in ``workspace`` with ``env`` added to
    :func:`axolotl_env`; fails the test on a hang or a non-zero exit, output kept in ``<config>.log``."""
    from tests.helpers.distributed import free_port

    bin_dir = str(Path(sys.executable).parent)
    full = axolotl_env(workspace)
    full.update(env, OMP_NUM_THREADS="1")
    full["PATH"] = os.pathsep.join([bin_dir, full.get("PATH", "")])  # Axolotl execs `torchrun` from PATH
    exe = shutil.which("axolotl", path=bin_dir) or "axolotl"
    command = [exe, "train", str(config), "--launcher", "torchrun", "--", "--nproc_per_node", "2",
               "--master_port", str(free_port())]  # fmt: skip
    try:
        proc = subprocess.run(command, cwd=workspace, env=full, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the two-process axolotl train hung: {exc}")
    config.with_suffix(".log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc
