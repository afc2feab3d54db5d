"""QLoRA (bitsandbytes 4-bit, runs on CPU) with the AGL SFT and DPO trainers: the regulariser terms are non-zero."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from tests.helpers.trainers import FAST_AGL, FAST_ARGS, dpo_records, lora_config, randomise_lora_b, sft_records

pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_qlora_logs_nonzero_agl_terms(kind, tmp_path, tiny_model_dir, probe_file):
    from transformers import AutoTokenizer, BitsAndBytesConfig

    from agl_trl.config import AGLDPOConfig, AGLSFTConfig
    from agl_trl.trainers import AGLDPOTrainer, AGLSFTTrainer

    config_cls, trainer_cls, records = {
        "sft": (AGLSFTConfig, AGLSFTTrainer, sft_records),
        "dpo": (AGLDPOConfig, AGLDPOTrainer, dpo_records),
    }[kind]
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    # gradient checkpointing on, as in the GPU recipes (the regulariser runs outside the checkpointed forward)
    args = dict(FAST_ARGS, max_steps=2, output_dir=str(tmp_path / kind), gradient_checkpointing=True)
    args["model_init_kwargs"] = {"dtype": "float32", "device_map": {"": "cpu"}}
    config = config_cls(**args, **FAST_AGL, agl_probe_dataset=str(probe_file), agl_lambda_collision=0.1)
    trainer = trainer_cls(
        model=str(tiny_model_dir),
        args=config,
        train_dataset=Dataset.from_list(records()),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=lora_config(),
        quantization_config=quantization,
    )
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules()), "model is not 4-bit"
    randomise_lora_b(trainer.model)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 2
    for entry in logs:
        for term in ("loss", "r_align", "r_task", "e_riem", "e_geo", "kl_estimate"):
            value = entry[f"agl/{term}"]
            assert value > 0 and value == value, f"agl/{term} = {value}"
    assert (tmp_path / kind / "agl_fisher" / "fisher.json").is_file()
