"""The forgetting sweep (``python benchmarks/scaling_sweep.py``): plain LoRA and AGL on the demo's set-up, forgetting
measured at several fine-tuning budgets, written as a run log (``agl_trl.scaling.io``), then fitted by
``agl-trl scaling --log`` (:func:`main`: the sweep's options; every other option goes to the fit).

Set-up (shared with ``agl-trl demo`` and ``benchmarks/peers.py``, cached under ``<demo_dir>``): the aligned SmolLM2,
its Fisher artifact, the aligned model's greedy answers to the DriftCaps eval subset, and the demo's benign task.
Per (method, seed) **one** run of ``max(budget_steps)`` steps at a **constant** learning rate (no warm-up): with a
constant schedule the state after ``k`` steps is exactly that of a ``k``-step run, so the checkpoints of one run are
the budgets of separate runs, at a sixth of the cost. At each budget step a callback measures
(:func:`agl_trl.scaling.measure.measure_forgetting`, the adapter disabled as the aligned reference):

- ``responses``: the aligned model's own answers to the held-out DriftCaps eval prompts (unsafe and safe);
- ``general``: the project's held-out prose (``agl_trl/evaluation/data/heldout_text_v1.jsonl``),

with ``budget`` = training examples seen (steps x batch size, ``budget_unit: examples``): the same at a given step
for every seed, so seeds average per budget; the non-padding tokens seen are logged too (``tokens``). Resumable: the rows of a (method,
seed) are appended when its run ends, and a rerun skips the pairs already in the log.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agl_trl.scaling.io import RunRecord
from agl_trl.utils import read_jsonl

METHODS = ("lora", "agl")
LOG_NAME = "runs.jsonl"


@dataclass
class SweepConfig:
    """What the sweep runs: the demo's settings (aligned model, task, AGL), methods, seeds and budgets (steps)."""

    demo: Any  # agl_trl.experiments.ExperimentConfig
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    budget_steps: list[int] = field(default_factory=lambda: [3, 6, 12, 24, 48, 96])
    learning_rate: float | None = None  # None: the demo task's learning rate
    max_text_tokens: int = 256

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown sweep methods {unknown}; known: {list(METHODS)}")
        if not self.budget_steps or min(self.budget_steps) < 1 or len(set(self.budget_steps)) < 3:
            raise ValueError(f"budget_steps needs >= 3 distinct positive step counts, got {self.budget_steps}")
        self.budget_steps = sorted(set(self.budget_steps))

    def key(self) -> str:
        """A hash of everything a row depends on except the method and seed (those may grow on resume)."""
        from agl_trl.experiments import settings_key

        return settings_key(
            {
                "demo": {k: v for k, v in self.demo.to_dict().items() if k != "seed"},
                "budget_steps": self.budget_steps,
                "learning_rate": self.learning_rate,
                "max_text_tokens": self.max_text_tokens,
            }
        )


def quick_sweep_config(seeds: int = 2) -> SweepConfig:
    """The sweep on ``agl-trl demo --quick``'s aligned model and task (about 25 minutes on 2 idle CPU cores)."""
    from agl_trl.experiments import quick_config

    return SweepConfig(demo=quick_config(0), seeds=list(range(seeds)))


def tiny_sweep_config(seeds: int = 1) -> SweepConfig:
    """Seconds on a random tiny Llama: the tests' sizes."""
    from agl_trl.experiments import tiny_config

    return SweepConfig(demo=tiny_config(0), seeds=list(range(seeds)), budget_steps=[1, 2, 3, 4])


def load_heldout_texts() -> list[str]:
    """The project's general held-out prose (48 paragraphs, data card ``evaluation/data/HELDOUT_TEXT.md``)."""
    from agl_trl.driftcaps import DATA_DIR

    return [row["text"] for row in read_jsonl(DATA_DIR / "heldout_text_v1.jsonl")]


def _forgetting_callback(
    tokenizer: Any,
    responses: Sequence[Any],
    texts: Sequence[str],
    budget_steps: Sequence[int],
    max_text_tokens: int,
    batch_size: int,
    sink: list[dict[str, Any]],
) -> Any:
    from transformers import TrainerCallback

    from agl_trl.scaling.measure import measure_forgetting

    wanted = set(budget_steps)

    class ForgettingCallback(TrainerCallback):
        """Measures forgetting at the budget steps (the PEFT model, its adapter disabled as the reference)."""

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step not in wanted:
                return
            started = time.perf_counter()
            result = measure_forgetting(
                model, tokenizer, responses=responses, general_texts=texts, batch_size=batch_size,
                max_length=max_text_tokens,
            )  # fmt: skip
            for loss in result.values():
                sink.append(
                    {
                        "steps": state.global_step,
                        "tokens": int(state.num_input_tokens_seen),
                        **loss.to_dict(),
                        "measure_seconds": round(time.perf_counter() - started, 2),
                    }
                )

    return ForgettingCallback()


def run_sweep(
    cfg: SweepConfig,
    out: str | Path,
    loader: Callable[[], tuple[Any, Any]] | None = None,
    demo_dir: str | Path | None = None,
    progress: bool = True,
    threads: int | None = None,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Run every missing (method, seed) and append its rows to ``<out>/runs.jsonl``; returns the log's path.

    ``demo_dir``: an ``agl-trl demo`` folder with the same settings to reuse (default ``<out>/demo``); ``loader``:
    the unaligned base model (default SmolLM2-135M-Instruct; tests inject a tiny Llama).
    """
    import torch

    from agl_trl.experiments import ResultsLog, auto_threads, prepare_setup, train_lora
    from agl_trl.generation import Generation
    from agl_trl.models import load_pretrained

    say = log or (lambda _m: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = ResultsLog(out / LOG_NAME, cfg.key(), key_field="sweep_key")
    done = results.done(("method", "seed"))
    todo = [(m, s) for s in cfg.seeds for m in cfg.methods if (m, s) not in done]
    say(f"scaling sweep: {len(done)} runs in {results.path}, {len(todo)} to go")
    if not todo:
        return results.path

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())
    try:
        setup = prepare_setup(cfg.demo, Path(demo_dir) if demo_dir else out / "demo", loader, progress, log)
        setup_id = setup.setup_id  # recorded on every row: the shipped set-up's version, or a local build's hash
        responses = [Generation(r["prompt_ids"], r["response_ids"], r["response"]) for r in setup.reference_rows]
        texts = load_heldout_texts()
        c = cfg.demo
        lr = cfg.learning_rate or c.task.learning_rate
        for method, seed in todo:
            say(f"scaling sweep: {method} seed {seed}, {max(cfg.budget_steps)} steps, budgets {cfg.budget_steps}")
            model, tokenizer = load_pretrained(setup.aligned_dir)
            model.train()
            measured: list[dict[str, Any]] = []
            callback = _forgetting_callback(
                tokenizer, responses, texts, cfg.budget_steps, cfg.max_text_tokens, c.eval.batch_size, measured
            )
            _, record = train_lora(
                model, tokenizer, setup.task_rows, out / "runs" / method / f"seed{seed}", lora=c.lora, seed=seed,
                steps=max(cfg.budget_steps), learning_rate=lr, batch_size=c.task.batch_size,
                agl=setup.agl_fields(c.agl) if method == "agl" else None, progress=progress,
                callbacks=[callback],
                training_overrides={"lr_scheduler_type": "constant", "include_num_input_tokens_seen": "non_padding"},
            )  # fmt: skip
            if len(measured) != 2 * len(cfg.budget_steps):
                raise RuntimeError(
                    f"{method} seed {seed}: {len(measured)} measurements for {len(cfg.budget_steps)} budgets x 2 "
                    "metrics; the training stopped early"
                )
            results.append(  # a (method, seed) lands whole or not at all
                {
                    **RunRecord(
                        method, float(m["steps"] * c.task.batch_size), m["increase"], m["metric"], c.lora.r, seed
                    ).to_dict(),
                    "budget_unit": "examples",
                    **m,
                    "learning_rate": lr,
                    "step_seconds_median": record["step_seconds_median"],
                    "precision": record["precision"],
                    "threads": record["threads"],
                    "setup_id": setup_id,
                }
                for m in measured
            )
            del model
    finally:
        torch.set_num_threads(previous_threads)
    return results.path


def settings_of(cfg: SweepConfig) -> dict[str, Any]:
    """The sweep's settings as plain data (for the report)."""
    return {**asdict(cfg), "demo": cfg.demo.to_dict()}


def build_parser() -> argparse.ArgumentParser:
    """The sweep's options; the rest of the command line is ``agl-trl scaling``'s (the fit of the sweep's log)."""
    p = argparse.ArgumentParser(
        prog="benchmarks/scaling_sweep.py",
        description="Measure forgetting of LoRA and AGL on the demo's set-up, then fit it (other options: agl-trl "
        "scaling's).",
    )
    p.add_argument(
        "--sweep-size", choices=("quick", "tiny"), default="quick",
        help="quick: `agl-trl demo --quick`'s aligned SmolLM2 and task (~25 min for 2 seeds); tiny: a random tiny "
        "Llama (seconds, a smoke test)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, default=2, help="seeds per method (default 2)")
    p.add_argument("--demo-dir", default=None, help="an `agl-trl demo --quick` folder to reuse (default <out>/demo)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all, 1 when busy)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", default="scaling", help="output directory (default: ./scaling)")
    return p


def run_sweep_for(args: argparse.Namespace) -> Path:
    """Measure into ``<out>/runs.jsonl`` (the sweep's settings beside it in ``sweep.json``)."""
    loader = None
    if args.sweep_size == "tiny":
        from benchmarks.lab.peers_config import tiny_loader as loader

        cfg = tiny_sweep_config(args.seeds)
    else:
        cfg = quick_sweep_config(args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(settings_of(cfg), indent=2, default=str) + "\n", encoding="utf-8")
    return run_sweep(
        cfg, out, loader=loader, demo_dir=args.demo_dir, progress=not args.no_progress, threads=args.threads
    )


def main(argv: list[str] | None = None) -> int:
    """Measure (:func:`run_sweep_for`), then fit the log with ``agl-trl scaling`` (exit code: the fit's)."""
    from agl_trl.scaling.cli import main as fit

    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    if any(a == "--log" or a.startswith("--log=") for a in rest):
        print(
            "benchmarks/scaling_sweep.py: the sweep writes its own log (<out>/runs.jsonl); drop --log", file=sys.stderr
        )
        return 2
    try:
        log = run_sweep_for(args)
    except ValueError as exc:
        print(f"benchmarks/scaling_sweep.py: {exc}", file=sys.stderr)
        return 2
    return fit(["--log", str(log), "--out", args.out, *rest])
