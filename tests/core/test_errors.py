"""docs/errors.md, TRL side: every bad input stops ``agl-trl`` before any model loads, with one line and status 2.

No model is loaded: every row fails while the config is parsed and validated (``model_name_or_path`` is a Hub id that
is not in the local cache, so nothing is read for it before the model would load).
The rows live in ``tests/helpers/bad_inputs.py`` (shared with tests/axolotl/test_errors.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agl_trl import cli
from agl_trl.settings import SETTING_KEYS, AGLUserError, check_known_keys, unknown_key_message
from tests.helpers.bad_inputs import ROWS, TRL_ROWS, BadInput, write_artifact_stub, write_probe

REPO = Path(__file__).resolve().parents[2]
ERRORS_DOC = REPO / "docs" / "errors.md"
AGL_TRL = Path(sys.executable).parent / "agl-trl"
BASE = {  # a config that would train if the model and data existed (nothing is loaded before the errors)
    "model_name_or_path": "example-org/no-such-model",  # a Hub id not in the local cache: nothing reads it early
    "dataset_name": "./no-data-here.jsonl",
    "output_dir": "./out",
    "use_peft": True,
    "use_cpu": True,
    "report_to": "none",
    "agl_probe_dataset": "driftcaps",
}
TRL_CONFIG_BASE = dict(output_dir="unused", report_to="none", bf16=False, use_cpu=True)


def write_config(tmp_path: Path, **keys: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**BASE, **keys}, sort_keys=False))
    return path


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("agl-trl: error:")]


def run_cli(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """``agl-trl <argv>`` in this process: exit status 2 and exactly one error line, which is returned."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert "usage:" not in err, err
    return lines[0]


def run_console(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    env.pop("AGL_TRL_TRACEBACK", None)
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


# ---------------------------------------------------------------------------------------------------------------------
# The table: every row through `agl-trl sft --config`, and the doc lists every row
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", TRL_ROWS, ids=[row.id for row in TRL_ROWS])
def test_every_row_is_one_line_at_config_time(row: BadInput, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = run_cli(capsys, ["sft", "--config", str(write_config(tmp_path, **row.keys_for("trl", tmp_path)))])
    assert re.search(row.trl, line), line


def test_every_row_is_in_docs_errors_md() -> None:
    doc = ERRORS_DOC.read_text(encoding="utf-8")
    for row in ROWS:
        assert row.text in doc, f"docs/errors.md has no row for {row.text!r}"


# ---------------------------------------------------------------------------------------------------------------------
# Unknown keys: one list of keys, closest suggestion, the command line as well as the YAML
# ---------------------------------------------------------------------------------------------------------------------


def test_unknown_key_message_suggests_the_closest_key() -> None:
    assert unknown_key_message("agl_lamda_align") == "unknown key agl_lamda_align: did you mean agl_lambda_align?"
    assert "did you mean agl_fisher_max_rank?" in unknown_key_message("agl_fisher_maxrank")
    assert "no AGL setting has this name" in unknown_key_message("agl_zzzzzzzzzzzzzzzzzz")
    check_known_keys(["agl_lambda_align", "learning_rate", "lora_r", *SETTING_KEYS])  # only agl_* keys are checked
    with pytest.raises(AGLUserError, match="did you mean agl_mu"):
        check_known_keys(["learning_rate", "agl_muu"])


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--agl_lamda_align", "100"], r"unknown key agl_lamda_align: did you mean agl_lambda_align\?"),
        (["--agl_lamda_align=100"], r"unknown key agl_lamda_align: did you mean agl_lambda_align\?"),
        (["--agl_enabled", "maybe"], r"argument --agl_enabled.*Truthy value expected: got maybe"),
        (["--agl_fisher_max_rank", "8.5"], r"argument --agl_fisher_max_rank.*invalid int value: '8\.5'"),
        (["--agl_gate", "medium"], r"argument --agl_gate.*invalid choice: 'medium'"),
        (["--agl_mu", "2"], r"Invalid `agl_mu`=2\.0: must lie in \[0, 1\]"),
    ],
    ids=["typo", "typo-equals", "bool", "int", "choice", "range"],
)
def test_command_line_flags(argv: list[str], pattern: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = run_cli(capsys, ["sft", "--config", str(write_config(tmp_path)), *argv])
    assert re.search(pattern, line), line


def test_unknown_key_is_refused_before_accelerate_is_launched(tmp_path: Path, capsys, monkeypatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(cli, "launch_with_accelerate", lambda *a: calls.append(a))
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, num_processes=2, agl_lambda_kl=0.5)
    line = run_cli(capsys, ["dpo", "--config", str(config)])
    assert "unknown key agl_lambda_kl" in line and not calls


def test_fisher_command_checks_unknown_keys_too(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = run_cli(capsys, ["fisher", "--config", str(write_config(tmp_path)), "--agl_lamda_align", "1"])
    assert "did you mean agl_lambda_align?" in line


def test_missing_config_file(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = run_cli(capsys, ["sft", "--config", "no-such-config.yaml"])
    assert "cannot read the config file" in line and "no-such-config.yaml" in line


def test_bf16_on_a_cpu_machine_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("TRL's bf16 check fires on machines without a GPU")
    monkeypatch.chdir(tmp_path)
    config = {k: v for k, v in BASE.items() if k != "use_cpu"} | {"bf16": True}
    path = tmp_path / "bf16.yaml"
    path.write_text(yaml.safe_dump(config))
    assert "bf16" in run_cli(capsys, ["sft", "--config", str(path)])


def test_unexpected_errors_keep_their_traceback(tmp_path: Path, monkeypatch) -> None:
    import agl_trl.scripts.train as train

    def boom(*args: Any) -> None:
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(train, "main", boom)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["sft", "--config", str(write_config(tmp_path))])


def test_artifact_errors_at_train_start_are_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    """The artifact's fit to the model is checked once the model exists; that error is a user error too."""
    import agl_trl.scripts.train as train
    from agl_trl.fisher import FisherArtifactError

    def refuse(*args: Any) -> None:
        raise FisherArtifactError("This Fisher artifact was estimated on another model ('x'). Fix: estimate one.")

    monkeypatch.setattr(train, "main", refuse)
    monkeypatch.chdir(tmp_path)
    line = run_cli(capsys, ["sft", "--config", str(write_config(tmp_path))])
    assert line == "agl-trl: error: This Fisher artifact was estimated on another model ('x'). Fix: estimate one."


def test_traceback_on_request(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AGL_TRL_TRACEBACK", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AGLUserError, match="did you mean agl_lambda_align"):
        cli.main(["sft", "--config", str(write_config(tmp_path, agl_lamda_align=1.0))])


# ---------------------------------------------------------------------------------------------------------------------
# The same checks in the Python API (the trainer configs' __post_init__), and as real processes
# ---------------------------------------------------------------------------------------------------------------------

# the rows a trainer config checks by itself (the LoRA targets and the model are ModelConfig's: checked by the
# command line)
MODEL_CONFIG_ROWS = ("fisher-lora-targets", "fisher-other-model")
FILE_ROWS = [row for row in ROWS if row.id.startswith(("fisher-", "probe-")) and row.id not in MODEL_CONFIG_ROWS]


@pytest.mark.parametrize("row", FILE_ROWS, ids=[row.id for row in FILE_ROWS])
def test_trainer_configs_check_the_files_at_construction(row: BadInput, tmp_path: Path) -> None:
    from agl_trl.config import AGLDPOConfig, AGLSFTConfig

    keys = row.keys(tmp_path)
    for config_cls in (AGLSFTConfig, AGLDPOConfig):
        with pytest.raises(AGLUserError) as info:
            config_cls(**TRL_CONFIG_BASE, **keys)
        assert re.search(row.trl, str(info.value)), str(info.value)
    if row.id != "probe-missing":  # a missing local probe file is a value rule, checked with AGL off too
        AGLSFTConfig(**TRL_CONFIG_BASE, **keys, agl_enabled=False)  # file contents are read only with AGL on


def test_good_files_pass_and_the_probe_is_not_read_when_an_artifact_is_given(tmp_path: Path) -> None:
    from agl_trl.config import AGLSFTConfig

    artifact = write_artifact_stub(tmp_path / "artifact")
    probe = write_probe(tmp_path / "probe.jsonl", [{"prompt": "hi", "response": "hello"}, {"messages": []}])
    chats = write_probe(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    bad_probe = write_probe(tmp_path / "qa.jsonl", [{"question": "q"}])
    assert AGLSFTConfig(**TRL_CONFIG_BASE, agl_fisher_path=str(artifact)).agl_fisher_path == str(artifact)
    assert AGLSFTConfig(**TRL_CONFIG_BASE, agl_probe_dataset=str(probe)).agl_probe_dataset == str(probe)
    assert AGLSFTConfig(**TRL_CONFIG_BASE, agl_probe_dataset=str(chats)).agl_probe_dataset == str(chats)
    AGLSFTConfig(**TRL_CONFIG_BASE, agl_fisher_path=str(artifact), agl_probe_dataset=str(bad_probe))


def test_json_probe_files_are_checked_too(tmp_path: Path) -> None:
    from agl_trl.preflight import check_probe_file

    path = tmp_path / "probe.json"
    path.write_text('{"records": [{"prompt": "hi"}, {"text": "no prompt"}]}')
    with pytest.raises(AGLUserError, match=r"record 2 has the columns \['text'\]"):
        check_probe_file(str(path))
    path.write_text("[{")
    with pytest.raises(AGLUserError, match="cannot read the probe file: the file is not valid JSON"):
        check_probe_file(str(path))


def test_console_script_typo_on_the_command_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proc = run_console([str(AGL_TRL), "sft", "--config", str(config), "--agl_lambda_kl", "0.5"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == ["agl-trl: error: " + unknown_key_message("agl_lambda_kl")], proc.stderr


def test_module_entry_bad_integer_in_yaml(tmp_path: Path) -> None:
    config = write_config(tmp_path, agl_fisher_max_rank=8.5)
    proc = run_console([sys.executable, "-m", "agl_trl.cli", "sft", "--config", str(config)], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == ["agl-trl: error: Invalid `agl_fisher_max_rank`=8.5: expected an integer."]


def test_script_entry_stock_trl_config_without_peft(tmp_path: Path) -> None:
    """``python -m agl_trl.scripts.train sft`` (what ``accelerate launch`` runs) reports user errors the same way."""
    config = write_config(tmp_path, use_peft=False)
    proc = run_console([sys.executable, "-m", "agl_trl.scripts.train", "sft", "--config", str(config)], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = error_lines(proc.stderr)
    assert "add `use_peft: true`" in line


# ---------------------------------------------------------------------------------------------------------------------
# Errors inside AGL's own steps that something else caused: the cause and the fix (agl_trl.diagnostics)
# ---------------------------------------------------------------------------------------------------------------------


def _peft_tiny(target_modules: Any = "all-linear") -> tuple[Any, Any]:
    from peft import LoraConfig, get_peft_model

    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama()
    return get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=target_modules)), tokenizer


def _cuda_only_mlp(model: Any) -> None:
    """Patch every MLP's forward the way a CUDA-only fused kernel fails on CPU (Axolotl's swiglu kernel does
    ``torch.empty(..., device="cuda")`` on a CPU build)."""

    def fused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Torch not compiled with CUDA enabled")

    for name, module in model.named_modules():
        if name.endswith("mlp"):
            module.forward = fused


@pytest.mark.parametrize("probe", ["generated", "given"], ids=["probe-generation", "fisher-estimate"])
def test_a_cuda_kernel_on_cpu_names_the_kernels_and_the_fix(probe: str) -> None:
    from agl_trl.fisher import resolve_artifact
    from agl_trl.settings import FisherSettings

    model, tokenizer = _peft_tiny()
    _cuda_only_mlp(model)
    records = [{"prompt": "Write a poem.", "response": None if probe == "generated" else "The sea."}] * 2
    settings = FisherSettings(max_samples=2, batch_size=2, max_new_tokens=2, max_rank=4)
    with pytest.raises(AGLUserError) as info:
        resolve_artifact(model, tokenizer, settings, probe=records, show_progress=False)
    step = "probe generation" if probe == "generated" else "Fisher estimate"
    message = str(info.value)
    assert message.startswith(f"AGL's {step} ran the model on the CPU and it failed with a CUDA error "), message
    assert "Torch not compiled with CUDA enabled" in message and "`lora_mlp_kernel`" in message, message
    assert "set them to false to train on the CPU" in message and "\n" not in message, message
    assert isinstance(info.value.__cause__, AssertionError)


def test_other_errors_inside_agls_steps_are_not_rewritten() -> None:
    from agl_trl.diagnostics import explained

    model, _ = _peft_tiny()
    with pytest.raises(RuntimeError, match="^a bug$"), explained("Fisher estimate", model):
        raise RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="CUDA out of memory"), explained("Fisher estimate", object()):
        raise RuntimeError("CUDA out of memory")  # not a model on the CPU: a real GPU error, left as it is


def test_chat_messages_without_a_chat_template_name_the_fix() -> None:
    from agl_trl.fisher import resolve_artifact
    from agl_trl.fisher.probe import _normalise
    from agl_trl.settings import FisherSettings

    model, tokenizer = _peft_tiny()
    tokenizer.chat_template = None
    records = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    with pytest.raises(AGLUserError) as info:
        resolve_artifact(model, tokenizer, FisherSettings(max_rank=4), probe=[_normalise(r) for r in records])
    message = str(info.value)
    assert "the tokenizer has no chat template, but this prompt is a list of chat messages" in message, message
    assert "`chat_template: chatml`" in message and "plain `prompt` string" in message, message


@pytest.mark.parametrize("case", ["no-adapter", "embedding-only", "merged"])
def test_a_model_without_lora_targets_says_why(case: str) -> None:
    from agl_trl.fisher import estimate_fisher
    from agl_trl.models import tiny_llama

    if case == "no-adapter":
        model, tokenizer = tiny_llama()
        expected = "the model has no LoRA layers: train with a LoRA adapter"
    elif case == "embedding-only":
        model, tokenizer = _peft_tiny(["embed_tokens"])
        expected = "this model's LoRA targets are not linear (embed_tokens: Embedding): add linear target modules"
    else:
        model, tokenizer = _peft_tiny()
        model.merge_adapter()
        expected = "the model's LoRA layers are merged into its weights"
    with pytest.raises(AGLUserError, match=re.escape(expected)):
        estimate_fisher(model, tokenizer, [{"prompt": "hi", "response": "hello"}])
