"""Run by test_sharded_peers.py under torch.distributed.run (2 CPU processes, gloo): the peer penalties on the LoRA
factors under FSDP2 (``fully_shard`` per decoder layer + root), against a single process on the same weights.

``OUT``: before the process group each rank computes the single-process reference (each penalty's value, metrics
and gradient, and the task + penalty gradient of a batch split over the ranks); then the same on the sharded model.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import torch

from tests.baselines import helpers


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _measure(model, tokenizer, dirs) -> dict:
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    params = {n: p for n, p in model.named_parameters() if "lora_" in n}
    out: dict = {}
    for name in helpers.SHARDED_PENALTIES:
        penalty = helpers.sharded_penalty(name, model, dirs)
        model.zero_grad(set_to_none=True)
        value, metrics = penalty(model, step=1)
        grads = torch.autograd.grad(value, list(params.values()))
        result = {
            "value": float(value),
            "metrics": metrics,
            "grads": {n: _full(g).detach().clone() for n, g in zip(params, grads, strict=True)},
        }
        data = helpers.two_batches(
            tokenizer
        )  # data parallel: rank r takes batch r; the reference averages the two losses
        task = sum(model(**b).loss for b in data) / len(data) if world == 1 else model(**data[rank]).loss
        value, _ = penalty(model, step=1)
        (task + value).backward()
        result["step_grads"] = {n: _full(p.grad).detach().clone() for n, p in params.items()}
        model.zero_grad(set_to_none=True)
        out[name] = result
    return out


def main(out: Path) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    model, tokenizer = helpers.sharded_lora_model()
    dirs = helpers.directions_of(helpers.random_deltas(model))
    model.train()
    results = {"single": _measure(model, tokenizer, dirs)}
    dist.init_process_group("gloo", timeout=timedelta(seconds=90))
    try:
        model, tokenizer = helpers.sharded_lora_model()  # the same weights, now sharded
        for layer in model.base_model.model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        model.train()
        results["dtensor"] = type(next(p for n, p in model.named_parameters() if "lora_" in n)).__name__
        results["fsdp"] = _measure(model, tokenizer, dirs)
    finally:
        dist.destroy_process_group()
    torch.save(results, out / f"rank{int(os.environ['RANK'])}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
