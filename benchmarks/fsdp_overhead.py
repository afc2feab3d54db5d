"""Step-time cost of AGL under FSDP2 on CPU: two gloo processes, one LoRA fwd+bwd+AdamW step with vs without the
regulariser, the model sharded with ``fully_shard`` (per decoder layer + root).

SmolLM2-135M-Instruct (``--model tiny``: the 2-layer test Llama), LoRA r=16 on all linear layers, batch 4 x 128 tokens
per rank, default AGL settings (all four terms). Under FSDP2 the regulariser all-gathers the LoRA factors once per
group of equally shaped modules (``DTensor.full_tensor()``) and every rank computes the whole penalty; the Fisher is
estimated on the sharded model first (probe split over the ranks). Alternating pairs, median per-pair ratio on rank 0;
the KL meter is not included (``benchmarks/overhead.py`` amortises it). Last line:
``fsdp_step_time_ratio agl/plain = X.XX``.

    python benchmarks/fsdp_overhead.py [--repeats 10] [--model smollm2|tiny]    # launches 2 processes itself
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def _launch(argv: list[str]) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
        str(Path(__file__).resolve()), "--worker", *argv,
    ]  # fmt: skip
    return subprocess.call(command, env=env)


def _model(name: str):
    from peft import LoraConfig, get_peft_model

    if name == "tiny":
        from agl_trl.models import tiny_llama

        torch.manual_seed(0)
        model, tokenizer = tiny_llama(vocab_size=384, padding_side="right")
        config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
        return get_peft_model(model, config), tokenizer, "tiny test Llama (2 layers, hidden 32)"
    from _setup import load_model_with_lora

    model, tokenizer, source = load_model_with_lora(rank=16)
    return model, tokenizer, source


def _worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from _setup import TrainStep, median_ratio, probe_records
    from torch.distributed.fsdp import fully_shard

    from agl_trl.fisher import FisherSettings, estimate_fisher
    from agl_trl.lora import LoraGroups
    from agl_trl.regularizers import AGLRegularizer, AGLSettings

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=600))
    rank = dist.get_rank()
    model, tokenizer, source = _model(args.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-zero update, as after a few steps (LoRA starts at B = 0)
        for name, param in sorted(model.named_parameters()):
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 1e-3)
    for layer in model.base_model.model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    if rank == 0:
        print(f"model: {source}; 2 processes (gloo), 1 thread each; batch {args.batch} x {args.seq} per rank")
    started = time.perf_counter()
    settings = FisherSettings(max_rank=64, targets="empirical")
    artifact = estimate_fisher(model, tokenizer, probe_records(16), settings, show_progress=False)
    estimate_seconds = time.perf_counter() - started
    regularizer = AGLRegularizer(artifact, AGLSettings())
    model.train()
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(1 + rank))
    step = TrainStep(model, regularizer, ids)

    for _ in range(2):  # warm-up (allocator, FSDP2 lazy init, the regulariser's binding)
        step(False)
        step(True)
    grouper = LoraGroups()  # the regulariser's grouper: the same groups and gathers
    grouper.update(model)
    gather, reg_only = [], []
    for _ in range(5):
        start = time.perf_counter()
        with torch.no_grad():
            grouper.read(grad=False)
        gather.append(time.perf_counter() - start)
        start = time.perf_counter()
        regularizer(model, step=step.count)[0].backward()
        step.optimizer.zero_grad(set_to_none=True)
        reg_only.append(time.perf_counter() - start)
    plain, agl, ratio = median_ratio(lambda: step(False), lambda: step(True), args.repeats)
    if rank == 0:
        n_groups = len(grouper.groups)
        print(f"Fisher estimate on the sharded model: {estimate_seconds:.1f} s")
        print(
            f"modules regularised: {len(regularizer.modules)} in {n_groups} groups ({2 * n_groups} all-gathers a "
            f"step); gather alone {sorted(gather)[2]:.4f} s; regulariser fwd+bwd alone {sorted(reg_only)[2]:.4f} s"
        )
        print(f"median step: plain {plain:.3f} s, agl {agl:.3f} s ({args.repeats} alternating pairs)")
        print(f"fsdp_step_time_ratio agl/plain = {ratio:.2f}")
    dist.destroy_process_group()


def main() -> None:
    args = _parse()
    if args.worker:
        _worker(args)
        return
    argv = ["--repeats", str(args.repeats), "--batch", str(args.batch), "--seq", str(args.seq), "--model", args.model]
    raise SystemExit(_launch(argv))


if __name__ == "__main__":
    main()
