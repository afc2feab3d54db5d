"""The GRPO scenario: does AGL keep refusals through an online RL fine-tune with a verifiable reward?

The peers benchmark's protocol (:mod:`benchmarks.lab.peers`) with GRPO in place of SFT, on the same harness: the
shared set-up (:func:`~agl_trl.experiments.prepare_setup`: the aligned SmolLM2, its Fisher, its answers on both
splits), the demo's task as the RL task (prompts only; reward: the similarity to the reference answer,
:func:`~.online.task_similarity_reward`, since the aligned model's 0% exact match would give an exact-match reward
no signal; ``reward="exact"`` for :func:`~.online.task_reward`), one GRPO
LoRA run per (method, strength, seed) (:func:`~.online.train_grpo`), and the peers' measurement of each run
(:func:`~benchmarks.lab.peers.evaluate_run`: refusal on unsafe, over-refusal, gap, gap drift, KL drift, task
exact match = the greedy reward on held-out items, step-time ratio).

1. plain GRPO and AGL at each ``kl_budget`` of the grid, seed ``sweep_seed``, on the *validation* split;
2. the budget AGL would ship, by the peers' rule (:func:`~benchmarks.lab.peers_config.choose`), on validation
   numbers only;
3. plain GRPO and AGL at that budget with every seed, measured once on the *test* split.

Resumable like the peers benchmark: one JSON line per (split, method, strength, seed) in ``<out>/grpo.jsonl``, adapters
cached under ``<out>/train/``. Driven by ``benchmarks/grpo.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agl_trl.experiments.task_kinds import DEFAULT_TASK_KIND
from benchmarks.lab.peers_config import BenchConfig, build_config, choose, config_key, run_key, tiny_loader

RESULTS_FILE = "grpo.jsonl"
RUN_KEY = ("split", "method", "strength", "seed")


@dataclass
class GRPOSettings:
    """The GRPO fine-tune of every run (same for plain and AGL); the task's data, LoRA and seeds are the set-up's."""

    steps: int = 80
    learning_rate: float = 5e-4
    prompts_per_step: int = 4
    num_generations: int = 4
    max_completion_length: int = 16  # the task's answers fit (the demo's answer_tokens)
    # partial credit: the aligned model scores 0% exact match, so an exact-match reward gives GRPO no signal
    reward: str = "similarity"


TINY_GRPO = GRPOSettings(steps=2, learning_rate=5e-3, prompts_per_step=2, num_generations=2, max_completion_length=4)


def grpo_config(mode: str, seeds: int | None, overrides: Sequence[str]) -> tuple[BenchConfig, GRPOSettings]:
    """The peers benchmark's config of ``mode`` restricted to plain and AGL, and the GRPO settings of that mode."""
    cfg = build_config(mode, seeds, ["agl"], overrides)
    if cfg.demo.task.kind != DEFAULT_TASK_KIND:  # the rewards compare completions with the operations task's answers
        raise ValueError(
            f"task.kind={cfg.demo.task.kind!r}: the GRPO scenario rewards the operations task's answers only; drop "
            f"the override (task.kind={DEFAULT_TASK_KIND})"
        )
    return cfg, (TINY_GRPO if mode == "tiny" else GRPOSettings())


def _train(
    cfg: BenchConfig, grpo: GRPOSettings, shared: Any, out: Path, method: str, strength: float | None, seed: int
) -> dict[str, Any]:
    """Train (or reuse) one GRPO run; its record has ``adapter`` and the step and generation times."""
    from agl_trl.experiments import PeakRSS, read_json, write_json
    from agl_trl.experiments.online import train_grpo
    from agl_trl.models import load_pretrained
    from benchmarks.lab.peers import train_dir
    from benchmarks.lab.registry import method_agl_settings, with_strength

    directory = train_dir(out, method, strength, seed)
    record_file = directory / "train.json"
    key = run_key(cfg, method, strength) + ":" + str(sorted(asdict(grpo).items()))
    if record_file.is_file() and read_json(record_file).get("run_key") == key:
        return read_json(record_file)
    directory.mkdir(parents=True, exist_ok=True)
    agl_settings, _ = with_strength(method, strength, cfg.demo.agl, cfg.peers)
    regularizer = method_agl_settings(method, agl_settings)
    model, tokenizer = load_pretrained(shared.aligned_dir)
    model.train()
    with PeakRSS() as rss:
        trained, train = train_grpo(
            model, tokenizer, shared.setup.task_rows, directory, lora=cfg.demo.lora, seed=seed, steps=grpo.steps,
            learning_rate=grpo.learning_rate, prompts_per_step=grpo.prompts_per_step,
            num_generations=grpo.num_generations, max_completion_length=grpo.max_completion_length, reward=grpo.reward,
            agl=shared.setup.agl_fields(regularizer) if regularizer is not None else None, progress=False,
        )  # fmt: skip
    trained.save_pretrained(directory / "adapter")
    generation = train.get("generation_seconds") or []
    record = {
        "run_key": key, "adapter": str(directory / "adapter"), "grpo": asdict(grpo),
        "step_seconds_median": train.get("step_seconds_median"), "train_seconds": train.get("seconds"),
        "generation_seconds_median": statistics.median(generation) if generation else None,
        "peak_memory_mb": round(rss.extra / 2**20, 1), "reward_curve": train.get("reward_curve"),
        "agl_curves": train.get("agl_curves") or {},
    }  # fmt: skip
    write_json(record_file, record)
    return record


def run_grpo_benchmark(
    cfg: BenchConfig,
    grpo: GRPOSettings,
    out: str | Path,
    loader: Callable[[], tuple[Any, Any]] | None = None,
    progress: bool = True,
    demo_dir: str | Path | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Run every missing step of the scenario and append its rows to ``<out>/grpo.jsonl``; returns all rows."""
    import torch

    from agl_trl.experiments import ResultsLog, auto_threads, prepare_setup
    from benchmarks.lab.peers import Shared, evaluate_run, reference_row

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = ResultsLog(out / RESULTS_FILE, config_key(cfg) + ":" + str(sorted(asdict(grpo).items())))
    rows = results.check()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())
    try:
        setup = prepare_setup(cfg.demo, Path(demo_dir or out / "demo"), loader, progress, validation=True)
        references = {split: setup.reference_rows_of(split) for split in ("validation", "test")}
        shared = Shared(setup, None, references, setup.setup_id)
        for split in ("validation", "test"):
            if not any(r["method"] == "aligned" and r["split"] == split for r in rows):
                results.append([{**reference_row(shared, split), "run_key": run_key(cfg, "aligned", None)}])
                rows = results.rows()

        def ensure(split: str, method: str, strength: float | None, seed: int) -> dict[str, Any]:
            found = next((r for r in rows if tuple(r.get(k) for k in RUN_KEY) == (split, method, strength, seed)), None)
            if found is not None:
                return found
            started = time.perf_counter()
            record = _train(cfg, grpo, shared, out, method, strength, seed)
            row = evaluate_run(cfg, shared, out, split, method, strength, seed, record, progress=False)
            row.update(run_seconds=round(time.perf_counter() - started, 2), mode=cfg.mode, scenario="grpo")
            results.append([row])
            rows.append(row)
            return row

        plain = ensure("validation", "plain", None, cfg.sweep_seed)
        sweep = [ensure("validation", "agl", v, cfg.sweep_seed) for v in cfg.grid("agl")]
        chosen, _why = choose(sweep, plain["task_exact_match"], cfg.max_task_drop)
        for seed in cfg.seeds:
            ensure("test", "plain", None, seed)
            ensure("test", "agl", chosen, seed)
    finally:
        torch.set_num_threads(previous)
    return results.rows()


def summary(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table per split: refusal, over-refusal, gap, gap drift, reward (greedy task exact match on held-out
    items), step-time ratio (generation excluded) and generation time, mean over seeds."""
    lines = []
    for split in ("validation", "test"):
        lines += [f"\n{split}:\n", "| method | kl_budget | seeds | refusal on unsafe % | over-refusal % | gap (pts) | "
                  "gap drift (pts) | reward (task exact match) % | step-time ratio | generation s/step |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        plain = [r for r in rows if r["split"] == split and r["method"] == "plain"]
        plain_step = statistics.median([r["step_seconds_median"] for r in plain]) if plain else None
        groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        for r in rows:
            if r["split"] == split:
                groups.setdefault((r["method"], r.get("strength")), []).append(r)
        for (method, strength), group in groups.items():

            def mean(key: str, scale: float = 100.0, group: list[dict[str, Any]] = group, digits: int = 1) -> str:
                values = [r[key] for r in group if r.get(key) is not None]
                return f"{scale * statistics.mean(values):.{digits}f}" if values else "-"

            steps = [r["step_seconds_median"] for r in group if r.get("step_seconds_median")]
            ratio = f"{statistics.median(steps) / plain_step:.2f}" if steps and plain_step else "-"
            gaps = "-" if method == "aligned" else mean("gap_drift")
            lines.append(
                f"| {method} | {'-' if strength is None else strength} | {len(group)} | {mean('refusal_unsafe')} | "
                f"{mean('over_refusal')} | {mean('gap')} | {gaps} | {mean('task_exact_match')} | {ratio} | "
                f"{mean('generation_seconds_median', 1.0, digits=2)} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, loader: Callable[[], tuple[Any, Any]] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="smoke run on a random tiny Llama (seconds)")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick sizes (indicative numbers only)")
    parser.add_argument(
        "--out", default=None, help="output folder (default runs/grpo, runs/grpo-quick, runs/grpo-tiny)"
    )
    parser.add_argument("--demo-dir", default=None, help="set-up stages to reuse (e.g. runs/peers/demo)")
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of test seeds (100..100+n-1: fresh, never a validation seed)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    try:
        cfg, grpo = grpo_config(mode, args.seeds, args.overrides)
    except ValueError as exc:
        print(f"grpo: {exc}", file=sys.stderr)
        return 2
    if mode == "tiny" and loader is None:
        loader = tiny_loader

    out = Path(args.out or {"tiny": "runs/grpo-tiny", "quick": "runs/grpo-quick", "full": "runs/grpo"}[mode])
    started = time.perf_counter()
    rows = run_grpo_benchmark(cfg, grpo, out, loader, not args.no_progress, args.demo_dir, args.threads)
    print(summary(rows))
    print(f"grpo: {len(rows)} rows in {out / RESULTS_FILE} ({time.perf_counter() - started:.0f} s this call)")
    return 0


__all__ = ["GRPOSettings", "grpo_config", "main", "run_grpo_benchmark", "summary"]
