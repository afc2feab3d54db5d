"""AGL's start-up cost beside one training step: what two YAML lines cost before step 1.

SmolLM2-135M-Instruct (offline GGUF), LoRA r=16 on every linear layer, an ``AGLSFTTrainer`` at AGL's defaults
(``agl_probe_dataset: driftcaps``: 256 probe prompts for the Fisher, 16 held out for the KL meter, the aligned
model's answers of at most 64 tokens generated once), fp32. Three start-ups, each timed by phase (answers generated,
Fisher estimate, the rest: loading the probe, binding, the meter's batches), then the median training step after it
(batch 8 of the shipped tiny SFT rows, no meter or anchor step among the timed ones):

1. ``fresh``: a new ``output_dir`` (what a user's first run pays);
2. ``reused``: the same ``output_dir`` again (a resumed or repeated run: the artifact and its stored answers);
3. ``small probe``: a new ``output_dir`` with ``--small-samples`` records and ``--small-tokens`` answer tokens (the
   settings that trade the estimate's sample size for start-up time).

Last lines: ``startup/step <name> = X`` (start-up seconds over one step's seconds).

    python benchmarks/startup.py [--threads 2] [--steps 4] [--small-samples 64] [--small-tokens 32] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _setup import load_model_with_lora, use_threads

ROOT = Path(__file__).resolve().parents[1]


def timed_phases() -> dict[str, float]:
    """Wrap the two expensive phases of start-up so that each call adds its seconds to the returned dict."""
    import agl_trl.fisher.resolve as resolve
    from agl_trl.fisher.answers import ProbeAnswers

    seconds: dict[str, float] = defaultdict(float)

    def timing(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start

        return wrapper

    ProbeAnswers.generate = timing("answers", ProbeAnswers.generate)
    resolve.estimate_fisher = timing("fisher", resolve.estimate_fisher)
    return seconds


def run(name: str, output_dir: Path, steps: int, seconds: dict[str, float], **agl) -> dict[str, float]:
    """One start-up (timed by phase) and ``steps`` training steps after it (median step time)."""
    from datasets import Dataset
    from transformers import TrainerCallback

    from agl_trl.config import AGLSFTConfig
    from agl_trl.trainers import AGLSFTTrainer
    from agl_trl.trainers.install import initialise_agl
    from agl_trl.utils import read_jsonl

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.started)

    model, tokenizer, source = load_model_with_lora(rank=16)
    rows = read_jsonl(ROOT / "recipes" / "data" / "tiny-sft.jsonl")
    config = AGLSFTConfig(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=8, max_length=256, learning_rate=1e-4,
        logging_steps=steps, save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0,
        dataloader_num_workers=0, disable_tqdm=True, agl_probe_dataset="driftcaps", **agl,
    )  # fmt: skip
    trainer = AGLSFTTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(rows * 4), processing_class=tokenizer
    )
    seconds.clear()
    start = time.perf_counter()
    initialise_agl(trainer)  # what on_train_begin runs: the whole start-up
    total = time.perf_counter() - start
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    step = statistics.median(timer.times[1:] or timer.times)  # the first step warms up
    result = {
        "startup": total,
        "answers": seconds.get("answers", 0.0),
        "fisher": seconds.get("fisher", 0.0),
        "step": step,
    }
    result["other"] = total - result["answers"] - result["fisher"]
    print(
        f"{name}: start-up {total:.1f} s (answers {result['answers']:.1f} s, Fisher estimate {result['fisher']:.1f} s, "
        f"other {result['other']:.1f} s); one step {step:.2f} s (median of {len(timer.times) - 1}); "
        f"source {trainer._agl.fisher_source}; model {source}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--steps", type=int, default=4, help="training steps after each start-up (< agl_kl_every)")
    parser.add_argument("--small-samples", type=int, default=64)
    parser.add_argument("--small-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    args.threads = use_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="agl-startup-"))
    seconds = timed_phases()
    results = {
        "fresh": run("fresh", out / "default", args.steps, seconds),
        "reused": run("reused", out / "default", args.steps, seconds),
        "small probe": run(
            f"small probe ({args.small_samples} records, {args.small_tokens} tokens)",
            out / "small",
            args.steps,
            seconds,
            agl_fisher_max_samples=args.small_samples,
            agl_fisher_max_new_tokens=args.small_tokens,
        ),
    }
    for name, result in results.items():
        print(f"startup/step {name} = {result['startup'] / result['step']:.1f}", flush=True)


if __name__ == "__main__":
    main()
