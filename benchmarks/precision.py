"""bf16 against fp32 on this CPU, side by side: why agl-trl trains in bf16 only where it is fast.

A matrix product (512x1024 @ 1024x1024) in fp32 and in bf16, and, with ``--step``, one LoRA forward+backward of
SmolLM2-135M-Instruct (batch 2 x 64 tokens) in fp32 and under bf16 autocast (what TRL's default ``bf16=True`` does
on a CPU). Prints the CPU's fast-bf16 flags, what :func:`agl_trl.precision.bf16_is_fast` decides, each time, and
last ``bf16_time_ratio bf16/fp32 = X.X`` (the matmul's; about 1 or below where bf16 is fast, ~100 where emulated).

    python benchmarks/precision.py [--threads 1] [--repeats 5] [--step]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def lora_step_seconds(dtype_autocast: bool) -> float:
    from _setup import load_model_with_lora

    model, tokenizer, _ = load_model_with_lora(rank=16)
    model.train()
    ids = torch.randint(0, len(tokenizer), (2, 64))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype_autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return timed(step, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step", action="store_true", help="also one SmolLM2 LoRA step (bf16 may take minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from agl_trl.precision import bf16_is_fast, fast_bf16_cpu_flags, hardware_summary

    summary = hardware_summary(threads=args.threads)
    print(f"CPU: {summary['cpu_model']}; fast-bf16 flags: {fast_bf16_cpu_flags() or 'none'}; torch {summary['torch']}")
    print(f"agl_trl.precision.bf16_is_fast(on_cpu=True) = {bf16_is_fast(on_cpu=True)}")
    a32, b32 = torch.randn(512, 1024), torch.randn(1024, 1024)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    flops = 2 * 512 * 1024 * 1024
    fp32 = timed(lambda: a32 @ b32, args.repeats)
    bf16 = timed(lambda: a16 @ b16, args.repeats)
    print(f"matmul 512x1024 @ 1024x1024, {args.threads} thread(s): fp32 {fp32 * 1e3:.2f} ms "
          f"({flops / fp32 / 1e9:.1f} GFLOP/s), bf16 {bf16 * 1e3:.2f} ms ({flops / bf16 / 1e9:.1f} GFLOP/s)")  # fmt: skip
    if args.step:
        step32, step16 = lora_step_seconds(False), lora_step_seconds(True)
        print(f"SmolLM2 LoRA fwd+bwd, 2 x 64 tokens: fp32 {step32:.2f} s, bf16 autocast {step16:.2f} s "
              f"(ratio {step16 / step32:.1f})")  # fmt: skip
    print(f"bf16_time_ratio bf16/fp32 = {bf16 / fp32:.1f}")


if __name__ == "__main__":
    main()
