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

from tests.helpers import lora_models
from tests.helpers.distributed import penalty_and_gradients, step_gradients


def _measure(model, tokenizer, dirs) -> dict:
    params = {n: p for n, p in model.named_parameters() if "lora_" in n}
    out: dict = {}
    for name in lora_models.SHARDED_PENALTIES:
        penalty = lora_models.sharded_penalty(name, model, dirs)
        out[name] = penalty_and_gradients(penalty, model, params, step=1)
        out[name]["step_grads"] = step_gradients(penalty, model, params, lora_models.two_batches(tokenizer), step=1)
    return out


def main(out: Path) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    model, tokenizer = lora_models.sharded_lora_model()
    dirs = lora_models.directions_of(lora_models.random_deltas(model))
    model.train()
    results = {"single": _measure(model, tokenizer, dirs)}
    dist.init_process_group("gloo", timeout=timedelta(seconds=90))
    try:
        model, tokenizer = lora_models.sharded_lora_model()  # the same weights, now sharded
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
