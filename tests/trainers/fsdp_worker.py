"""Run by test_fsdp.py under torch.distributed.run (2 CPU processes, gloo): AGL under FSDP2 (``fully_shard``).

``core OUT``: a tiny LoRA Llama sharded by hand (``fully_shard`` per decoder layer + root). Before sharding each rank
computes the single-process reference on the same weights (Fisher, regulariser value, metrics and gradient, the
task + regulariser gradient of a batch split over the ranks, KL meter readings); after sharding it computes the same
under FSDP2 and saves both.

``train OUT PROBE``: an AGL SFT run through TRL / accelerate's FSDP2 plugin (``fsdp_version: 2``), saved at step 2,
then resumed from ``checkpoint-2`` in a second trainer. Accelerate refuses FSDP on a CPU-only machine (its device
check lists accelerators only, the FSDP2 code path itself runs on gloo), so :func:`allow_fsdp_on_cpu` makes
``AcceleratorState`` keep the FSDP plugin there: everything after that is accelerate's own FSDP2 path.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch

from agl_trl.fisher import FisherSettings, estimate_fisher
from agl_trl.fisher.probe import build_sequences
from agl_trl.regularizers import AGLRegularizer
from agl_trl.settings import AGLSettings
from agl_trl.teacher_forcing import collate, probe_kl, reference_log_probs
from tests.helpers.distributed import allow_fsdp_on_cpu, penalty_and_gradients, step_gradients

# every term active (fixed lambda: no meter needed), E_riem on a sub-block smaller than the matrices
SETTINGS = dict(lambda_align=3.0, lambda_task=2.0, lambda_collision=1.0, riem_block=8, kl_every=0)
RECORDS = [
    {"prompt": "How do I kill a Python process on Linux?", "response": "Use kill with the process id."},
    {"prompt": "Write a short poem about the sea, please."},  # no response: generated under FSDP2
    {"prompt": "What is the capital of France?", "response": "The capital of France is Paris."},
]  # 3 sequences over 2 ranks: uneven shards (rank 0 runs 2 batches of 1, rank 1 one batch and an idle pass)


def _model():
    from peft import get_peft_model

    from tests.helpers.trainers import lora_config, randomise_lora_b, tiny_model_and_tokenizer

    model, tokenizer = tiny_model_and_tokenizer()
    torch.manual_seed(0)  # lora_A's initialisation: the same on every rank and in the reference
    model = get_peft_model(model, lora_config(r=3))  # rank 3: lora_A's shards are uneven (2 + 1 rows)
    randomise_lora_b(model)
    return model, tokenizer


def _batches(tokenizer) -> list[dict[str, torch.Tensor]]:
    texts = ["the sea is blue and deep", "a small cat sat on the mat today"]
    batches = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"][:12]])
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return batches


def _lora_params(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def _measure(model, tokenizer, artifact, meter_batch) -> dict:
    """Regulariser value, metrics and gradients; the task + regulariser gradient of the ranks' batches; the meter."""
    reg = AGLRegularizer(artifact, AGLSettings(**SETTINGS), seed=3)
    reg(model, step=0)  # a first step: tau gets its first quantile, used from step 1 on
    params = _lora_params(model)
    out = penalty_and_gradients(reg, model, params, step=1)
    out["raw_kl"] = reg.raw_kl_estimate(model)
    model.train()
    out["step_grads"] = step_gradients(reg, model, params, _batches(tokenizer), step=1)
    model.eval()
    reference = reference_log_probs(model, meter_batch)
    out["meter"] = {"reference": reference, "kl": probe_kl(model, meter_batch, reference)}
    return out


def core(out: Path) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    settings = FisherSettings(batch_size=1, max_rank=8, targets="empirical", max_new_tokens=4, max_length=48)
    results: dict = {}
    model, tokenizer = _model()
    single = estimate_fisher(model, tokenizer, RECORDS, settings, False)  # before the process group: world 1
    with torch.no_grad():
        sequences = build_sequences(tokenizer, [dict(RECORDS[0]), dict(RECORDS[2])], 48)
    meter_batch = collate(sequences, tokenizer.pad_token_id, torch.device("cpu"))
    results["single"] = {"fisher": {n: m.tensors() for n, m in single.modules.items()}}
    results["single"].update(_measure(model, tokenizer, single, meter_batch))

    dist.init_process_group("gloo", timeout=timedelta(seconds=90))
    try:
        model, tokenizer = _model()  # the same weights, now sharded
        for layer in model.base_model.model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        sharded = estimate_fisher(model, tokenizer, RECORDS, settings, False)
        results["fsdp"] = {
            "fisher": {n: m.tensors() for n, m in sharded.modules.items()},
            "fisher_world_size": sharded.metadata["world_size"],
            "fisher_tokens": sharded.metadata["tokens"],
            "single_tokens": single.metadata["tokens"],
            "fingerprint_equal": sharded.metadata["model_fingerprint"] == single.metadata["model_fingerprint"],
            "dtensor": type(next(iter(_lora_params(model).values()))).__name__,
        }
        single.verify(model)  # the fingerprint reads the sharded embedding
        results["fsdp"].update(_measure(model, tokenizer, single, meter_batch))
    finally:
        dist.destroy_process_group()
    torch.save(results, out / f"rank{int(os.environ['RANK'])}.pt")


def train(out: Path, probe: str) -> None:
    from datasets import Dataset

    from agl_trl.config import AGLSFTConfig
    from agl_trl.trainers import AGLSFTTrainer
    from tests.helpers.trainers import (
        FAST_AGL,
        FAST_ARGS,
        lora_config,
        randomise_lora_b,
        sft_records,
        tiny_model_and_tokenizer,
    )

    allow_fsdp_on_cpu()
    fsdp = dict(fsdp=True, fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]})
    agl = dict(FAST_AGL, agl_probe_dataset=probe, agl_kl_every=2, agl_kl_sequences=4, agl_kl_batch_size=2)
    agl["agl_kl_anchor_every"] = 2  # a KL anchor step (global step 2, i.e. the 3rd step) on the sharded model
    records: dict = {}

    def trainer(max_steps: int):
        model, tokenizer = tiny_model_and_tokenizer()
        torch.manual_seed(0)
        args = dict(FAST_ARGS, max_steps=max_steps, save_strategy="steps", save_steps=2, output_dir=str(out / "run"))
        config = AGLSFTConfig(**args, **fsdp, **agl, agl_lambda_task=1.0)
        built = AGLSFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(sft_records(16)),
            processing_class=tokenizer,
            peft_config=lora_config(),
        )
        randomise_lora_b(built.model)
        return built

    first = trainer(4)
    records["fsdp_enabled"] = bool(first.is_fsdp_enabled)
    records["fsdp_version"] = int(first.accelerator.state.fsdp_plugin.fsdp_version)
    first.train()
    records["param_type"] = type(next(p for n, p in first.model.named_parameters() if "lora_B" in n)).__name__
    records["first"] = [e for e in first.state.log_history if "loss" in e]
    records["fisher_source"] = first._agl.fisher_source
    second = trainer(4)
    second.train(resume_from_checkpoint=str(out / "run" / "checkpoint-2"))
    records["second"] = [e for e in second.state.log_history if "loss" in e]
    records["restored_from"] = second._agl.restored_from
    records["second_fisher_source"] = second._agl.fisher_source
    if second.is_world_process_zero():
        (out / "train.json").write_text(json.dumps(records, default=str))


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, target = sys.argv[1], Path(sys.argv[2])
    core(target) if mode == "core" else train(target, sys.argv[3])
