"""``agl-trl drift``: evaluate a model and its adapters on DriftCaps (or another prompt set) and write a report.

Example::

    agl-trl drift --model default --adapter lora=runs/lora --adapter agl=runs/agl --limit 20 --out runs/drift

writes ``drift.json``, ``drift.md``, ``refusal_by_category.png`` and ``drift_overview.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agl-trl drift",
        description="Measure alignment drift (refusal rate, over-refusal, KL) of a model and its LoRA adapters.",
    )
    p.add_argument(
        "--model",
        default="default",
        help="base model: local directory, hub id, or 'default' (offline SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a PEFT adapter to evaluate on top of --model (repeatable); name 'lora' is the default "
        "baseline for drift reduction",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="what drift is measured against: 'base' (default: --model without adapters), an adapter "
        "NAME, or another model directory / id",
    )
    p.add_argument("--baseline", default=None, help="model name used as drift-reduction denominator (default: lora)")
    p.add_argument(
        "--dataset",
        default="driftcaps",
        help="'driftcaps', a public set (jailbreakbench, xstest, advbench, harmbench, strongreject) or a "
        "local .jsonl/.csv with a prompt column",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["probe", "validation", "test", "all"],
        help="DriftCaps split: 'test' (default; held out, for reported numbers), 'validation' (for choosing "
        "settings), 'probe' (used for Fisher estimation and alignment) or 'all'",
    )
    p.add_argument("--categories", nargs="*", default=None, help="only these categories")
    p.add_argument("--limit", type=int, default=None, help="at most N prompts per category")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--judge", default="keyword", help="'keyword' or a local guard-model directory")
    p.add_argument(
        "--judge-label-map",
        default=None,
        help='JSON mapping of judge labels/verdicts to refusal, e.g. \'{"safe": true, "unsafe": false}\'',
    )
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--no-kl", action="store_true", help="skip the judge-free KL drift")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--out", default="runs/drift", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _adapters(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, directory = pair.partition("=")
        if not sep or not name or not directory:
            raise ValueError(f"--adapter expects NAME=DIR, got {pair!r}")
        if name in out:
            raise ValueError(f"--adapter name {name!r} given twice")
        out[name] = directory
    return out


def main(argv: list[str] | None = None) -> int:
    """Run ``agl-trl drift``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from .judges import ClassifierJudge
    from .report import write_report
    from .runner import evaluate_models

    try:
        adapters = _adapters(args.adapter)
        judge = args.judge
        if judge != "keyword":
            mapping = json.loads(args.judge_label_map) if args.judge_label_map else None
            judge = ClassifierJudge(judge, label_mapping=mapping, progress=not args.quiet)
        results = evaluate_models(
            model=args.model,
            adapters=adapters,
            reference=args.reference,
            baseline=args.baseline,
            dataset=args.dataset,
            split=args.split,
            categories=args.categories,
            limit_per_category=args.limit,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            judge=judge,
            compute_kl=not args.no_kl,
            system_prompt=args.system_prompt,
            dtype=DTYPES[args.dtype],
            progress=not args.quiet,
        )
        paths = write_report(results, args.out, plots=not args.no_plots)
    except (FileNotFoundError, ValueError, OSError, RuntimeError, ImportError) as exc:
        print(f"agl-trl drift: error: {exc}", file=sys.stderr)
        return 2
    print(Path(paths["markdown"]).read_text(encoding="utf-8"))
    print("wrote: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
