"""Step-time overhead of the AGL regulariser: one LoRA fwd+bwd+AdamW step with vs without it.

SmolLM2-135M-Instruct, LoRA r=16 on all linear layers, batch 4 x 128 tokens, default AGL settings (R_A and R_T; the
collision terms are opt-in: ``--lambda-collision 0.1`` adds them), measured alternately in one process. The drift budget's KL meter (one forward of ``agl_kl_batch_size`` sequences
every ``agl_kl_every`` steps, here as long as a training sequence) is timed apart and amortised over its interval.
``--kl-anchor-every N`` also times a KL anchor step (4 sequences, a no-grad forward and a forward + backward)
and amortises it over N steps. ``--probe real`` gives the meter and the anchor what they read in training (the
DriftCaps probe's last prompts with the aligned model's greedy answers of at most ``agl_fisher_max_new_tokens``
tokens: the meter's 4, the 4 before them for the anchor) instead of random sequences as long as a training one. Last line: ``step_time_ratio agl/plain = X.XXX`` (median of per-pair ratios, plus the
amortised meter and anchor).

    python benchmarks/overhead.py [--repeats 12] [--threads 2] [--lambda-collision 0.1] [--kl-anchor-every 10]
                                  [--batch 8 --seq 256] [--probe real]
"""

from __future__ import annotations

import argparse
import time

import torch
from _setup import TrainStep, load_model_with_lora, median_ratio, probe_records, use_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--lambda-collision", type=float, default=None, help="turn on the collision terms")
    parser.add_argument(
        "--kl-anchor-every",
        type=int,
        default=0,
        help="also time a KL anchor step (agl_kl_anchor_every) and amortise it",
    )
    parser.add_argument(
        "--probe",
        choices=("train-length", "real"),
        default="train-length",
        help="the meter's and anchor's sequences: random ones as long as a training sequence, or the probe's own",
    )
    args = parser.parse_args()
    args.threads = use_threads(args.threads)

    from agl_trl.fisher import FisherSettings, estimate_fisher
    from agl_trl.regularizers import AGLRegularizer, AGLSettings
    from agl_trl.teacher_forcing import anchor_kl, probe_kl, reference_log_probs

    extra = {} if args.lambda_collision is None else {"lambda_collision": args.lambda_collision}
    model, tokenizer, source = load_model_with_lora(rank=16)
    print(
        f"model: {source}; threads={args.threads}; batch {args.batch} x {args.seq}; {extra or 'defaults'}", flush=True
    )
    artifact = estimate_fisher(
        model, tokenizer, probe_records(16), FisherSettings(max_rank=64, targets="empirical"), show_progress=False
    )
    regularizer = AGLRegularizer(artifact, AGLSettings(**extra))
    model.train()
    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=generator)
    step = TrainStep(model, regularizer, ids)

    for _ in range(2):  # warm-up (allocator, first-call binding of the regulariser)
        step(False)
        step(True)
    reg_only = []
    for _ in range(5):
        start = time.perf_counter()
        regularizer(model, step=step.count)[0].backward()
        step.optimizer.zero_grad(set_to_none=True)
        reg_only.append(time.perf_counter() - start)
    settings = regularizer.settings
    if args.probe == "real":
        meter_batch, anchor_batch = real_probe_batches(model, tokenizer, settings.kl_batch_size)
    else:
        meter_batch = anchor_batch = random_probe_batch(ids[: settings.kl_batch_size])
    shape = {
        name: "x".join(map(str, b["input_ids"].shape)) for name, b in (("meter", meter_batch), ("anchor", anchor_batch))
    }
    reference = reference_log_probs(model, meter_batch).cpu()  # once per meter batch and run
    meter = []
    for _ in range(5):
        start = time.perf_counter()
        probe_kl(model, meter_batch, reference)
        meter.append(time.perf_counter() - start)
    model.train()
    anchor = []
    for _ in range(5 if args.kl_anchor_every else 0):  # no-grad aligned forward + forward and backward
        start = time.perf_counter()
        anchor_kl(model, anchor_batch).backward()
        step.optimizer.zero_grad(set_to_none=True)
        anchor.append(time.perf_counter() - start)
    plain, agl, ratio = median_ratio(lambda: step(False), lambda: step(True), args.repeats)
    reading = sorted(meter)[2]
    amortised = reading / settings.kl_every / plain
    anchor_amortised = sorted(anchor)[2] / args.kl_anchor_every / plain if anchor else 0.0
    print(f"modules regularised: {len(regularizer.modules)}; regulariser fwd+bwd alone: {sorted(reg_only)[2]:.4f} s")
    print(f"median step: plain {plain:.3f} s, agl {agl:.3f} s ({args.repeats} alternating pairs)")
    print(
        f"KL meter reading ({shape['meter']} tokens, {args.probe}): {reading:.3f} s, every "
        f"{settings.kl_every} steps: +{amortised:.3f} of a plain step"
    )
    if anchor:
        print(
            f"KL anchor step ({shape['anchor']} tokens, {args.probe}): {sorted(anchor)[2]:.3f} s, every "
            f"{args.kl_anchor_every} steps: +{anchor_amortised:.3f} of a plain step"
        )
    print(f"regulariser_ratio agl/plain = {ratio:.3f}")
    print(f"step_time_ratio agl/plain = {ratio + amortised + anchor_amortised:.3f}")


def random_probe_batch(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Training-length random sequences, their second half the response."""
    response = torch.zeros_like(ids)
    response[:, ids.shape[1] // 2 :] = 1
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "response_mask": response}


def real_probe_batches(model, tokenizer, size: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The meter's and the anchor's batches as training builds them: the DriftCaps probe's last ``2 * size`` prompts
    answered greedily by the aligned model (adapters off), as prompt + response sequences."""
    from agl_trl.fisher import FisherSettings
    from agl_trl.fisher.probe import build_sequences, fill_missing_responses, load_probe_records
    from agl_trl.lora import adapters_disabled
    from agl_trl.teacher_forcing import collate

    fisher = FisherSettings()
    records = load_probe_records("driftcaps")[-2 * size :]
    with adapters_disabled(model):
        records = fill_missing_responses(model, tokenizer, records, fisher.max_new_tokens, size, False)
    sequences = build_sequences(tokenizer, records, fisher.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    device = next(model.parameters()).device
    return collate(sequences[size:], pad, device), collate(sequences[:size], pad, device)


if __name__ == "__main__":
    main()
