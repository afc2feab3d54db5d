"""Tiny LoRA models for the core and baseline tests: random B (dW != 0), synthetic alignment matrices, the peer
penalties the sharded tests share, and gradient checks."""

from __future__ import annotations

import math

import torch

from agl_trl.baselines import AlignmentDirection, direction_from_delta
from agl_trl.lora import find_lora_modules

PROBE = [
    {"prompt": f"question number {i} about the sea", "response": f"answer {i}: the sea is blue and deep {i * 7}"}
    for i in range(12)
]


def make_lora_model(
    seed: int = 0, targets="all-linear", rank: int = 4, initializer_range: float = 0.2, zero_b: bool = False, **kwargs
):
    """A random tiny Llama with LoRA adapters on ``targets``; B randomised (dW != 0) unless ``zero_b``."""
    from peft import LoraConfig, get_peft_model

    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama(seed=seed, initializer_range=initializer_range, **kwargs)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0)
    model = get_peft_model(model, config)
    if not zero_b:
        randomise_lora_b(model, seed + 100)
    return model, tokenizer


def randomise_lora_b(model: torch.nn.Module, seed: int = 1, std: float = 0.05) -> None:
    """Give every lora_B a random value (PEFT initialises B = 0, where every penalty and its gradient is 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def lora_grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradient of ``loss`` w.r.t. every LoRA factor (zeros where it does not reach)."""
    params = {n: p for n, p in model.named_parameters() if "lora_" in n}
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g) for (n, p), g in zip(params.items(), grads, strict=True)}


def assert_nonzero_grads(model: torch.nn.Module, loss: torch.Tensor) -> None:
    """``loss`` has a finite, non-zero gradient on both lora_A and lora_B."""
    grads = lora_grads(model, loss)
    for kind in ("lora_A", "lora_B"):
        norms = [float(g.norm()) for n, g in grads.items() if kind in n]
        assert norms and all(math.isfinite(x) for x in norms)
        assert sum(norms) > 0, f"no gradient reaches {kind}"


def explicit_update(module) -> torch.Tensor:
    """dW = s B A formed explicitly (the tests' reference)."""
    B, A, s = module.factors()  # noqa: N806
    return (s * B @ A).detach()


def random_deltas(model: torch.nn.Module, rank: int = 3, seed: int = 7) -> dict[str, torch.Tensor]:
    """A random rank-``rank`` V per LoRA module of ``model``."""
    generator = torch.Generator().manual_seed(seed)
    deltas = {}
    for m in find_lora_modules(model):
        left = torch.randn(m.d_out, rank, generator=generator)
        right = torch.randn(rank, m.d_in, generator=generator)
        deltas[m.name] = 0.1 * left @ right
    return deltas


def directions_of(deltas: dict[str, torch.Tensor], rank: int = 8) -> dict[str, AlignmentDirection]:
    return {name: direction_from_delta(v, rank) for name, v in deltas.items()}


# the peer penalties on the LoRA factors, set up alike for the sharded tests (FSDP2 worker, simulated ZeRO-3)
SHARDED_PENALTIES = ("l2", "asft", "asft_paper", "lisa")


def sharded_lora_model():
    """A tiny LoRA Llama (r = 3: uneven FSDP2 shards) with random B: the same weights at every call."""
    torch.manual_seed(0)  # lora_A's initialisation
    return make_lora_model(rank=3)


def sharded_penalty(name: str, model: torch.nn.Module, directions: dict[str, AlignmentDirection]):
    """The penalty ``name`` of :data:`SHARDED_PENALTIES`, ready for a call at step 1 on ``model``. Lisa's proximal term
    is anchored (step 0) at half the factors, so that the term and its gradient are not 0."""
    from agl_trl.baselines import AsFTPenalty, L2UpdatePenalty, LisaPenalty

    if name == "lisa":
        penalty = LisaPenalty([], rho=0.7, align_steps=0, task_steps=3)
        with torch.no_grad():
            penalty(model, step=0)
        penalty.anchor = [0.5 * a for a in penalty.anchor]
        return penalty
    if name == "l2":
        return L2UpdatePenalty(0.5)
    return AsFTPenalty(directions, 1.5, matrix="paper" if name == "asft_paper" else "projector")


def two_batches(tokenizer) -> list[dict[str, torch.Tensor]]:
    """Two one-row task batches (data parallel: rank r takes batch r)."""
    out = []
    for text in ("the sea is blue and deep", "a small cat sat on the mat today"):
        ids = torch.tensor([tokenizer(text)["input_ids"][:12]])
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return out
