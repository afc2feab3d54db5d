"""Cost of Fisher estimation vs plain training passes over the same probe sequences.

SmolLM2-135M-Instruct with LoRA r=16 on all linear layers: K-FAC estimation (default settings: sampled targets,
top-64 eigenpairs) over N probe sequences, against N sequences of plain fwd+bwd passes in the same batches.
Prints time, peak extra resident memory of each, the analytic factor memory, and last
``fisher_cost_ratio estimate/fwd_bwd = X.XX``.

    python benchmarks/fisher_cost.py [--sequences 64] [--batch 4]
"""

from __future__ import annotations

import argparse
import time

import torch
from _setup import PeakRSS, load_model_with_lora, probe_records, use_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    args.threads = use_threads(args.threads)

    from agl_trl.fisher import FisherSettings, estimate_fisher
    from agl_trl.fisher.probe import build_sequences
    from agl_trl.lora import find_lora_modules
    from agl_trl.teacher_forcing import collate

    model, tokenizer, source = load_model_with_lora(rank=16)
    records = probe_records(args.sequences)
    sequences = build_sequences(tokenizer, records, 512)
    tokens = sum(len(s.input_ids) for s in sequences)
    print(f"model: {source}; {len(sequences)} probe sequences, {tokens} tokens, batch {args.batch}", flush=True)
    settings = FisherSettings(max_samples=args.sequences, batch_size=args.batch)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def plain_passes() -> None:
        model.train()
        for start in range(0, len(sequences), args.batch):
            batch = collate(sequences[start : start + args.batch], pad, torch.device("cpu"))
            labels = batch["input_ids"].masked_fill(batch["response_mask"] == 0, -100)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)

    artifacts = []

    def estimate() -> None:
        artifacts[:] = [estimate_fisher(model, tokenizer, records, settings, show_progress=False)]

    plain_passes()  # warm-up
    timings = {"plain": [], "estimate": []}
    memory = {"plain": 0, "estimate": 0}
    for i in range(args.repeats):
        for name, fn in ((("plain", plain_passes), ("estimate", estimate)) if i % 2 == 0 else
                         (("estimate", estimate), ("plain", plain_passes))):  # fmt: skip
            with PeakRSS() as rss:
                start = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - start)
            memory[name] = max(memory[name], rss.extra)
            print(f"  {name}: {timings[name][-1]:.1f} s, peak extra RSS {rss.extra / 2**20:.0f} MiB", flush=True)
    modules = find_lora_modules(model)
    # modules that share an input (q/k/v, gate/up) share one S_in: count each input factor once
    shared_inputs = {(f.d_in, f.trace_in) for f in artifacts[0].modules.values()}
    factor_bytes = 4 * (sum(m.d_out**2 for m in modules) + sum(d * d for d, _ in shared_inputs))
    kept_bytes = 4 * sum(f.q_out.numel() + f.q_in.numel() for f in artifacts[0].modules.values())
    plain, est = min(timings["plain"]), min(timings["estimate"])
    print(f"plain fwd+bwd: {plain:.1f} s, peak extra RSS {memory['plain'] / 2**20:.0f} MiB")
    print(f"estimation:    {est:.1f} s, peak extra RSS {memory['estimate'] / 2**20:.0f} MiB")
    print(f"exact factor memory (all {len(modules)} modules at once): {factor_bytes / 2**20:.0f} MiB; kept eigenvectors "
          f"{kept_bytes / 2**20:.1f} MiB; {len(shared_inputs)} distinct input factors")  # fmt: skip
    print(f"fisher_cost_ratio estimate/fwd_bwd = {est / plain:.2f}")


if __name__ == "__main__":
    main()
