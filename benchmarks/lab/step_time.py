"""Step time through the real trainer: plain LoRA and each candidate, side by side in one process.

What a user pays per optimizer step is what TRL's ``SFTTrainer`` (``AGLSFTTrainer`` for AGL) spends on it: the task's
forward and backward, the regulariser, and on their steps the KL meter's reading and the KL anchor's forward and
backward. This benchmark times exactly that, on the peers benchmark's set-up (the aligned SmolLM2, its Fisher
artifact and probe, each method as the peers runs train it: :func:`benchmarks.lab.registry.method_training`).

Protocol. For each shape (``B x T``: B sequences of exactly T tokens, the task rows padded to T), ``rounds`` rounds;
in each round every method trains ``warmup + steps`` optimizer steps, in an order that reverses every round. A
run's step time is the mean of its steps after the warm-up: the meter's and the anchor's steps are in that mean,
so ``steps`` is a multiple of their interval (10) and the cost is amortised as in training. A method's ratio in a
round is its step time over the same round's plain LoRA's; the result is the median ratio over rounds, with the
range. Start-up (loading the Fisher, tokenising the probe, the meter's first reading) is outside the steps and
timed by ``benchmarks/startup.py``.

Rows land one run at a time in ``<out>/<precision>/trainer/rows.jsonl`` and are committed under
``docs/results/step_time/<precision>/trainer.jsonl`` (:func:`benchmarks.lab.records.sync_results`): a cut run
resumes, and the fold rule (:mod:`benchmarks.lab.peers_folds`) reads its cost criterion from the committed rows.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.lab.records import RESULTS_DIR, sync_results

RECORD_DIR = RESULTS_DIR / "step_time"
RUN_NAME = "trainer"  # the record's file name: <RECORD_DIR>/<precision>/trainer.jsonl
ROWS_FILE = "rows.jsonl"
SHAPES = ((4, 128), (8, 256))  # the two targets; 8 x 256 decides the fold rule's cost criterion
COST_SHAPE = (8, 256)
WARMUP = 2


@dataclass(frozen=True)
class Ratio:
    """A method's step time over plain LoRA's at one shape: the median over rounds, the range, and the rounds."""

    method: str
    strength: float | None
    shape: tuple[int, int]
    median: float
    low: float
    high: float
    rounds: int
    plain_seconds: float  # plain LoRA's median step time at this shape


def parse_shape(text: str) -> tuple[int, int]:
    """``"8x256"`` -> ``(8, 256)``."""
    batch, sep, tokens = text.lower().partition("x")
    if not sep or not batch.strip().isdigit() or not tokens.strip().isdigit():
        raise ValueError(f"shape {text!r}: expected BATCHxTOKENS, e.g. 8x256")
    return int(batch), int(tokens)


def _key(row: dict[str, Any]) -> tuple:
    return tuple(row["shape"]), row["round"], row["method"], row.get("strength")


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def ratios(rows: Sequence[dict[str, Any]]) -> list[Ratio]:
    """Each (method, strength, shape)'s :class:`Ratio` over the rounds that have both it and plain LoRA."""
    plain = {(tuple(r["shape"]), r["round"]): r["mean_step_seconds"] for r in rows if r["method"] == "plain"}
    grouped: dict[tuple, list[float]] = {}
    for row in rows:
        if row["method"] == "plain" or (tuple(row["shape"]), row["round"]) not in plain:
            continue
        base = plain[tuple(row["shape"]), row["round"]]
        key = (row["method"], row.get("strength"), tuple(row["shape"]))
        grouped.setdefault(key, []).append(row["mean_step_seconds"] / base)
    out = []
    for (method, strength, shape), values in grouped.items():
        base = statistics.median(v for (s, _), v in plain.items() if s == shape)
        out.append(
            Ratio(method, strength, shape, statistics.median(values), min(values), max(values), len(values), base)
        )
    return out


def cost_ratios(precision: str, record: Path = RECORD_DIR) -> dict[tuple[str, float | None], float]:
    """(method, strength) -> median step-time ratio to plain LoRA at :data:`COST_SHAPE`, from the committed rows of
    ``precision`` (empty when none)."""
    rows = read_rows(record / precision / f"{RUN_NAME}.jsonl")
    return {(r.method, r.strength): r.median for r in ratios(rows) if r.shape == COST_SHAPE}


def time_run(
    cfg: Any, shared: Any, scratch: Path, method: str, strength: float | None, shape: tuple[int, int], steps: int
) -> dict[str, Any]:
    """Train ``method`` for ``WARMUP + steps`` steps at ``shape`` through the real trainer; its timing row."""
    from agl_trl.experiments import train_lora
    from agl_trl.models import load_pretrained
    from benchmarks.lab.registry import method_training

    batch, tokens = shape
    model, tokenizer = load_pretrained(shared.aligned_dir)
    model.train()
    rows, kwargs = method_training(cfg, shared, method, strength, cfg.sweep_seed)
    started = time.perf_counter()
    trained, record = train_lora(
        model, tokenizer, rows, scratch, lora=cfg.demo.lora, seed=cfg.sweep_seed, steps=WARMUP + steps,
        learning_rate=cfg.demo.task.learning_rate, batch_size=batch, progress=False,
        training_overrides={"max_length": tokens, "pad_to_multiple_of": tokens}, **kwargs,
    )  # fmt: skip
    del trained
    timed = record["step_seconds"][WARMUP:]
    return {
        "method": method, "strength": strength, "shape": list(shape), "steps": len(timed),
        "mean_step_seconds": statistics.fmean(timed), "step_seconds": timed,
        "run_seconds": round(time.perf_counter() - started, 2), "precision": record["precision"],
        "threads": record["threads"], "meter_readings": len((record.get("agl_curves") or {}).get("kl_measured", [])),
    }  # fmt: skip


def run_step_time(
    cfg: Any,
    root: Path,
    methods: Sequence[tuple[str, float | None]],
    shapes: Sequence[tuple[int, int]] = SHAPES,
    rounds: int = 3,
    steps: int = 20,
    progress: bool = True,
    record: Path | None = None,
    loader: Any = None,
) -> list[dict[str, Any]]:
    """Every missing (shape, round, method) row of the protocol above, appended to ``<root>/trainer/rows.jsonl``;
    returns all rows. ``record``: the committed copy kept in step (:func:`sync_results`); ``loader``: the
    base model's loader (the tiny test model; default SmolLM2)."""
    from agl_trl.precision import hardware_summary, load_average, use_bf16
    from benchmarks.lab.peers import prepare_shared

    if steps <= 0 or steps % 10:
        raise ValueError(f"steps={steps}: give a positive multiple of 10, the meter's and the anchor's interval")
    if ("plain", None) not in methods:
        methods = [("plain", None), *methods]
    run_dir = root / RUN_NAME
    path = run_dir / ROWS_FILE
    if record is not None:
        sync_results(root, record, [RUN_NAME], ROWS_FILE)
    rows = read_rows(path)
    done = {_key(r) for r in rows}
    environment = hardware_summary(use_bf16("auto", on_cpu=True))
    shared = None
    try:
        for shape in shapes:
            for index in range(rounds):
                order = list(methods) if index % 2 == 0 else list(reversed(methods))
                for method, strength in order:
                    if (tuple(shape), index, method, strength) in done:
                        continue
                    if shared is None:
                        shared = prepare_shared(cfg, root, loader, progress)
                    print(f"step time: {shape[0]}x{shape[1]} round {index} {method} {strength}", flush=True)
                    row = time_run(cfg, shared, run_dir / "scratch", method, strength, tuple(shape), steps)
                    row |= {"round": index, "environment": {**environment, "load_average": load_average()}}
                    run_dir.mkdir(parents=True, exist_ok=True)
                    with path.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(row) + "\n")
                    rows.append(row)
                    print(f"  mean step {row['mean_step_seconds']:.3f} s over {row['steps']} steps", flush=True)
    finally:
        if record is not None:
            sync_results(root, record, [RUN_NAME], ROWS_FILE)
    return rows


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The ratios as Markdown lines, one per (method, strength), one column per shape."""
    found = ratios(rows)
    if not found:
        return ["(no timing rows yet: python benchmarks/trainer_step_time.py)"]
    shapes = sorted({r.shape for r in found})
    lines = [
        "| method | " + " | ".join(f"{b} x {t}: ratio (range, rounds)" for b, t in shapes) + " |",
        "|---" * (len(shapes) + 1) + "|",
    ]
    plain = {r.shape: r.plain_seconds for r in found}
    lines.append("| plain LoRA (s/step) | " + " | ".join(f"{plain[s]:.3f} s" for s in shapes) + " |")
    for method, strength in dict.fromkeys((r.method, r.strength) for r in found):
        cells = []
        for shape in shapes:
            r = next((x for x in found if (x.method, x.strength, x.shape) == (method, strength, shape)), None)
            cells.append("-" if r is None else f"{r.median:.3f}x ({r.low:.3f}-{r.high:.3f}, {r.rounds})")
        label = method if strength is None else f"{method} {strength:g}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None, candidates: Sequence[tuple[str, float | None]] = ()) -> int:
    """The command line; ``candidates``: the methods timed when ``--methods`` is not given (the driver passes the
    fold protocol's, :data:`benchmarks.lab.peers_folds.CANDIDATES`)."""
    import argparse
    import sys

    from benchmarks.lab.peers_config import build_config
    from benchmarks.lab.records import training_precision

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/step_time", help="root folder (one sub-folder per precision)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")
    parser.add_argument("--shapes", default=",".join(f"{b}x{t}" for b, t in SHAPES), help="BATCHxTOKENS,...")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (a multiple of 10)")
    parser.add_argument(
        "--methods", default=None, help="comma-separated METHOD[:STRENGTH] (default: every fold candidate)"
    )
    parser.add_argument("--tiny", action="store_true", help="smoke run on a random tiny Llama (no SmolLM2)")
    parser.add_argument("--report", action="store_true", help="print the table from the committed rows only")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        shapes = [parse_shape(s) for s in args.shapes.split(",") if s.strip()]
        methods = list(candidates)
        if args.methods:
            methods = []
            for item in args.methods.split(","):
                name, _, value = item.strip().partition(":")
                methods.append((name, float(value) if value else None))
    except ValueError as exc:
        print(f"step time: {exc}", file=sys.stderr)
        return 2
    precision = training_precision()
    root, record = Path(args.out) / precision, None if args.tiny else RECORD_DIR / precision
    loader = None
    if args.tiny:
        from benchmarks.lab.peers_config import tiny_loader as loader

    if not args.report:
        import torch

        from agl_trl.precision import default_threads, describe, hardware_summary, use_bf16

        torch.set_num_threads(args.threads or default_threads())
        print(describe(hardware_summary(use_bf16("auto", on_cpu=True))), flush=True)
        cfg = build_config("tiny" if args.tiny else "full", None, None, [])
        rows = run_step_time(
            cfg, root, list(methods), shapes, args.rounds, args.steps, not args.no_progress, record, loader
        )
    else:
        if record is not None:
            sync_results(root, record, [RUN_NAME], ROWS_FILE)
        rows = read_rows(root / RUN_NAME / ROWS_FILE)
    env = rows[0]["environment"] if rows else {}
    flags = ", ".join(env.get("cpu_fast_bf16_flags") or []) or "none"
    print(f"step time through the real trainer: {precision}, {env.get('torch_threads', '?')} threads, "
          f"{env.get('cpu_model', '?')} (fast-bf16 flags: {flags})")  # fmt: skip
    print("\n".join(table(rows)))
    return 0


__all__ = [
    "COST_SHAPE",
    "RECORD_DIR",
    "SHAPES",
    "Ratio",
    "cost_ratios",
    "main",
    "parse_shape",
    "ratios",
    "run_step_time",
    "table",
    "time_run",
]
