"""Precision that fits the hardware: no training config the package builds keeps TRL's bf16 default on a CPU
without fast bf16, an explicit bf16 there warns once, and the CPU flags decide."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from agl_trl import precision

SLOW_CPU = frozenset({"avx2", "fma"})  # an AVX2 EPYC: bf16 emulated
FAST_CPU = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"})


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):
    """Set the CPU flags the package sees (and forget any earlier one-time warning)."""

    def set_flags(flags: frozenset[str]) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        monkeypatch.setattr(precision, "_warned_slow_bf16", False)

    return set_flags


def test_cpu_flags_decide_fast_bf16(cpu) -> None:
    cpu(SLOW_CPU)
    assert precision.fast_bf16_cpu_flags() == [] and not precision.bf16_is_fast(on_cpu=True)
    cpu(FAST_CPU)
    assert precision.fast_bf16_cpu_flags() == ["avx512_bf16", "amx_bf16"] and precision.bf16_is_fast(on_cpu=True)


def test_cpu_flags_read_this_machine() -> None:
    flags = precision.cpu_flags()
    if Path("/proc/cpuinfo").is_file():
        assert flags, "/proc/cpuinfo exists but no flags were read"
    assert precision.bf16_is_fast(on_cpu=True) == any(f in flags for f in precision.FAST_BF16_CPU_FLAGS)


def test_resolve_bf16_table(cpu) -> None:
    cpu(SLOW_CPU)
    assert precision.resolve_bf16(None, on_cpu=True) is False
    assert precision.resolve_bf16(False, on_cpu=True) is False
    cpu(FAST_CPU)
    assert precision.resolve_bf16(None, on_cpu=True) is True
    assert precision.resolve_bf16(None, fp16=True, on_cpu=True) is False  # never both
    assert precision.resolve_bf16(False, on_cpu=True) is False  # the user's choice is kept


def test_explicit_bf16_on_a_slow_cpu_warns_once_with_the_fix(cpu) -> None:
    cpu(SLOW_CPU)
    with pytest.warns(UserWarning, match=r"100x slower.*bf16: false") as caught:
        assert precision.resolve_bf16(True, on_cpu=True) is True  # kept: the user asked for it
        precision.resolve_bf16(True, on_cpu=True)
    assert len([w for w in caught if "100x" in str(w.message)]) == 1
    cpu(FAST_CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.resolve_bf16(True, on_cpu=True)  # fast: no warning


def test_use_bf16_choices(cpu) -> None:
    cpu(SLOW_CPU)
    assert precision.use_bf16("auto", on_cpu=True) is False
    assert precision.use_bf16("bf16", on_cpu=True) is True and precision.use_bf16("fp32", on_cpu=True) is False
    with pytest.raises(ValueError, match=r"precision must be one of \['auto', 'fp32', 'bf16'\]"):
        precision.use_bf16("half")


CONFIG_NAMES = ("SFT", "DPO", "KTO", "GRPO", "RLOO", "ORPO", "CPO")  # every trainer kind the CLI and recipes use


@pytest.mark.parametrize("kind", CONFIG_NAMES)
def test_agl_configs_leave_bf16_off_on_a_slow_cpu(cpu, tmp_path: Path, kind: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("the CPU rule applies where no CUDA device is present")
    from agl_trl import config

    cls = getattr(config, f"AGL{kind}Config")
    cpu(SLOW_CPU)
    assert cls(output_dir=str(tmp_path), use_cpu=True).bf16 is False  # TRL alone says True
    cpu(FAST_CPU)
    assert cls(output_dir=str(tmp_path), use_cpu=True).bf16 is True


def test_trl_alone_would_leave_bf16_on(tmp_path: Path) -> None:
    """The reason for the rule: TRL's own config turns bf16 on for a CPU run (if this changes, the rule is moot)."""
    from trl import SFTConfig

    assert SFTConfig(output_dir=str(tmp_path), use_cpu=True).bf16 is True


def test_agl_config_warns_on_explicit_bf16_on_a_slow_cpu(cpu, tmp_path: Path) -> None:
    from agl_trl.config import AGLSFTConfig

    cpu(SLOW_CPU)
    with pytest.warns(UserWarning, match="100x slower"):
        args = AGLSFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=True)
    assert args.bf16 is True


def _bf16_of_each_build(cpu, monkeypatch: pytest.MonkeyPatch, trainer_cls: type, build) -> list[bool]:
    """``args.bf16`` of the config that ``build()`` hands to ``trainer_cls``, on a slow CPU, then on a fast one."""

    class Stop(Exception):
        pass

    seen: list[bool] = []

    def capture(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(kwargs["args"].bf16)
        raise Stop

    monkeypatch.setattr(trainer_cls, "__init__", capture)
    for flags in (SLOW_CPU, FAST_CPU):
        cpu(flags)
        with pytest.raises(Stop):
            build()
    return seen


def test_train_lora_config_is_fp32_on_a_slow_cpu(cpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The experiment harness (demo, peers, scaling sweep) builds its SFTConfig with bf16 off on a slow CPU."""
    import trl

    from agl_trl.experiments.config import LoraSettings
    from agl_trl.experiments.training import train_lora
    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama()
    rows = [{"prompt": "hi", "answer": "hello"}]
    lora = LoraSettings(r=2, alpha=4)
    run = lambda: train_lora(  # noqa: E731
        model, tokenizer, rows, tmp_path, lora=lora, seed=0, steps=1, learning_rate=1e-3, batch_size=1, progress=False
    )
    assert _bf16_of_each_build(cpu, monkeypatch, trl.SFTTrainer, run) == [False, True]


def test_train_grpo_config_is_fp32_on_a_slow_cpu(cpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trl

    from agl_trl.experiments.config import LoraSettings
    from agl_trl.experiments.online import train_grpo
    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama()
    run = lambda: train_grpo(  # noqa: E731
        model, tokenizer, [{"prompt": "1+1?", "answer": "2"}], tmp_path, lora=LoraSettings(r=2, alpha=4), seed=0,
        steps=1, learning_rate=1e-3, prompts_per_step=1, num_generations=2, max_completion_length=4, progress=False,
    )  # fmt: skip
    assert _bf16_of_each_build(cpu, monkeypatch, trl.GRPOTrainer, run) == [False, True]


def test_default_threads_is_every_core_of_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    assert precision.default_threads() == 3


def test_hardware_summary_names_precision_flags_and_threads(cpu) -> None:
    cpu(SLOW_CPU)
    summary = precision.hardware_summary(bf16=False, threads=2)
    assert summary["precision"] == "fp32" and summary["cpu_fast_bf16_flags"] == [] and summary["torch_threads"] == 2
    line = precision.describe(summary)
    assert "fp32" in line and "2 threads" in line and "fast-bf16 CPU flags: none" in line


def test_the_install_path_warns_for_a_trainer_built_elsewhere(cpu, tmp_path: Path) -> None:
    """Axolotl and users' scripts build their own TrainingArguments: attaching AGL to one that trains in bf16 on a
    slow CPU warns once (the config resolution never ran for it)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from agl_trl.models import tiny_llama
    from agl_trl.trainers import enable_agl

    model, tokenizer = tiny_llama()
    rows = Dataset.from_list([{"prompt": "hi", "completion": "hello"}])
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none", max_steps=1)
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    cpu(SLOW_CPU)
    with pytest.warns(UserWarning, match="100x slower"):
        enable_agl(trainer, {"agl_enabled": False})


def test_agl_config_without_use_cpu_on_a_cpu_machine_trains_in_fp32(cpu, tmp_path: Path) -> None:
    """transformers refuses bf16 on a CPU unless use_cpu is set: an unset bf16 there becomes fp32, not an error."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    from agl_trl.config import AGLSFTConfig

    cpu(FAST_CPU)
    assert AGLSFTConfig(output_dir=str(tmp_path)).bf16 is False
