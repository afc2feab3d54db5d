"""The bad inputs of docs/errors.md, shared by the TRL-side (tests/core/test_errors.py) and the Axolotl-side
(tests/axolotl/test_errors.py) tests: each row writes its files, gives its keys and the message each front end prints.

Nothing here imports torch, trl or axolotl.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LLAMA_LINEAR = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]


def write_artifact_stub(directory: Path, **metadata: Any) -> Path:
    """A directory that passes the config-time artifact checks (``fisher.json`` + an empty tensors file).

    ``metadata`` overrides entries of ``fisher.json`` (``None`` deletes one); ``fisher.json`` is written as given when
    ``metadata`` holds ``raw=<text>``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "format_version": 1,
        "estimator": "kfac",
        "settings": {"targets": "sampled"},
        "modules": {f"model.layers.0.{name}": {"d_out": 64, "d_in": 64} for name in LLAMA_LINEAR},
    }
    raw = metadata.pop("raw", None)
    for key, value in metadata.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (directory / "fisher.json").write_text(raw if raw is not None else json.dumps(meta))
    (directory / "fisher.safetensors").write_bytes(b"")
    return directory


def write_probe(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@dataclass(frozen=True)
class BadInput:
    """One row of docs/errors.md: ``keys(tmp)`` are the config keys (files written under ``tmp``; ``None`` is a YAML
    null); ``trl`` and ``axolotl`` are regexes of the message each front end prints (``None``: the row does not apply
    there); ``axolotl_keys`` replaces ``keys`` in an Axolotl YAML where the front ends' keys differ."""

    id: str
    text: str  # the "bad input" column of docs/errors.md, verbatim
    keys: Callable[[Path], dict[str, Any]]
    trl: str | None
    axolotl: str | None
    axolotl_keys: Callable[[Path], dict[str, Any]] | None = None

    def keys_for(self, front_end: str, tmp: Path) -> dict[str, Any]:
        make = self.axolotl_keys if front_end == "axolotl" and self.axolotl_keys is not None else self.keys
        return make(tmp)


ROWS: list[BadInput] = [
    BadInput(
        "weight-and-budget",
        "conflicting keys: a fixed weight and a drift budget (`agl_lambda_align: 100` with `agl_kl_budget: 0.05`)",
        lambda tmp: {"agl_lambda_align": 100, "agl_kl_budget": 0.05},
        r"Invalid `agl_kl_budget`=0\.05: it has no effect while agl_lambda_align=100 fixes the weight",
        r"Invalid `agl_kl_budget`=0\.05: it has no effect while agl_lambda_align=100 fixes the weight",
    ),
    BadInput(
        "adaptive-without-meter",
        "the adaptive weight without the KL meter (`agl_kl_every: 0`, `agl_lambda_align` unset)",
        lambda tmp: {"agl_kl_every": 0},
        r"Invalid `agl_kl_every`=0: the adaptive lambda_align \(the default\) needs the KL meter",
        r"Invalid `agl_kl_every`=0: the adaptive lambda_align \(the default\) needs the KL meter",
    ),
    BadInput(
        "misspelled-key",
        "misspelled `agl_*` key (`agl_lamda_align: 100`)",
        lambda tmp: {"agl_lamda_align": 100},
        r"unknown key agl_lamda_align: did you mean agl_lambda_align\?",
        r"unknown key agl_lamda_align: did you mean agl_lambda_align\?",
    ),
    BadInput(
        "unknown-key",
        "unknown `agl_*` key (`agl_lambda_kl: 0.5`)",
        lambda tmp: {"agl_lambda_kl": 0.5},
        r"unknown key agl_lambda_kl: did you mean agl_lambda_\w+\?",
        r"unknown key agl_lambda_kl: did you mean agl_lambda_\w+\?",
    ),
    BadInput(
        "out-of-range",
        "value out of range (`agl_mu: 1.5`)",
        lambda tmp: {"agl_mu": 1.5},
        r"Invalid `agl_mu`=1\.5: must lie in \[0, 1\]",
        r"Invalid `agl_mu`=1\.5: must lie in \[0, 1\]",
    ),
    BadInput(
        "not-an-integer",
        "not an integer (`agl_fisher_max_rank: 8.5`)",
        lambda tmp: {"agl_fisher_max_rank": 8.5},
        r"Invalid `agl_fisher_max_rank`=8\.5: expected an integer",
        r"agl_fisher_max_rank\s+Input should be a valid integer",
    ),
    BadInput(
        "bad-boolean",
        "bad boolean (`agl_enabled: maybe`)",
        lambda tmp: {"agl_enabled": "maybe"},
        r"argument --agl_enabled.*Truthy value expected: got maybe",
        r"agl_enabled\s+Input should be a valid boolean",
    ),
    BadInput(
        "bad-choice",
        "not one of the choices (`agl_gate: medium`)",
        lambda tmp: {"agl_gate": "medium"},
        r"Invalid `agl_gate`='medium': choose one of 'soft', 'hard'",
        r"agl_gate\s+Input should be 'soft' or 'hard'",
    ),
    BadInput(
        "no-fisher-source",
        "AGL on with neither `agl_fisher_path` nor `agl_probe_dataset`",
        lambda tmp: {"agl_probe_dataset": None},
        r"Invalid `agl_probe_dataset`=None: .*a probe dataset is needed",
        r"Invalid `agl_probe_dataset`=None: .*a probe dataset is needed",
    ),
    BadInput(
        "fisher-path-missing",
        "`agl_fisher_path` does not exist",
        lambda tmp: {"agl_fisher_path": str(tmp / "no-such-artifact")},
        r"Invalid `agl_fisher_path`='.*no-such-artifact': this path does not exist; point it at a directory written "
        r"by `agl-trl fisher`",
        r"Invalid `agl_fisher_path`='.*no-such-artifact': this path does not exist; point it at",
    ),
    BadInput(
        "fisher-path-not-artifact",
        "`agl_fisher_path` is a directory without `fisher.json`",
        lambda tmp: {"agl_fisher_path": str(_mkdir(tmp / "empty-dir"))},
        r"Invalid `agl_fisher_path`='.*empty-dir': this directory has no fisher\.json or fisher\.safetensors",
        r"Invalid `agl_fisher_path`='.*empty-dir': this directory has no fisher\.json or fisher\.safetensors",
    ),
    BadInput(
        "fisher-json-corrupt",
        "the artifact's `fisher.json` does not parse",
        lambda tmp: {"agl_fisher_path": str(write_artifact_stub(tmp / "corrupt", raw="{not json"))},
        r"Invalid `agl_fisher_path`='.*corrupt': .*fisher\.json cannot be parsed .*re-estimate the artifact",
        r"Invalid `agl_fisher_path`='.*corrupt': .*fisher\.json cannot be parsed .*re-estimate the artifact",
    ),
    BadInput(
        "fisher-format-version",
        "the artifact has another format version",
        lambda tmp: {"agl_fisher_path": str(write_artifact_stub(tmp / "v99", format_version=99))},
        r"Invalid `agl_fisher_path`='.*v99': artifact format version 99 is not 1",
        r"Invalid `agl_fisher_path`='.*v99': artifact format version 99 is not 1",
    ),
    BadInput(
        "fisher-unknown-estimator",
        "the artifact names an unknown estimator or targets",
        lambda tmp: {"agl_fisher_path": str(write_artifact_stub(tmp / "est", settings={"targets": "greedy"}))},
        r"Invalid `agl_fisher_path`='.*est': .*names estimator 'kfac' and targets 'greedy'",
        r"Invalid `agl_fisher_path`='.*est': .*names estimator 'kfac' and targets 'greedy'",
    ),
    BadInput(
        "fisher-lora-targets",
        "the artifact does not cover the LoRA target modules (a list of names)",
        lambda tmp: {
            "agl_fisher_path": _q_only(tmp),
            "lora_target_modules": ["q_proj", "v_proj"],
        },
        r"Invalid `agl_fisher_path`='.*q-only': the artifact has no module for `lora_target_modules` v_proj \(it was "
        r"estimated for q_proj\)",
        r"Invalid `agl_fisher_path`='.*q-only': the artifact has no module for `lora_target_modules` k_proj, v_proj, "
        r"o_proj, gate_proj, up_proj, down_proj \(it was estimated for q_proj\)",
        axolotl_keys=lambda tmp: {"agl_fisher_path": _q_only(tmp)},  # the tiny recipe targets all 7 projections
    ),
    BadInput(
        "fisher-other-model",
        "the artifact's model fingerprint differs from the model's `config.json` (read without loading weights)",
        lambda tmp: {"agl_fisher_path": _other_model_artifact(tmp), "model_name_or_path": _config_only_model(tmp)},
        r"Invalid `agl_fisher_path`='.*other-model': the artifact was estimated on another model \('org/big-model'\) "
        r"than `model_name_or_path`: hidden_size: artifact 4096 vs model 32; num_hidden_layers: artifact 32 vs model 2\. "
        r"Estimate an artifact for this model",
        r"Invalid `agl_fisher_path`='.*other-model': the artifact was estimated on another model \('org/big-model'\) "
        r"than `base_model`: hidden_size: artifact 4096 vs model 32; num_hidden_layers: artifact 32 vs model 2\.",
        axolotl_keys=lambda tmp: {"agl_fisher_path": _other_model_artifact(tmp), "base_model": _config_only_model(tmp)},
    ),
    BadInput(
        "model-missing",
        "a local model path that does not exist (`model_name_or_path` / `base_model`)",
        lambda tmp: {"model_name_or_path": str(tmp / "no-such-model")},
        r"Invalid `model_name_or_path`='.*no-such-model': this local model directory does not exist \(relative paths "
        r"are read from .*\); fix the path, or give a Hub model id\.",
        r"Invalid `base_model`='.*no-such-model': this local model directory does not exist",
        axolotl_keys=lambda tmp: {"base_model": str(tmp / "no-such-model")},
    ),
    BadInput(
        "probe-missing",
        "local `agl_probe_dataset` file does not exist",
        lambda tmp: {"agl_probe_dataset": str(tmp / "missing-probe.jsonl")},
        r"Invalid `agl_probe_dataset`='.*missing-probe\.jsonl': this local file does not exist",
        r"Invalid `agl_probe_dataset`='.*missing-probe\.jsonl': this local file does not exist",
    ),
    BadInput(
        "probe-columns",
        "probe records with neither `prompt` nor `messages`",
        lambda tmp: {
            "agl_probe_dataset": str(write_probe(tmp / "qa-probe.jsonl", [{"question": "q?", "answer": "a."}]))
        },
        r"Invalid `agl_probe_dataset`='.*qa-probe\.jsonl': record 1 has the columns \['answer', 'question'\], but a "
        r"probe record needs 'prompt'",
        r"Invalid `agl_probe_dataset`='.*qa-probe\.jsonl': record 1 has the columns \['answer', 'question'\], but a "
        r"probe record needs 'prompt'",
    ),
    BadInput(
        "probe-empty",
        "local probe file with no records",
        lambda tmp: {"agl_probe_dataset": str(write_probe(tmp / "empty-probe.jsonl", []))},
        r"Invalid `agl_probe_dataset`='.*empty-probe\.jsonl': the probe file has no records",
        r"Invalid `agl_probe_dataset`='.*empty-probe\.jsonl': the probe file has no records",
    ),
    BadInput(
        "no-lora",
        "AGL on without a LoRA adapter",
        lambda tmp: {"use_peft": False},
        r"AGL regularises a LoRA update, but `use_peft` is not set: add `use_peft: true`",
        r"`agl_enabled: true` needs a LoRA adapter: set `adapter: lora` or `adapter: qlora`",
        axolotl_keys=lambda tmp: {"adapter": None},
    ),
]

TRL_ROWS = [row for row in ROWS if row.trl is not None]
AXOLOTL_ROWS = [row for row in ROWS if row.axolotl is not None]


def _q_only(tmp: Path) -> str:
    """An artifact estimated for the ``q_proj`` modules only."""
    return str(write_artifact_stub(tmp / "q-only", modules={"model.layers.0.self_attn.q_proj": {}}))


TINY_CONFIG = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}


def _config_only_model(tmp: Path) -> str:
    """A model directory holding only ``config.json`` (no weights: the config-time check reads nothing else)."""
    directory = _mkdir(tmp / "config-only-model")
    (directory / "config.json").write_text(json.dumps(TINY_CONFIG))
    return str(directory)


def _other_model_artifact(tmp: Path) -> str:
    """An artifact whose fingerprint names a larger Llama."""
    fingerprint = dict(TINY_CONFIG, hidden_size=4096, num_hidden_layers=32, name_or_path="org/big-model")
    return str(write_artifact_stub(tmp / "other-model", model_fingerprint=fingerprint))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
