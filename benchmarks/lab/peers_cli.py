"""The command line of ``benchmarks/peers.py``: the peers protocol (:mod:`benchmarks.lab.peers`) with its sizes,
methods, extra points, settings and records chosen from the arguments."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.lab.peers import RECORD_DIR, RESULTS_FILE, run_benchmark
from benchmarks.lab.peers_config import build_config, parse_point, tiny_loader
from benchmarks.lab.records import training_precision
from benchmarks.lab.registry import ALL_METHODS

DESCRIPTION = "AGL against the peers a user would pick instead, under one fair protocol (docs/peers.md)."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true",
        help="the demo's --quick sizes, 7 methods, 2 strengths each, 2 seeds (indicative numbers only)",
    )  # fmt: skip
    mode.add_argument("--tiny", action="store_true", help="smoke run on a random tiny Llama (no SmolLM2)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/peers, runs/peers-quick, ...)")
    parser.add_argument(
        "--demo-dir", default=None, help="set-up stages folder to reuse (an `agl-trl demo --out` folder with the "
        "same settings; default <out>/demo)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of test seeds (100..100+n-1: fresh, never a validation seed)"
    )
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(ALL_METHODS)}")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many new rows (resume later)")
    parser.add_argument(
        "--point", action="append", default=[], metavar="SPLIT:METHOD:STRENGTH:SEED",
        help="an extra run, done first (validation:agl_no_collision:0.03:1; STRENGTH none for plain); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--points-only", action="store_true",
        help="run the --point runs and nothing else (without it the protocol's sweeps and test runs follow them)",
    )  # fmt: skip
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="experiment setting (task.steps=40), peer setting (peers.kl_batch_size=8), a method's grid "
        "(peers.grid.l2=[0.01,0.1]) or the selection rule's task tolerance (peers.max_task_drop=0.03); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--record", action="store_true",
        help="keep the rows in step with docs/results/peers_runs/<precision>/<out name>.jsonl (a fresh checkout resumes)",
    )  # fmt: skip
    parser.add_argument("--report", action="store_true", help="also write the report (docs/peers.md + plots)")
    parser.add_argument("--report-dir", default="docs", help="where --report writes peers.md and its plots")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def default_out(mode: str, model: str) -> str:
    """The output folder of ``mode`` without ``--out``: ``runs/peers``, ``runs/peers-quick``, ``runs/peers-tiny``; a
    model other than the default adds its name (``runs/peers-gemma3-270m``), so its set-up gets its own folder."""
    from agl_trl.model_sources import DEFAULT_MODEL_NAME

    base = {"tiny": "runs/peers-tiny", "quick": "runs/peers-quick", "full": "runs/peers"}[mode]
    return base if mode == "tiny" or model == DEFAULT_MODEL_NAME else f"{base}-{model}"


def main(argv: Sequence[str] | None = None, loader: Callable[[], tuple[Any, Any]] | None = None) -> int:
    """The command line of ``benchmarks/peers.py``; returns the exit status (2: bad settings or a mixed file)."""
    args = build_parser().parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    try:
        cfg = build_config(mode, args.seeds, methods, args.overrides)
        points = [parse_point(text) for text in args.point]
        if args.points_only:
            if not points:
                raise ValueError(
                    "--points-only without any --point: name the runs with --point SPLIT:METHOD:STRENGTH:SEED"
                )
            cfg.methods = []  # no sweep and no test phase after the points
    except ValueError as exc:
        print(f"peers: {exc}", file=sys.stderr)
        return 2
    if mode == "tiny" and loader is None:
        loader = tiny_loader

    out = Path(args.out or default_out(mode, cfg.demo.model))
    try:
        rows = run_benchmark(
            cfg, out, loader=loader, progress=not args.no_progress, demo_dir=args.demo_dir, threads=args.threads,
            max_runs=args.max_runs, points=points, record=RECORD_DIR / training_precision() if args.record else None,
        )  # fmt: skip
    except ValueError as exc:
        print(f"peers: {exc}", file=sys.stderr)
        return 2
    if args.report:
        from benchmarks.lab.peers_report import write_report

        write_report(rows, Path(args.report_dir), source=out / RESULTS_FILE, max_task_drop=cfg.max_task_drop)
    print(f"peers: {len(rows)} rows in {out / RESULTS_FILE}")
    return 0


__all__ = ["DESCRIPTION", "build_parser", "default_out", "main"]
