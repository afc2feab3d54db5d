"""Shared plumbing of the baseline penalties: LoRA factors grouped by shape, a zero with no graph, the metric dict.

Every during-training baseline is a callable ``penalty(model, step) -> (fp32 scalar loss, metrics)``, the signature of
:class:`~agl_trl.regularizers.AGLRegularizer`, so it plugs into a TRL trainer through the same mixin
(:func:`agl_trl.trainers.attach_penalty` / :func:`~agl_trl.trainers.enable_penalty`): train-only, fp32,
gradient-accumulation scaling and ``agl/<name>`` logging come from there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from agl_trl.lora import LoraModule, find_lora_modules


class Penalty(Protocol):
    """What the trainer mixin calls each training ``compute_loss``."""

    def __call__(self, model: nn.Module, step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class FactorGroup:
    """LoRA modules of one shape and device, stacked per call: ``B`` (M, d_out, r), ``A`` (M, r, d_in), ``scale`` (M,)."""

    modules: list[LoraModule]
    scale: torch.Tensor

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B = torch.stack([m.lora_B.float() for m in self.modules])  # noqa: N806
        A = torch.stack([m.lora_A.float() for m in self.modules])  # noqa: N806
        return B, A, self.scale


class LoraGroups:
    """Finds a model's active LoRA modules and groups them by (d_out, d_in, r, device); re-groups when they change."""

    def __init__(self) -> None:
        self.groups: list[FactorGroup] = []
        self._bound_to: tuple[int, ...] | None = None

    def __call__(self, model: nn.Module) -> list[FactorGroup]:
        modules = find_lora_modules(model)
        key = tuple(id(m.layer) for m in modules)
        if key != self._bound_to:
            if not modules:
                raise ValueError(
                    "The model has no active LoRA layers: the baseline penalties regularise a LoRA update. Pass a "
                    "peft_config to the trainer (or apply get_peft_model) first."
                )
            by_shape: dict[tuple[Any, ...], list[LoraModule]] = {}
            for m in modules:
                by_shape.setdefault((m.d_out, m.d_in, m.rank, m.lora_B.device), []).append(m)
            self.groups = [
                FactorGroup(
                    modules=group,
                    scale=torch.tensor([m.scaling for m in group], dtype=torch.float32, device=group[0].lora_B.device),
                )
                for group in by_shape.values()
            ]
            self._bound_to = key
        return self.groups

    @property
    def modules(self) -> list[LoraModule]:
        return [m for g in self.groups for m in g.modules]


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
