"""KTO/ORPO/CPO trainers, logging, artifacts given by path, and the errors users hit first."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset

import agl_trl.config as config_module
import agl_trl.trainers as trainers_module
from agl_trl.config import AGLSFTConfig
from agl_trl.fisher import FisherArtifactError, estimate_fisher
from agl_trl.lora import no_lora_message
from agl_trl.settings import AGLTrainingSettings, AGLUserError
from agl_trl.trainers import AGLSFTTrainer, check_parallelism, enable_agl
from tests.helpers.trainers import (
    ANSWERS,
    FAST_AGL,
    FAST_ARGS,
    PROMPTS,
    lora_config,
    randomise_lora_b,
    sft_records,
    tiny_model_and_tokenizer,
)


def kto_records(n: int = 12):
    return [
        {"prompt": PROMPTS[i % len(PROMPTS)], "completion": ANSWERS[i % len(ANSWERS)], "label": i % 2 == 0}
        for i in range(n)
    ]


def plain_pref_records(n: int = 12):
    return [
        {"prompt": PROMPTS[i % len(PROMPTS)], "chosen": ANSWERS[i % 4], "rejected": ANSWERS[(i + 1) % 4]}
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("kind", "records"),
    [("KTO", kto_records), ("ORPO", plain_pref_records), ("CPO", plain_pref_records)],
)
def test_other_trainers_log_agl_terms(kind, records, tmp_path, probe_file):
    config_cls = getattr(config_module, f"AGL{kind}Config")
    trainer_cls = getattr(trainers_module, f"AGL{kind}Trainer")
    model, tokenizer = tiny_model_and_tokenizer()
    extra = {}
    if kind == "KTO":
        extra["per_device_train_batch_size"] = 4  # KTO needs several examples per batch for its KL term
    args = dict(FAST_ARGS, max_steps=2, output_dir=str(tmp_path / kind), **extra)
    config = config_cls(**args, **FAST_AGL, agl_probe_dataset=str(probe_file))
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(records()),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    randomise_lora_b(trainer.model)
    trainer.train()
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(train_logs) == 2
    for entry in train_logs:
        assert entry["agl/loss"] > 0
        assert entry["agl/r_align"] > 0


def test_eval_logs_do_not_take_train_metrics(tmp_path, probe_file):
    model, tokenizer = tiny_model_and_tokenizer()
    args = dict(FAST_ARGS, max_steps=2, eval_strategy="steps", eval_steps=1, output_dir=str(tmp_path / "e"))
    config = AGLSFTConfig(**args, **FAST_AGL, agl_probe_dataset=str(probe_file))
    data = Dataset.from_list(sft_records(8))
    trainer = AGLSFTTrainer(
        model=model,
        args=config,
        train_dataset=data,
        eval_dataset=data.select(range(2)),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    randomise_lora_b(trainer.model)
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    trains = [e for e in trainer.state.log_history if "loss" in e]
    assert evals and trains
    assert all("agl/loss" in e for e in trains)
    assert not any(k.startswith(("agl/", "eval_agl/")) for e in evals for k in e)


def test_no_lora_layers_is_a_clear_error(tmp_path, probe_file):
    model, tokenizer = tiny_model_and_tokenizer()
    config = AGLSFTConfig(**FAST_ARGS, output_dir=str(tmp_path / "x"), agl_probe_dataset=str(probe_file))
    with pytest.raises(AGLUserError) as info:
        AGLSFTTrainer(
            model=model, args=config, train_dataset=Dataset.from_list(sft_records(4)), processing_class=tokenizer
        )
    assert str(info.value) == no_lora_message(model)
    assert "has no LoRA layers" in str(info.value) and "peft_config" in str(info.value)
    # fine once AGL is off
    off = AGLSFTConfig(**FAST_ARGS, output_dir=str(tmp_path / "y"), agl_enabled=False)
    AGLSFTTrainer(model=model, args=off, train_dataset=Dataset.from_list(sft_records(4)), processing_class=tokenizer)


def test_trainable_weights_outside_lora_are_named_in_a_warning(tmp_path, probe_file, caplog):
    """``modules_to_save`` trains a full copy of lm_head that the K-FAC penalty does not see: one warning names it;
    a plain LoRA set-up gives none."""
    config = AGLSFTConfig(**FAST_ARGS, **FAST_AGL, output_dir=str(tmp_path / "x"), agl_probe_dataset=str(probe_file))
    for modules_to_save, warned in ((["lm_head"], True), (None, False)):
        model, tokenizer = tiny_model_and_tokenizer()
        caplog.clear()
        with caplog.at_level("WARNING", logger="agl_trl.trainers.install"):
            AGLSFTTrainer(
                model=model, args=config, train_dataset=Dataset.from_list(sft_records(4)), processing_class=tokenizer,
                peft_config=lora_config(modules_to_save=modules_to_save),
            )  # fmt: skip
        assert ("outside the LoRA factors" in caplog.text) is warned, caplog.text
        if warned:
            assert "lm_head.modules_to_save" in caplog.text and "does not regularise them" in caplog.text


def test_fsdp1_and_fsdp2_offload_are_refused_fsdp2_and_zero3_accepted():
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

    def fsdp(version, offload=None):
        plugin = SimpleNamespace(fsdp_version=version, cpu_offload=offload)
        return SimpleNamespace(
            is_fsdp_enabled=True, accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin))
        )

    check_parallelism(SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=False))  # DDP: fine
    for stage in (2, 3):  # ZeRO-2 (replicated) and ZeRO-3 (gathered for the regulariser): fine
        zero = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage)))
        check_parallelism(SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=True, accelerator=zero))
    check_parallelism(fsdp(2, OffloadPolicy()))  # FSDP2: fine
    for one in (fsdp(1), SimpleNamespace(is_fsdp_enabled=True)):  # FSDP1 (also: no plugin version known)
        with pytest.raises(NotImplementedError, match="fsdp_version: 2"):
            check_parallelism(one)
    with pytest.raises(NotImplementedError, match="offload"):
        check_parallelism(fsdp(2, CPUOffloadPolicy()))


def _artifact_for(seed: int, tmp_path, probe_file, **model_kwargs):
    from peft import get_peft_model

    from agl_trl.fisher import load_probe_records
    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama(seed=seed, vocab_size=384, padding_side="right", **model_kwargs)
    peft_model = get_peft_model(model, lora_config())
    config = AGLSFTConfig(**FAST_ARGS, output_dir="o", **FAST_AGL)
    settings = AGLTrainingSettings.from_prefixed(config, none_is_default=False).fisher
    artifact = estimate_fisher(
        peft_model, tokenizer, load_probe_records(str(probe_file)), settings, show_progress=False
    )
    return artifact.save(tmp_path / f"artifact-{seed}")


def test_artifact_by_path_is_used_and_verified(tmp_path, probe_file):
    good = _artifact_for(0, tmp_path, probe_file)
    other = _artifact_for(7, tmp_path, probe_file, intermediate_size=48)  # another model

    def trainer_with(path, name):
        model, tokenizer = tiny_model_and_tokenizer()
        args = dict(FAST_ARGS, output_dir=str(tmp_path / name), max_steps=1)
        config = AGLSFTConfig(**args, agl_fisher_path=str(path))
        return AGLSFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(sft_records(4)),
            processing_class=tokenizer,
            peft_config=lora_config(),
        )

    trainer = trainer_with(good, "good")
    trainer.train()
    assert trainer._agl.fisher_source == "path"
    assert not (tmp_path / "good" / "agl_fisher").exists()  # nothing estimated
    with pytest.raises(FisherArtifactError, match="another model"):
        trainer_with(other, "bad").train()
    from agl_trl.settings import AGLUserError

    with pytest.raises(AGLUserError, match="does not exist"):  # caught at config time now, before any model loads
        trainer_with(tmp_path / "nowhere", "missing")


def test_enable_agl_patches_an_existing_trainer(tmp_path, probe_file):
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = tiny_model_and_tokenizer()
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**dict(FAST_ARGS, output_dir=str(tmp_path / "p"), max_steps=1)),
        train_dataset=Dataset.from_list(sft_records(4)),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    randomise_lora_b(trainer.model)
    cfg = {"agl_probe_dataset": str(probe_file), **FAST_AGL}
    enable_agl(trainer, cfg)
    assert type(trainer).__name__ == "AGLSFTTrainer" and isinstance(trainer, SFTTrainer)
    trainer.train()
    assert trainer.state.log_history[0]["agl/loss"] > 0
    assert torch.is_tensor(trainer.agl_regularizer(trainer.model, step=0)[0])
