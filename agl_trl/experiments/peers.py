"""AGL against its peers, its ablations, and a stress setting, on the experiments' shared set-up (docs/peers.md).

The shared stages come from :func:`~agl_trl.experiments.prepare_setup` (cached under ``<out>/demo``): the aligned
SmolLM2 (base + merged safety LoRA), its K-FAC Fisher artifact, and the aligned model's own answers on the DriftCaps
eval subset. On top of them, cached under ``<out>/shared``, what only the peers need
(:func:`~agl_trl.baselines.prepare_peer_artifacts`): a diagonal Fisher (EWC) on the same probe prompts, the
alignment directions V = W_aligned - W_base (Safe LoRA, AsFT) and the aligned model's answers to the probe prompts
(KL to reference). Every run is the experiments' task fine-tune (:func:`~agl_trl.experiments.train_lora`: same
data, steps, LR, batch; the seed sets the LoRA init and the data order) with one method of the registry
(:mod:`agl_trl.baselines.registry`), then the same measurement (:func:`~agl_trl.experiments.evaluate_generations`,
:func:`~agl_trl.experiments.kl_to_aligned`).

Resumable: one JSON line per finished (scenario, method, seed) in ``<out>/peers.jsonl``; a rerun skips those.
``--report`` (or ``benchmarks/peers_report.py``) turns the file into docs/peers.md and a Pareto plot.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agl_trl.baselines.registry import (
    ALL_METHODS,
    PeerArtifacts,
    make_penalty,
    method_agl_settings,
    method_settings,
    prepare_peer_artifacts,
    safe_lora_adapter,
)
from agl_trl.experiments.peers_config import (
    STRESS_METHODS,
    BenchConfig,
    build_config,
    config_key,
    runs_of,
    scenario_demo,
)
from agl_trl.experiments.setup import ModelLoader, Setup

RESULTS_FILE = "peers.jsonl"


@dataclass
class Shared:
    """What every run reads: the shared set-up, the peers' artifacts, the aligned model's eval answers and metrics."""

    setup: Setup
    artifacts: PeerArtifacts
    reference_rows: list[dict[str, Any]]
    aligned_metrics: dict[str, Any]

    @property
    def aligned_dir(self) -> Path:
        return self.setup.aligned_dir


def _log(message: str) -> None:
    print(message, flush=True)


def prepare_shared(
    cfg: BenchConfig, out: Path, loader: ModelLoader | None, progress: bool, demo_dir: Path | None = None
) -> Shared:
    """The shared set-up (under ``demo_dir``, default ``<out>/demo``: an ``agl-trl demo --out`` folder with the same
    settings is reused) and the peers' artifacts under ``<out>/shared`` (cleared when the settings change)."""
    import shutil

    from agl_trl.evaluation.report import jsonable
    from agl_trl.experiments import default_loader, lora_config, prepare_setup, probe_prompts, response_metrics
    from agl_trl.experiments.log import settings_key

    c = cfg.demo
    setup = prepare_setup(c, demo_dir or out / "demo", loader, progress, log=_log)
    shared = out / "shared"
    key = settings_key({"demo": c.to_dict(), "rank": cfg.peers.direction_rank})
    key_file = shared / "key.json"
    if not key_file.is_file() or key_file.read_text() != key:  # other (or unknown) settings: start this folder afresh
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir(parents=True)
        key_file.write_text(key)
    artifacts = prepare_peer_artifacts(
        shared, setup.aligned_dir, loader or default_loader, probe_prompts(c), c.fisher, lora_config(c.lora),
        direction_rank=cfg.peers.direction_rank, generation_batch_size=c.eval.batch_size, seed=c.seed,
        progress=progress, log=_log,
    )  # fmt: skip
    reference_rows = setup.reference_rows
    return Shared(setup, artifacts, reference_rows, jsonable(response_metrics(reference_rows)))


def run_one(cfg: BenchConfig, shared: Shared, out: Path, scenario: str, method: str, seed: int, progress: bool) -> dict:
    """Train (or project, for Safe LoRA), evaluate, and return the result row of one (scenario, method, seed)."""
    from agl_trl.evaluation.report import jsonable
    from agl_trl.experiments import (
        PeakRSS,
        agl_fields,
        evaluate_generations,
        kl_to_aligned,
        read_json,
        response_metrics,
        train_lora,
    )
    from agl_trl.experiments.measure import RESPONSES_FILE
    from agl_trl.models import load_pretrained

    demo = scenario_demo(cfg, scenario, seed)
    run_dir = out / "runs" / scenario / method / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    adapter = run_dir / "adapter"
    record: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    peak_bytes: int | None = None
    if method == "safe_lora":
        plain_adapter = out / "runs" / scenario / "plain" / f"seed{seed}" / "adapter"
        extra = safe_lora_adapter(shared.artifacts, plain_adapter, adapter, cfg.peers)
    else:
        model, tokenizer = load_pretrained(shared.aligned_dir)
        model.train()
        kwargs: dict[str, Any] = {}
        regularizer = method_agl_settings(method, cfg.demo.agl)
        if regularizer is not None:
            kwargs["agl"] = agl_fields(regularizer, shared.setup.fisher_dir)
        elif method != "plain":
            kwargs["penalty"] = make_penalty(
                method, cfg.peers, shared.artifacts, lambda_align=cfg.demo.agl.lambda_align, seed=cfg.demo.seed
            )
        with PeakRSS() as rss:  # the experiments train on CPU (use_cpu=True): resident memory is the training memory
            trained, record = train_lora(
                model, tokenizer, shared.setup.task_rows, run_dir, lora=demo.lora, seed=demo.seed,
                steps=demo.task.steps, learning_rate=demo.task.learning_rate, batch_size=demo.task.batch_size,
                progress=progress, **kwargs,
            )  # fmt: skip
        peak_bytes = rss.extra
        trained.save_pretrained(adapter)
        del trained
    model, tokenizer = load_pretrained(shared.aligned_dir, adapter)
    setup = shared.setup
    gen = evaluate_generations(
        model, tokenizer, setup.eval_subset, setup.task_eval, demo.eval, demo.task.answer_tokens, run_dir, method,
        progress,
    )  # fmt: skip
    kl = kl_to_aligned(model, tokenizer, shared.reference_rows, demo.eval.batch_size, progress)
    overall = jsonable(response_metrics(read_json(run_dir / RESPONSES_FILE))["overall"])
    aligned = shared.aligned_metrics["overall"]
    aligned_refusal = aligned["refusal_unsafe"]["rate"]
    return {
        "scenario": scenario,
        "method": method,
        "seed": seed,
        "refusal_unsafe": overall["refusal_unsafe"]["rate"],
        "over_refusal": overall["over_refusal"]["rate"],
        "incoherent": overall["incoherent"]["rate"],
        "aligned_refusal_unsafe": aligned_refusal,
        "aligned_over_refusal": aligned["over_refusal"]["rate"],
        "drift_points": 100.0 * (aligned_refusal - overall["refusal_unsafe"]["rate"]),
        "n_unsafe": overall["refusal_unsafe"]["n"],
        "n_safe": overall["over_refusal"]["n"],
        "kl_drift": kl["mean"],
        "kl_drift_by_label": kl["by_label"],
        "task_exact_match": gen["task"]["exact_match"],
        "task_n": gen["task"]["n"],
        "judge": gen["judge"],
        "step_seconds_median": record.get("step_seconds_median"),
        "train_seconds": record.get("seconds"),
        "peak_memory_mb": None if peak_bytes is None else round(peak_bytes / 2**20, 1),
        "final_train_loss": record.get("final_train_loss"),
        # the last logged value of each agl/* metric (AGL terms or the baseline penalty's): proof that it ran
        "penalty_metrics": {k: v[-1][1] for k, v in (record.get("agl_curves") or {}).items() if v},
        "steps": demo.task.steps,
        "learning_rate": demo.task.learning_rate,
        "settings": method_settings(method, cfg.demo.agl, cfg.peers),
        **extra,
    }


def _load_average() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def run_benchmark(
    cfg: BenchConfig,
    out: str | Path,
    loader: ModelLoader | None = None,
    progress: bool = True,
    demo_dir: str | Path | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Run every missing (scenario, method, seed) and append its row to ``<out>/peers.jsonl``; returns all rows.

    A file made with other settings (another config key) is refused with a ``ValueError``.
    """
    from agl_trl.experiments import ResultsLog, auto_threads

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = ResultsLog(out / RESULTS_FILE, config_key(cfg))
    done = results.done(("scenario", "method", "seed"))
    todo = [run for run in runs_of(cfg) if run not in done]
    print(f"peers: {len(done)} runs already in {results.path}, {len(todo)} to go", flush=True)
    if not todo:
        return results.rows()
    import torch
    from tqdm.auto import tqdm

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())  # for every stage and run
    try:
        shared = prepare_shared(cfg, out, loader, progress, Path(demo_dir) if demo_dir else None)
        environment = {
            "torch_threads": torch.get_num_threads(),
            "mode": cfg.mode,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        }
        for scenario, method, seed in tqdm(todo, desc="peers", disable=not progress):
            started = time.perf_counter()
            row = run_one(cfg, shared, out, scenario, method, seed, progress=False)
            row.update(
                run_seconds=round(time.perf_counter() - started, 2),
                mode=cfg.mode,
                environment={**environment, "load_average": _load_average()},
            )
            results.append([row])  # stamped with the config key; a run lands whole or not at all
    finally:
        torch.set_num_threads(previous_threads)
    return results.rows()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="2 seeds, 7 methods (no ablations), 2 stress runs, the demo's --quick sizes (< 30 min); the full run "
        "with the same --out adds the rest",
    )
    mode.add_argument("--tiny", action="store_true", help="smoke run on a random tiny Llama (no SmolLM2)")
    parser.add_argument(
        "--scale",
        choices=("quick", "demo"),
        default="quick",
        help="full run's task sizes: those of `agl-trl demo --quick` (default, ~1 h 15 min) or of `make demo` (~5 h)",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: runs/peers; runs/peers-demo-scale for --scale demo)"
    )
    parser.add_argument(
        "--demo-dir",
        default=None,
        help="demo stages folder to reuse (e.g. runs/demo of `make demo`; default <out>/demo)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the demo's rule, 1 on a busy machine)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0..n-1)")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(ALL_METHODS)}")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="demo setting (task.steps=40, agl.lambda_align=2) or peer setting (peers.lambda_l2=0.1); repeatable",
    )  # fmt: skip
    parser.add_argument("--report", action="store_true", help="also write the report (docs/peers.md + Pareto plot)")
    parser.add_argument("--report-dir", default="docs", help="where --report writes peers.md and peers_pareto.png")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, loader: Callable[[], tuple[Any, Any]] | None = None) -> int:
    """The command line of ``benchmarks/peers.py``; returns the exit status (2: bad settings or a mixed file)."""
    args = build_parser().parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    try:
        cfg = build_config(mode, args.seeds, methods, args.overrides, scale=args.scale)
    except ValueError as exc:
        print(f"peers: {exc}", file=sys.stderr)
        return 2
    if mode == "tiny" and loader is None:
        from agl_trl.models import tiny_llama

        def loader() -> tuple[Any, Any]:
            return tiny_llama(vocab_size=512, seed=0)

    default_out = (
        "runs/peers-tiny" if mode == "tiny" else "runs/peers" if args.scale == "quick" else "runs/peers-demo-scale"
    )
    out = Path(args.out or default_out)
    try:
        rows = run_benchmark(
            cfg, out, loader=loader, progress=not args.no_progress, demo_dir=args.demo_dir, threads=args.threads
        )
    except ValueError as exc:
        print(f"peers: {exc}", file=sys.stderr)
        return 2
    if args.report:
        from agl_trl.experiments.peers_report import write_report

        write_report(rows, Path(args.report_dir), source=out / RESULTS_FILE)
    print(f"peers: {len(rows)} runs in {out / RESULTS_FILE}")
    return 0


__all__ = [
    "ALL_METHODS",
    "RESULTS_FILE",
    "STRESS_METHODS",
    "BenchConfig",
    "Shared",
    "build_config",
    "build_parser",
    "config_key",
    "main",
    "prepare_shared",
    "run_benchmark",
    "run_one",
    "runs_of",
    "scenario_demo",
]
