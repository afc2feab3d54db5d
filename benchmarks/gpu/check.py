"""The GPU check: AGL's default against plain LoRA through the real TRL trainer on a Llama-3.1-8B-shaped model.

Only shapes matter for cost, so the model is randomly initialised (no hub, no download): Llama-3.1-8B's config
(hidden 4096, 32 layers, 32 heads / 8 KV heads, MLP 14336, vocabulary 128256) in bf16 on one GPU, LoRA r=16 on every
linear layer, TRL's `SFTTrainer` and agl-trl's `AGLSFTTrainer` at the package defaults (drift budget, KL meter every
10th step, KL anchor every 10th step) with TRL's default gradient checkpointing, 8 sequences x 1024 tokens per step.

It measures, in one process on one machine:

1. the Fisher estimate on 64 probe sequences (`estimate_fisher`, what a first AGL run pays once at start);
2. step time: plain LoRA and AGL alternate in `--rounds` rounds of `--warmup` + `--steps` optimizer steps, the
   timed steps a multiple of 10 so the meter's and the anchor's steps are inside the mean; the ratio is the median
   over rounds of AGL's mean step over the same round's plain LoRA's (target <= 1.05);
3. peak GPU memory of each run (`torch.cuda.max_memory_allocated`).

Writes `check.json` into `--out` and prints a table. Runs under 10 minutes on one H100. On a machine without a GPU,
`--tiny` runs the same code on a tiny Llama on the CPU (the test does that); the GPU machine has no trl or datasets:
carry them as wheels (docs/benchmarks.md, "GPU check").

    python benchmarks/gpu/check.py --out $OUT                 # one H100 or H200
    python benchmarks/gpu/check.py --tiny --out /tmp/gpu-check   # CPU smoke run of the same code
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LLAMA_8B = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
    vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False,
)  # fmt: skip
TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=4096, max_position_embeddings=512, tie_word_embeddings=False,
)  # fmt: skip
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FISHER_SEQUENCES = 64
METER_SEQUENCES = 16  # the package default (agl_kl_sequences): the probe's last 16 records


def build_model(shape: dict[str, Any], device: str, dtype: Any, seed: int) -> Any:
    """A random Llama of ``shape`` with LoRA r=16 on every linear layer (a PeftModel), on ``device``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**shape, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def probe_file(tokenizer: Any, path: Path, seed: int) -> Path:
    """Probe records (prompt + response, so nothing is generated): the Fisher's 64, then the meter's 16."""
    import random

    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"]
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(FISHER_SEQUENCES + METER_SEQUENCES):
            prompt = " ".join(rng.choice(words) for _ in range(24))
            response = " ".join(rng.choice(words) for _ in range(48))
            handle.write(json.dumps({"prompt": prompt, "response": response}) + "\n")
    return path


def train_rows(n: int, tokens: int, vocab: int, seed: int) -> Any:
    """``n`` pre-tokenised rows of exactly ``tokens`` random ids (TRL skips tokenisation for them)."""
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, tokens), generator=generator)
    return Dataset.from_dict({"input_ids": ids.tolist()})


def time_run(args: argparse.Namespace, shape: dict, agl: bool, fisher_dir: Path | None, probe: Path, out: Path) -> dict:
    """One training run of ``args.warmup + args.steps`` steps; its timed steps' mean and its peak memory."""
    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from agl_trl import AGLSFTConfig, AGLSFTTrainer
    from agl_trl.models import tiny_tokenizer

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    model = build_model(shape, args.device, args.dtype, seed=0)
    tokenizer = tiny_tokenizer(vocab_size=min(shape["vocab_size"], 4096))
    common = dict(
        output_dir=str(out / ("agl" if agl else "plain")), max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1, learning_rate=1e-4,
        logging_steps=10, save_strategy="no", report_to="none", max_length=args.seq, bf16=args.device == "cuda",
        use_cpu=args.device == "cpu", dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    if agl:
        config = AGLSFTConfig(
            **common, agl_fisher_path=str(fisher_dir), agl_probe_dataset=str(probe), agl_save_fisher=False,
            agl_fisher_max_samples=FISHER_SEQUENCES,
        )  # fmt: skip
        trainer_cls = AGLSFTTrainer
    else:
        config, trainer_cls = SFTConfig(**common), SFTTrainer
    rows = train_rows(args.batch * (args.warmup + args.steps), args.seq, min(shape["vocab_size"], 4096), seed=0)
    trainer = trainer_cls(model=model, args=config, train_dataset=rows, processing_class=tokenizer)
    timer = Timer()
    trainer.add_callback(timer)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    timed = timer.times[args.warmup :]
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
    metrics = [h for h in trainer.state.log_history if "agl/kl_measured" in h]
    del trainer, model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return {
        "agl": agl, "mean_step_seconds": statistics.fmean(timed), "steps": len(timed), "run_seconds": round(seconds, 2),
        "peak_memory_gib": peak, "meter_readings_logged": len(metrics),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama on the CPU (the test; no GPU needed)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (a multiple of 10)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.steps % 10:
        print(
            f"gpu check: --steps {args.steps}: give a multiple of 10 (the meter's and anchor's interval)",
            file=sys.stderr,
        )
        return 2
    import torch

    from agl_trl.fisher import FisherSettings, estimate_fisher
    from agl_trl.fisher.probe import load_probe_records
    from agl_trl.models import tiny_tokenizer

    args.device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if args.device == "cpu" and not args.tiny:
        print("gpu check: no GPU here; run with --tiny for the CPU smoke run", file=sys.stderr)
        return 2
    args.dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    shape = TINY if args.tiny else LLAMA_8B
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    probe = probe_file(tiny_tokenizer(vocab_size=min(shape["vocab_size"], 4096)), out / "probe.jsonl", seed=0)

    # 1. the Fisher estimate on 64 probe sequences, on the model the runs train (same seed: same weights)
    model = build_model(shape, args.device, args.dtype, seed=0)
    tokenizer = tiny_tokenizer(vocab_size=min(shape["vocab_size"], 4096))
    records = load_probe_records(str(probe))[:FISHER_SEQUENCES]
    if args.device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    artifact = estimate_fisher(model, tokenizer, records, FisherSettings(max_samples=FISHER_SEQUENCES))
    if args.device == "cuda":
        torch.cuda.synchronize()
    fisher_seconds = time.perf_counter() - started
    fisher_dir = out / "fisher"
    artifact.save(fisher_dir)
    del model, artifact
    if args.device == "cuda":
        torch.cuda.empty_cache()

    # 2-3. plain LoRA and AGL, alternating
    runs = []
    for index in range(args.rounds):
        for agl in (False, True) if index % 2 == 0 else (True, False):
            run = time_run(args, shape, agl, fisher_dir, probe, out / "runs")
            runs.append({**run, "round": index})
            print(f"round {index} {'agl' if agl else 'plain'}: {run['mean_step_seconds']:.3f} s/step", flush=True)
    ratios = []
    for index in range(args.rounds):
        by = {r["agl"]: r for r in runs if r["round"] == index}
        ratios.append(by[True]["mean_step_seconds"] / by[False]["mean_step_seconds"])
    result = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__, "shape": "tiny" if args.tiny else "llama-3.1-8b", "batch": args.batch,
        "tokens": args.seq, "dtype": str(args.dtype), "fisher_sequences": FISHER_SEQUENCES,
        "fisher_seconds": round(fisher_seconds, 2), "step_time_ratio": statistics.median(ratios),
        "ratios": ratios, "runs": runs,
    }  # fmt: skip
    (out / "check.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    peak = {agl: max((r["peak_memory_gib"] or 0) for r in runs if r["agl"] == agl) for agl in (False, True)}
    print(f"device: {result['device']}; {result['shape']} {args.batch} x {args.seq} tokens, {args.dtype}")
    print(f"Fisher on {FISHER_SEQUENCES} sequences: {fisher_seconds:.1f} s")
    print(f"peak memory GiB: plain {peak[False]:.1f}, agl {peak[True]:.1f}")
    print(
        f"step_time_ratio agl/plain = {result['step_time_ratio']:.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main())
