"""Which Fisher terms a trained update's KL lives in: measured probe KL against K-FAC and the exact (sampled) form.

For adapters the peers protocol trained (``benchmarks/peers.py``; its shared set-up holds the aligned model, the
Fisher artifact and the probe records), each update dW is scaled by ``--eps`` (the quadratic regime) and read four
ways on the KL meter's 16 held-out probe sequences (the records after those the Fisher reads):

* measured: KL(p_aligned || p_tuned) per response token, the meter's reading (mean of its 4 batches);
* K-FAC: 0.5 vec(dW)^T F vec(dW) from the artifact (the regulariser's raw estimate, whole spectrum);
* exact: the Monte Carlo form with every term (:func:`benchmarks.lab.fisher_exact.sampled_fisher_forms`), on the same
  sequences, and its block-diagonal part (no cross-module terms);
* exact on the Fisher's own probe prompts (other prompts, 1 sample each): what a sequence-level estimate stored at
  estimation time would read on held-out prompts.

With ``--full-basis`` it also estimates K-FAC with every eigenpair kept (on the Fisher's probe records, its settings
otherwise) and reads K-FAC in full and EKFAC (the Fisher prompts' sampled second moments in that full eigenbasis;
``eigenbases`` of :func:`~benchmarks.lab.fisher_exact.sampled_fisher_forms`): whether the discarded spectrum or a
within-module correction closes the gap (~7 more minutes, ~1.5 GB more memory).

All are divided by eps^2, i.e. reported at the full update. Prints a table; the last line gives the medians of
measured / K-FAC and measured / exact.

    python benchmarks/fisher_terms.py --threads 2 --samples 16   # ~9 min on 2 CPU cores, after the peers protocol
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

import torch  # noqa: E402
from _setup import use_threads  # noqa: E402

DEFAULT_RUNS = "plain/none/seed0,plain/none/seed1,l2/0.01/seed0,kl_ref/3/seed0,agl/0.1/seed0,agl/0.01/seed0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", type=Path, default=Path("runs/peers/demo"), help="the protocol's shared set-up")
    parser.add_argument("--train", type=Path, default=Path("runs/peers/train"), help="its trained runs")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="METHOD/STRENGTH/seedN under --train, comma-separated")
    parser.add_argument("--eps", type=float, default=0.3, help="scale of dW for the readings (quadratic regime)")
    parser.add_argument("--samples", type=int, default=4, help="sampled targets per meter sequence")
    parser.add_argument("--full-basis", action="store_true", help="also K-FAC with every eigenpair, and EKFAC")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    args = parser.parse_args()
    args.threads = use_threads(args.threads)

    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agl_trl.fisher import FisherArtifact, FisherSettings, estimate_fisher
    from agl_trl.fisher.probe import build_sequences, fill_missing_responses, meter_records
    from agl_trl.lora import adapters_disabled, find_lora_modules
    from agl_trl.regularizers import AGLRegularizer
    from agl_trl.settings import AGLSettings
    from agl_trl.teacher_forcing import collate, probe_kl, reference_log_probs
    from benchmarks.lab.fisher_exact import sampled_fisher_forms, update_of

    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    adapters = {run: args.train / run / "adapter" for run in runs}
    for run, path in adapters.items():
        if not (path / "adapter_model.safetensors").is_file():
            raise SystemExit(f"--runs {run}: no adapter at {path}; run benchmarks/peers.py first or name another run")
    aligned = args.setup / "aligned" / "model"
    tokenizer = AutoTokenizer.from_pretrained(aligned)
    base = AutoModelForCausalLM.from_pretrained(aligned, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapters[runs[0]])
    model.eval()
    modules = find_lora_modules(model)
    artifact = FisherArtifact.load(args.setup / "fisher" / "artifact")
    fisher = FisherSettings(**artifact.metadata["settings"])
    records = [json.loads(line) for line in (args.setup / "fisher" / "probe.jsonl").read_text().splitlines()]
    meter_rows, _ = meter_records(records, fisher.max_samples, AGLSettings().kl_sequences)
    with adapters_disabled(model):
        meter_rows = fill_missing_responses(model, tokenizer, meter_rows, fisher.max_new_tokens, 4, False)
        fisher_records = fill_missing_responses(
            model, tokenizer, records[: fisher.max_samples], fisher.max_new_tokens, 8, False
        )
    pad = tokenizer.pad_token_id
    meter = build_sequences(tokenizer, meter_rows, fisher.max_length)
    probe = build_sequences(tokenizer, fisher_records, fisher.max_length)
    batches = [collate(meter[i : i + 4], pad, torch.device("cpu")) for i in range(0, len(meter), 4)]
    references = [reference_log_probs(model, b) for b in batches]
    regularizer = AGLRegularizer(artifact, AGLSettings())
    regularizer.bind(model)
    print(f"{len(meter)} meter sequences ({args.samples} samples each), {len(probe)} Fisher probe sequences; "
          f"eps {args.eps}; all figures nats per response token at the full update", flush=True)  # fmt: skip

    scale = 1.0 / args.eps**2
    measured, kfac, updates = {}, {}, {}
    for run in runs:
        set_peft_model_state_dict(model, load_file(adapters[run] / "adapter_model.safetensors"))
        for m in modules:
            m.lora_B.data.mul_(args.eps)
        measured[run] = scale * statistics.fmean(
            probe_kl(model, b, r) for b, r in zip(batches, references, strict=True)
        )
        kfac[run] = scale * regularizer.raw_kl_estimate(model)
        updates[run] = update_of(modules)
    on_meter = sampled_fisher_forms(model, modules, meter, updates, pad, args.samples, seed=0)
    full_kfac, bases = {}, None
    if args.full_basis:
        widest = max(max(m.d_out, m.d_in) for m in modules)
        settings = replace(fisher, max_rank=widest, explained_variance=1.0)
        full = estimate_fisher(model, tokenizer, fisher_records, settings, show_progress=False)
        whole = AGLRegularizer(full, AGLSettings())
        whole.bind(model)
        for run in runs:
            set_peft_model_state_dict(model, load_file(adapters[run] / "adapter_model.safetensors"))
            full_kfac[run] = whole.raw_kl_estimate(model)
        bases = [(full.modules[m.name].q_out, full.modules[m.name].q_in) for m in modules]
    on_probe = sampled_fisher_forms(model, modules, probe, updates, pad, 1, seed=1, eigenbases=bases)

    extra = " K-FAC, every eigenpair | EKFAC, full basis, Fisher's prompts |" if args.full_basis else ""
    print("| run | measured | K-FAC (measured/) | exact (measured/) | no cross-module (measured/) "
          "| exact on the Fisher's prompts (measured/) |" + extra)  # fmt: skip
    print("|---|---|---|---|---|---|" + ("---|---|" if args.full_basis else ""))
    for run in runs:
        m = measured[run]
        cells = [
            kfac[run],
            scale * on_meter[run].exact,
            scale * on_meter[run].within_module,
            scale * on_probe[run].exact,
        ]
        if args.full_basis:
            cells += [full_kfac[run], scale * on_probe[run].eigenbasis_diagonal]
        print(f"| {run} | {m:.4g} | " + " | ".join(f"{v:.4g} ({m / v:.2f}x)" for v in cells) + " |", flush=True)
    ratio_kfac = statistics.median(measured[r] / kfac[r] for r in runs)
    ratio_exact = statistics.median(measured[r] / (scale * on_meter[r].exact) for r in runs)
    print(f"fisher_terms measured/kfac median {ratio_kfac:.2f}; measured/exact median {ratio_exact:.2f}")


if __name__ == "__main__":
    main()
