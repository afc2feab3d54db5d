"""``agl-trl demo``: the offline end-to-end AGL experiment (see docs/demo.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agl_trl.precision import PRECISION_CHOICES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agl-trl demo",
        description="Restore the aligned SmolLM2-135M-Instruct (the shipped set-up), fine-tune it on a benign task "
        "with plain LoRA and with AGL, and measure alignment drift on DriftCaps. Stages are cached: re-running "
        "resumes.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="same stages, smaller (about 8 minutes on 2 CPU cores)")
    size.add_argument(
        "--full",
        action="store_true",
        help="the peers protocol's sizes: 160-step fine-tunes, KL on every test prompt (about 35 minutes on 2 cores)",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of data sampling, LoRA init and training (the shipped set-up is seed 0: another seed builds its own)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a setting, e.g. --set agl.lambda_align=2 --set task.steps=40 (repeatable; see report.json)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: every core this process may use)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="training precision: auto (default) = bf16 only on a CPU with AVX512-BF16/AMX, else fp32 (bf16 is "
        "emulated and ~100x slower without them); fp32 or bf16 force one",
    )
    parser.add_argument(
        "--rebuild-setup",
        action="store_true",
        help="build the aligned set-up (safety data, safety LoRA, its answers, its Fisher) here instead of "
        "restoring the shipped one (33 minutes on 2 CPU cores; a new --out folder; see agl_trl/setups/)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from agl_trl.demo.pipeline import run_demo
    from agl_trl.demo.report import summary_table
    from agl_trl.experiments import apply_overrides, default_config, quick_config
    from agl_trl.experiments.config import demo_config

    cfg = (quick_config if args.quick else default_config if args.full else demo_config)(args.seed)
    try:
        apply_overrides(cfg, args.overrides)
    except ValueError as exc:
        print(f"agl-trl demo: {exc}", file=sys.stderr)
        return 2
    from agl_trl.experiments.shipped import DEFAULT_SETUP

    report = run_demo(
        cfg, args.out, progress=not args.no_progress, threads=args.threads, precision=args.precision,
        shipped=None if args.rebuild_setup else DEFAULT_SETUP,
    )  # fmt: skip
    print()
    print(summary_table(report))
    comp = report.get("comparison") or {}
    if comp:
        ratio = comp.get("step_time_ratio")
        red = comp.get("drift_reduction")
        print(
            f"\ndrift reduction (AGL vs LoRA): {'-' if red is None else f'{100 * red:.0f}%'}, "
            f"task gap {comp['task_gap_points']:+.1f} pts, "
            f"step-time ratio {'-' if ratio is None else f'{ratio:.2f}'}; "
            f"stages took {report['stage_seconds_total']:.0f} s in total. Report: {args.out}/report.md"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
