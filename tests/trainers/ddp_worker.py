"""Run by test_trainer_ddp.py under torch.distributed.run (2 CPU processes, gloo): train, then dump per-rank state."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
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


def main(out: Path, probe: str) -> None:
    model, tokenizer = tiny_model_and_tokenizer()
    torch.manual_seed(0)
    args = dict(FAST_ARGS, max_steps=2, gradient_accumulation_steps=2, output_dir=str(out / "run"))
    anchor = dict(agl_kl_anchor_every=1, agl_kl_sequences=2, agl_kl_batch_size=2)  # a KL anchor step at step 2
    config = AGLSFTConfig(
        **args, **FAST_AGL, **anchor, agl_probe_dataset=probe, agl_lambda_align=20.0, agl_lambda_task=20.0
    )
    trainer = AGLSFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(sft_records(16)),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    randomise_lora_b(trainer.model)
    trainer.train()
    rank = trainer.args.process_index
    model = trainer.model
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    reg, metrics = trainer.agl_regularizer(model, step=int(trainer.state.global_step))
    grads = torch.autograd.grad(reg, list(params.values()))
    torch.save(
        {
            "world_size": trainer.args.world_size,
            "params": {n: p.detach().clone() for n, p in params.items()},
            "reg_grads": dict(zip(params, grads, strict=True)),
            "metrics": metrics,
            "fisher": {n: m.tensors() for n, m in trainer._agl.artifact.modules.items()},
            "fisher_world_size": trainer._agl.artifact.metadata.get("world_size"),
            "log_history": trainer.state.log_history,
        },
        out / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
