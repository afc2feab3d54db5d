"""torch.distributed ranks: this process's rank and the world size, which process writes files, collective counts."""

from __future__ import annotations

from typing import Any

import torch


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of torch.distributed when it is initialised, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest ``value`` over the ranks (an all-reduce: every rank must call it)."""
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def same_on_every_rank(value: int, device: torch.device) -> bool:
    """Whether every rank passed the same ``value`` (one all-reduce; every rank gets the same answer)."""
    import torch.distributed as dist

    agree = torch.tensor([value, -value], dtype=torch.int64, device=device)
    dist.all_reduce(agree, op=dist.ReduceOp.MAX)
    return int(agree[0]) == value and -int(agree[1]) == value


def sum_over_ranks(tensors: list[torch.Tensor]) -> None:
    """Sum each of ``tensors`` over the ranks, in place and in order (one all-reduce each; every rank must call it)."""
    import torch.distributed as dist

    for tensor in tensors:
        dist.all_reduce(tensor)


def is_main_process(trainer: Any) -> bool:
    """Whether this process writes AGL's files (the artifact, ``agl_state.json``): rank 0 of torch.distributed when
    it is initialised (a trainer's own ``is_world_process_zero`` reads 0 on every rank where its distributed state
    is unset, e.g. Axolotl + DeepSpeed on CPU, and two ranks renaming one file race), else the trainer's answer."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    check = getattr(trainer, "is_world_process_zero", None)
    return bool(check()) if callable(check) else True
