"""Run by test_deepspeed.py: an AGL SFT run through TRL under a real DeepSpeed ZeRO-3 engine on CPU, and its
single-process references.

``zero3 OUT PROBE MODEL`` (and ``zero3-checkpointing``, the same with gradient checkpointing, which TRL makes reentrant
for PEFT under ZeRO-3): under ``torch.distributed.run --nproc_per_node 2`` with ``DS_ACCELERATOR=cpu`` (DeepSpeed's
CPU accelerator; its process group is gloo), 4 optimizer steps of AGL SFT on the tiny Llama saved at MODEL, with
``deepspeed=`` :data:`ZERO3` (stage 3, fp32, no offload, every parameter partitioned), checkpoints at steps 2 and 4.
A callback records, at each step's end (outside any forward), whether the LoRA factors are ZeRO-3 parameters
(``ds_shape``), their local size and status; a forward pre-hook registered after the engine's own records one LoRA
factor's size inside its forward. Rank 0 writes ``OUT/<mode>.json``.

``single OUT PROBE MODEL``: the same AGL run in one plain process, its batch the ZeRO-3 run's global batch (2 ranks x 2),
so each optimizer step sees the same sequences. ``plain``: that run without AGL (``agl_enabled=False``), to show the
regulariser's gradient changes the trained adapter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ZERO3 = {
    # threshold 0: every parameter is partitioned (by default ZeRO-3 keeps parameters under 1e5 elements, such as
    # these LoRA factors, whole on every rank)
    "zero_optimization": {
        "stage": 3,
        "stage3_param_persistence_threshold": 0,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "fp16": {"enabled": False},
    "bf16": {"enabled": False},
    "train_micro_batch_size_per_gpu": 2,
    "gradient_accumulation_steps": 1,
    "gradient_clipping": 1.0,
    "zero_allow_untested_optimizer": True,
    "steps_per_print": 1000,
}
# every term active, fixed lambda; the KL meter reads at steps 2 and 4
AGL = dict(
    agl_lambda_align=3.0,
    agl_lambda_task=1.0,
    agl_lambda_collision=0.1,
    agl_kl_every=2,
    agl_kl_sequences=4,
    agl_kl_batch_size=2,
)
MODES = ("zero3", "zero3-checkpointing", "single", "plain")


def _lora(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def _randomise_lora_b(model: torch.nn.Module) -> None:
    """tests.helpers.trainers.randomise_lora_b, gathering (and writing back) the factors if ZeRO-3 has partitioned them already."""
    from tests.helpers.trainers import randomise_lora_b

    partitioned = [p for p in _lora(model).values() if hasattr(p, "ds_shape")]
    if not partitioned:
        randomise_lora_b(model)
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0):
        randomise_lora_b(model)


def run(mode: str, out: Path, probe: str, model_dir: str) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    from agl_trl.config import AGLSFTConfig
    from agl_trl.trainers import AGLSFTTrainer
    from tests.helpers.trainers import FAST_AGL, FAST_ARGS, lora_config, sft_records

    zero3 = mode.startswith("zero3")
    seen: dict[str, list] = {"outside": [], "inside": []}

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            # registered after the engine's own hooks: it runs once ZeRO-3 has gathered the layer's weight
            def inside(module, inputs):
                if len(seen["inside"]) < 4:
                    seen["inside"].append([int(module.weight.numel()), list(getattr(module.weight, "ds_shape", []))])

            name = "layers.0.self_attn.q_proj.lora_A.default"
            next(m for n, m in trainer.model.named_modules() if n.endswith(name)).register_forward_pre_hook(inside)

        def on_step_end(self, args, state, control, **kwargs):
            params = _lora(trainer.model)
            seen["outside"].append(
                {
                    "step": int(state.global_step),
                    "count": len(params),
                    "ds_shape": all(hasattr(p, "ds_shape") for p in params.values()),
                    "local_numel": sum(p.numel() for p in params.values()),
                    "full_numel": sum(torch.Size(getattr(p, "ds_shape", p.shape)).numel() for p in params.values()),
                    "persistent": sum(bool(getattr(p, "ds_persist", False)) for p in params.values()),
                    "status": sorted({str(getattr(p, "ds_status", None)) for p in params.values()}),
                }
            )

    args = dict(
        FAST_ARGS,
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        output_dir=str(out / mode),
        per_device_train_batch_size=2 if zero3 else 4,
        gradient_checkpointing=mode == "zero3-checkpointing",
    )
    if zero3:
        args["deepspeed"] = ZERO3
    agl = dict(agl_enabled=False) if mode == "plain" else dict(FAST_AGL, **AGL, agl_probe_dataset=probe)
    config = AGLSFTConfig(**args, **agl)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)  # lora_A's initialisation: the same on every rank and in the single-process runs
    trainer = AGLSFTTrainer(
        model=model_dir,
        args=config,
        train_dataset=Dataset.from_list(sft_records(16)),
        processing_class=tokenizer,
        peft_config=lora_config(),
        callbacks=[Probe()],
    )
    _randomise_lora_b(trainer.model)
    records: dict = {"world_size": int(trainer.args.world_size)}
    trainer.train()
    plugin = trainer.accelerator.state.deepspeed_plugin
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    runtime = trainer._agl if mode != "plain" else None
    records.update(
        deepspeed=bool(getattr(trainer, "is_deepspeed_enabled", False)),
        zero_stage=getattr(plugin, "zero_stage", None),
        engine=type(trainer.model_wrapped).__name__,
        checkpointing=bool(getattr(unwrapped, "is_gradient_checkpointing", False)),
        checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        log=[e for e in trainer.state.log_history if "loss" in e],
        seen=seen,
        fisher_source=getattr(runtime, "fisher_source", None),
    )
    if trainer.is_world_process_zero():
        (out / f"{mode}.json").write_text(json.dumps(records, default=str, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] not in MODES:
        raise SystemExit(f"mode must be one of {MODES}")
    run(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
