"""Throughput of DriftCaps evaluation generation: batched (left padding, length-sorted) vs one prompt at a time.

Model: SmolLM2-135M-Instruct (offline, via ``agl_trl.models.load_default_model``), fp32 on CPU, greedy decoding.
Prints prompts/s for both modes, how many greedy outputs are identical, and as the LAST line
``batched_speedup = X.X``.

    python benchmarks/drift_eval_throughput.py [--prompts 48] [--batch-size 16] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from agl_trl.driftcaps import load_driftcaps  # noqa: E402
from agl_trl.generation import generate  # noqa: E402
from agl_trl.models import load_default_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48, help="number of DriftCaps eval prompts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = load_default_model()
    items = load_driftcaps("test", limit_per_category=max(1, args.prompts // 16 + 1))[: args.prompts]
    prompts = [it.prompt for it in items]
    generate(model, tok, prompts[:2], max_new_tokens=4, batch_size=2, progress=False)  # warm-up

    t0 = time.perf_counter()
    single = generate(model, tok, prompts, args.max_new_tokens, batched=False, desc="one-at-a-time")
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = generate(model, tok, prompts, args.max_new_tokens, batch_size=args.batch_size, desc="batched")
    t_batched = time.perf_counter() - t0

    same = sum(a.response_ids == b.response_ids for a, b in zip(single, batched, strict=True))
    same_text = sum(a.text == b.text for a, b in zip(single, batched, strict=True))
    tokens = sum(len(g.response_ids) for g in batched)
    print(f"model: SmolLM2-135M-Instruct fp32 CPU, torch threads: {torch.get_num_threads()}")
    print(
        f"prompts: {len(prompts)} DriftCaps eval, max_new_tokens: {args.max_new_tokens}, "
        f"batch size: {args.batch_size}, generated tokens (batched): {tokens}"
    )
    print(f"one-at-a-time: {t_single:.1f} s, {len(prompts) / t_single:.2f} prompts/s")
    print(f"batched:       {t_batched:.1f} s, {len(prompts) / t_batched:.2f} prompts/s")
    print(f"identical greedy outputs: {same}/{len(prompts)} token ids, {same_text}/{len(prompts)} texts")
    print(f"batched_speedup = {t_single / t_batched:.1f}")


if __name__ == "__main__":
    main()
