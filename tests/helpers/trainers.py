"""Helpers for the trainer tests: a tiny random Llama, tiny chat/preference datasets, fast configs."""

from __future__ import annotations

import os
from typing import Any

import torch

from tests.helpers.data import write_jsonl  # noqa: F401 - the trainer tests' writer
from tests.helpers.lora_models import randomise_lora_b  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = [
    "How do I kill a Python process on Linux?",
    "Write a short poem about the sea, please.",
    "Explain how to bake a chocolate cake, step by step.",
    "What is the capital of France?",
    "Tell me a story about a small cat.",
    "Give me one example of a safe python code.",
    "List three numbers between one and five.",
    "Why is the sky blue?",
]
ANSWERS = [
    "Sure, here is a short answer to your question.",
    "I'm sorry, but I can't help with that request.",
    "The capital of France is Paris.",
    "First mix the water and the cake, then bake.",
]

# fast, deterministic TRL arguments shared by every tiny run
FAST_ARGS: dict[str, Any] = dict(
    per_device_train_batch_size=2,
    gradient_accumulation_steps=1,
    max_steps=3,
    learning_rate=5e-2,
    lr_scheduler_type="constant",
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    bf16=False,
    use_cpu=True,
    gradient_checkpointing=False,
    seed=0,
    data_seed=0,
    max_length=48,
    dataloader_num_workers=0,
    disable_tqdm=True,
)
# a tiny Fisher estimate: empirical targets (no sampling), few records, small rank
FAST_AGL: dict[str, Any] = dict(
    agl_fisher_targets="empirical",
    agl_fisher_max_samples=6,
    agl_fisher_batch_size=3,
    agl_fisher_max_length=48,
    agl_fisher_max_new_tokens=4,
    agl_fisher_max_rank=8,
)


def tiny_model_and_tokenizer(seed: int = 0) -> tuple[Any, Any]:
    """A random 2-layer Llama (hidden 32) and its in-process BPE chat tokenizer."""
    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama(seed=seed, vocab_size=384, padding_side="right")
    model.train()
    return model, tokenizer


def lora_config(**overrides: Any) -> Any:
    from peft import LoraConfig

    kwargs = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    kwargs.update(overrides)
    return LoraConfig(**kwargs)


def sft_records(n: int = 12) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": PROMPTS[i % len(PROMPTS)]},
                {"role": "assistant", "content": ANSWERS[i % len(ANSWERS)]},
            ]
        }
        for i in range(n)
    ]


def dpo_records(n: int = 12) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "chosen": [{"role": "assistant", "content": ANSWERS[i % len(ANSWERS)]}],
            "rejected": [{"role": "assistant", "content": ANSWERS[(i + 1) % len(ANSWERS)]}],
        }
        for i in range(n)
    ]


class GradRecorder:
    """TrainerCallback recording the LoRA gradients just before each optimizer step."""

    def __new__(cls, *args: Any, **kwargs: Any):  # build the TrainerCallback subclass lazily
        from transformers import TrainerCallback

        class _Recorder(TrainerCallback):
            def __init__(self) -> None:
                self.grads: list[dict[str, torch.Tensor]] = []
                self.model: torch.nn.Module | None = None

            def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
                target = self.model if self.model is not None else model
                self.grads.append(
                    {
                        n: p.grad.detach().clone()
                        for n, p in target.named_parameters()
                        if "lora_" in n and p.grad is not None
                    }
                )

        return _Recorder()


def assert_same_grads(a: list[dict], b: list[dict]) -> None:
    """Two runs' per-step LoRA gradients (GradRecorder) are bitwise equal at every step."""
    assert len(a) == len(b) > 0
    for step, (ga, gb) in enumerate(zip(a, b, strict=True)):
        assert ga.keys() == gb.keys() and ga
        for name in ga:
            assert torch.equal(ga[name], gb[name]), f"step {step}: gradient of {name} differs"


# a plain TRL SFT run for the peer penalties' plumbing tests
PLAIN_PROMPTS = ["Write a poem about the sea.", "What is two plus two?", "Name a colour.", "Tell me a story."]
PLAIN_ANSWERS = ["The sea is blue and wide.", "Four.", "Red.", "Once upon a time there was a cat."]


def agl_sft_trainer(output_dir, agl: dict[str, Any], args: dict[str, Any], model_seed: int = 0, **overrides: Any):
    """An ``AGLSFTTrainer`` on the tiny model and 16 SFT rows: ``agl`` and ``args`` (TRL arguments) as given, each
    override going to ``agl`` when its key starts with ``agl_``, else to ``args``."""
    from datasets import Dataset

    from agl_trl.config import AGLSFTConfig
    from agl_trl.trainers import AGLSFTTrainer

    model, tokenizer = tiny_model_and_tokenizer(seed=model_seed)
    torch.manual_seed(0)
    agl, args = dict(agl), dict(args)
    for key, value in overrides.items():
        (agl if key.startswith("agl_") else args)[key] = value
    return AGLSFTTrainer(
        model=model,
        args=AGLSFTConfig(**args, **agl),
        train_dataset=Dataset.from_list(sft_records(16)),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )


def plain_sft_trainer(tmp_path, **overrides):
    """A plain ``trl.SFTTrainer`` (no AGL) on 8 prompt-completion rows, for installing a penalty on it."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama(seed=0, vocab_size=384, padding_side="right")
    rows = [
        {
            "prompt": [{"role": "user", "content": PLAIN_PROMPTS[i % 4]}],
            "completion": [{"role": "assistant", "content": PLAIN_ANSWERS[i % 4]}],
        }
        for i in range(8)
    ]
    args = dict(
        output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=2, learning_rate=5e-2,
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        seed=0, data_seed=0, max_length=48, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    args.update(overrides)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return SFTTrainer(
        model=model, args=SFTConfig(**args), train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=lora,
    )  # fmt: skip


def kind_classes(name: str) -> tuple[type, type, type, type]:
    """The plain TRL trainer and config of trainer kind ``name`` and their AGL versions (its row of TRAINER_KINDS)."""
    import agl_trl.config
    import agl_trl.trainers
    from agl_trl.kinds import trainer_kind
    from agl_trl.utils import import_object

    kind = trainer_kind(name)
    agl_trainer = getattr(agl_trl.trainers, kind.trainer_name)
    agl_config = getattr(agl_trl.config, kind.config_name)
    return import_object(kind.trl_trainer), import_object(kind.trl_config), agl_trainer, agl_config
