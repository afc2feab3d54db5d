"""Shared plumbing of the baseline penalties: a zero with no graph, the weight check, the probe batches.

Every during-training baseline is a callable ``penalty(model, step) -> (fp32 scalar loss, metrics)``, the signature of
:class:`~agl_trl.regularizers.AGLRegularizer`, so it plugs into a TRL trainer through the same mixin
(:func:`agl_trl.trainers.attach_penalty` / :func:`~agl_trl.trainers.enable_penalty`): train-only, fp32,
gradient-accumulation scaling and ``agl/<name>`` logging come from there. The penalties on the LoRA factors read
them through AGL's grouper (:class:`agl_trl.lora.LoraGroups`), so they run under FSDP2 and ZeRO-3 as AGL does.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

import torch
from torch import nn


class Penalty(Protocol):
    """What the trainer mixin calls each training ``compute_loss``."""

    def __call__(self, model: nn.Module, step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]: ...


def graph_free_zero(model: nn.Module) -> torch.Tensor:
    """An fp32 scalar 0 on the model's device, without a graph (so the trainer's loss and gradients are unchanged)."""
    try:
        device = next(p.device for p in model.parameters())
    except StopIteration:  # pragma: no cover - a model without parameters
        device = torch.device("cpu")
    return torch.zeros((), device=device)


def trace_product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """tr(X @ Y) for batches of square matrices, without forming the product."""
    return (x * y.transpose(-1, -2)).sum(dim=(-1, -2))


def check_lambda(name: str, value: float) -> float:
    """Validate a penalty weight: finite and >= 0."""
    if not (isinstance(value, int | float) and value >= 0 and value == value and value != float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def seeded_batches(items: list[Any], batch_size: int, seed: int) -> list[list[Any]]:
    """``items`` in one fixed order shuffled by ``seed``, cut into batches of ``batch_size`` (the last may be short):
    the probe batches the penalties cycle through, keyed on the optimizer step."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    size = int(batch_size)
    return [[items[i] for i in order[j : j + size]] for j in range(0, len(order), size)]
