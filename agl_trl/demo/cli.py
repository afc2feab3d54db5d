"""``agl-trl demo``: the offline end-to-end AGL experiment (see docs/demo.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agl-trl demo",
        description="Align SmolLM2-135M-Instruct, fine-tune it on a benign task with plain LoRA and with AGL, "
        "and measure alignment drift on DriftCaps. Stages are cached: re-running resumes.",
    )
    parser.add_argument("--quick", action="store_true", help="same stages, smaller (about 5 minutes on 2 CPU cores)")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data sampling, LoRA init and training")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a setting, e.g. --set agl.lambda_align=2 --set task.steps=40 (repeatable; see report.json)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: all cores on an idle machine, 1 when the load average is at least the "
        "core count: oversubscribed OpenMP threads make every step several times slower)",
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

    cfg = quick_config(args.seed) if args.quick else default_config(args.seed)
    try:
        apply_overrides(cfg, args.overrides)
    except ValueError as exc:
        print(f"agl-trl demo: {exc}", file=sys.stderr)
        return 2
    report = run_demo(cfg, args.out, progress=not args.no_progress, threads=args.threads)
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
