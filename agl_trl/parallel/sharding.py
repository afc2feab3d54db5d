"""Sharded parameters: FSDP2 (DTensor shards) and DeepSpeed ZeRO-3 (partitioned, empty outside the forward).

AGL reads the LoRA factors whole on every rank, so every rank computes the same penalty (docs/distributed.md).
Under FSDP2 the factors are DTensor shards: a group's shards are stacked and all-gathered once
(:func:`stack_full`, differentiable: the gradient reaches each rank's shard). Under ZeRO-3 they are empty outside
their module's forward: they are gathered for reading (:func:`zero3_gathered`), and a penalty's gradient is added
to each parameter's gradient inside that parameter's own backward (:class:`Zero3Gradients`). The LoRA grouper that
uses these for AGL and every peer penalty is :class:`agl_trl.lora.LoraGroups`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def is_dtensor(tensor: torch.Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (an FSDP2 parameter)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def is_zero3_parameter(tensor: torch.Tensor) -> bool:
    """True for a parameter managed by DeepSpeed ZeRO-3 (it carries ``ds_id`` / ``ds_shape``)."""
    return hasattr(tensor, "ds_shape") and hasattr(tensor, "ds_id")


def logical_shape(tensor: torch.Tensor) -> torch.Size:
    """The parameter's real shape: ``ds_shape`` under ZeRO-3 (the local tensor is empty), else ``shape`` (global
    for a DTensor)."""
    return torch.Size(tensor.ds_shape) if is_zero3_parameter(tensor) else tensor.shape


def is_partitioned(tensor: torch.Tensor) -> bool:
    """True for a ZeRO-3 parameter that is not gathered now (its local data is not the whole tensor)."""
    return is_zero3_parameter(tensor) and tensor.numel() != logical_shape(tensor).numel()


def sharding_engine(tensors: Iterable[torch.Tensor]) -> str | None:
    """``"fsdp2"`` when the first sharded one of ``tensors`` (a model's LoRA factors:
    :func:`agl_trl.lora.lora_factors`) is a DTensor, ``"zero3"`` when DeepSpeed ZeRO-3 manages it, else ``None``
    (plain, DDP or ZeRO-1/2: every rank holds full parameters)."""
    for tensor in tensors:
        if is_dtensor(tensor):
            return "fsdp2"
        if is_zero3_parameter(tensor):
            return "zero3"
    return None


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank: ``DTensor.full_tensor()`` for an FSDP2 shard (an all-gather; differentiable,
    so gradients flow back to the shard), the tensor itself otherwise. A partitioned ZeRO-3 parameter cannot be read
    here: read it inside :func:`readable` or from a forward hook."""
    if is_dtensor(tensor):
        return tensor.full_tensor()
    if is_partitioned(tensor):
        raise RuntimeError(
            "A DeepSpeed ZeRO-3 parameter is partitioned here (outside its module's forward); gather it first "
            "(agl_trl.parallel.sharding.readable)."
        )
    return tensor


@contextmanager
def zero3_gathered(params: list[torch.Tensor]) -> Iterator[None]:
    """Gather the partitioned ZeRO-3 parameters among ``params`` for the block (read only: ``modifier_rank=None``,
    nothing is written back). A no-op without partitioned parameters. Collective: every rank must enter it."""
    partitioned = [p for p in params if is_zero3_parameter(p)]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


@contextmanager
def readable(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield the whole of ``tensor`` as a plain tensor, without gradient, whatever the engine (an all-gather for an
    FSDP2 shard or a ZeRO-3 partition: every rank must enter it)."""
    with torch.no_grad():
        if is_dtensor(tensor):
            yield tensor.full_tensor()
            return
        with zero3_gathered([tensor]):
            yield tensor.detach()


def outermost_fsdp_module(model: nn.Module) -> nn.Module | None:
    """The outermost ``fully_shard`` module of ``model`` (the FSDP2 root), or ``None``."""
    if not torch.distributed.is_available():
        return None
    from torch.distributed.fsdp import FSDPModule

    return next((m for m in model.modules() if isinstance(m, FSDPModule)), None)


def enable_fsdp_generate(model: nn.Module) -> None:
    """Make ``generate`` of the FSDP2 root run FSDP's pre/post-forward (``register_fsdp_forward_method``), once.

    ``model.generate`` calls the inner model's forward, which bypasses the root's own all-gather (and its lazy
    initialisation), so under FSDP2 the embedding would be read as a shard. A no-op without FSDP2. Collective.
    """
    root = outermost_fsdp_module(model)
    if root is None or getattr(root, "_agl_fsdp_generate", False):
        return
    from torch.distributed.fsdp import register_fsdp_forward_method

    register_fsdp_forward_method(root, "generate")
    root._agl_fsdp_generate = True
    # FSDP2 allocates its all-gather buffers at the first forward and reuses them: made inside generate()'s
    # inference mode they would be inference tensors that no later forward may write. One token, without gradient,
    # allocates them as ordinary tensors first (collective: every rank calls this).
    device = next(model.parameters()).device
    ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)


def stack_full(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack`` of the whole fp32 ``tensors``, differentiable. FSDP2 shards of one mesh and layout are stacked
    locally and all-gathered in one collective (one per group instead of one per module)."""
    first = tensors[0]
    if not is_dtensor(first):
        return torch.stack([t.float() for t in tensors])
    from torch.distributed.tensor import DTensor, Replicate, Shard

    mesh, placements = first.device_mesh, tuple(first.placements)
    uniform = all(
        is_dtensor(t) and t.device_mesh == mesh and tuple(t.placements) == placements and t.shape == first.shape
        for t in tensors
    ) and all(type(p) in (Shard, Replicate) for p in placements)
    if not uniform:
        return torch.stack([t.full_tensor().float() for t in tensors])
    local = torch.stack([t.to_local() for t in tensors])
    shape = torch.Size((len(tensors), *first.shape))
    stride = tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))
    shifted = [Shard(p.dim + 1) if isinstance(p, Shard) else p for p in placements]
    stacked = DTensor.from_local(local, mesh, shifted, run_check=False, shape=shape, stride=stride)
    return stacked.full_tensor().float()


class _Relay(torch.autograd.Function):
    """Forward: the penalty's value. Backward: records the gradient the loss sends it (the trainer's gradient
    accumulation division, a loss scale) for :class:`Zero3Gradients`, and sends nothing further."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, anchor: torch.Tensor, sink: Zero3Gradients) -> torch.Tensor:
        ctx.sink = sink
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None]:
        ctx.sink.upstream = grad.detach()
        return None, None, None


class Zero3Gradients:
    """DeepSpeed ZeRO-3: the penalty's gradient reaches each LoRA parameter inside its own backward.

    Outside its module's forward a ZeRO-3 parameter is empty. The factors are gathered for reading
    (``GatheredParameters``, ``modifier_rank=None``) into fp32 copies, the penalty is computed on them and its
    gradient w.r.t. them taken at once (the factors are small). The loss receives the penalty's value through
    :class:`_Relay`, whose backward records the multiplier the loss applies; a gradient hook on each LoRA parameter
    then adds ``multiplier * dPenalty/dParam`` to the gradient its forward use produces, before ZeRO-3 reduces it
    (the relay, created after the forward, is back-propagated before any node of the forward: autograd runs the
    most recently created ready node first),
    so ZeRO-3 reduces one gradient per parameter and step. The addition is made once per call (then dropped): with
    gradient checkpointing the parameter's gradient arrives in the recomputation's backward (reentrant
    checkpointing, which TRL forces for PEFT under ZeRO-3) or in the main one, never twice with the penalty's part.
    """

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        """``pairs``: the ``(lora_B, lora_A)`` parameters of each module, in the order :meth:`gather` returns them."""
        self.pending: dict[int, torch.Tensor] = {}
        self.upstream: torch.Tensor | None = None
        self.pairs = pairs
        self._handles = [p.register_hook(self._hook(id(p))) for b, a in pairs for p in (a, b) if p.requires_grad]

    def gather(self, grad: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """fp32 copies ``(B, A)`` of the whole factors, per pair (leaves requiring grad when ``grad``). Collective."""
        with zero3_gathered([p for b, a in self.pairs for p in (a, b)]):
            copies = [(b.detach().float().clone(), a.detach().float().clone()) for b, a in self.pairs]
        if grad:
            for pair in copies:
                for tensor in pair:
                    tensor.requires_grad_(True)
        return copies

    def relay(self, total: torch.Tensor, copies: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Take the penalty's gradient w.r.t. the ``copies`` of one :meth:`gather` now, keep it for the parameters'
        hooks, return the value through the relay."""
        self.pending, self.upstream = {}, None
        if not total.requires_grad:
            return total
        params = [p for pair in self.pairs for p in pair]
        leaves = [t for pair in copies for t in pair]
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
        self.pending = {id(p): g for p, g in zip(params, grads, strict=True) if g is not None and p.requires_grad}
        anchor = torch.zeros((), device=total.device, requires_grad=True)
        return _Relay.apply(total.detach(), anchor, self)

    def _hook(self, key: int):
        def hook(grad: torch.Tensor) -> torch.Tensor | None:
            extra = self.pending.pop(key, None)
            if extra is None:
                return None
            if self.upstream is None:
                raise RuntimeError(
                    "AGL under ZeRO-3: a LoRA parameter's gradient arrived before the penalty's part of the loss was "
                    "back-propagated. Compute the penalty after the model's forward (as AGLLossMixin.compute_loss "
                    "does) and call backward() on a loss that includes it."
                )
            return grad + (self.upstream * extra).to(grad.dtype).reshape(grad.shape)

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.pending.clear()
