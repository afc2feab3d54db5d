"""The demo: align a small chat model, fine-tune it on a benign task with plain LoRA and with AGL, measure.

A thin driver of :mod:`agl_trl.experiments`: the shared set-up (:func:`~agl_trl.experiments.prepare_setup`: safety
data, aligned model, its answers, its Fisher), then, as cached stages under ``<out>/``:

* ``lora`` / ``agl`` -- the same task fine-tune (data, seed, steps, LR) with ``trl.SFTTrainer`` and ``AGLSFTTrainer``;
* ``gen_<model>``    -- greedy answers on the DriftCaps eval subset and the task's held-out split (judge, coherence,
  task exact match);
* ``kl_<model>``     -- judge-free KL(aligned || model) on the aligned model's own eval answers;
* ``report``         -- report.json, report.md, plots (written every run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from agl_trl.experiments import (
    ExperimentConfig,
    ModelLoader,
    auto_threads,
    eval_stage_key,
    evaluate_generations,
    kl_to_aligned,
    prepare_setup,
    train_lora,
)
from agl_trl.experiments.shipped import DEFAULT_SETUP
from agl_trl.precision import check_precision, describe, hardware_summary, load_average, use_bf16

MODELS = ("aligned", "lora", "agl")


def run_demo(
    cfg: ExperimentConfig,
    out: str | Path,
    model_loader: ModelLoader | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    threads: int | None = None,
    precision: str = "auto",
    shipped: str | None = DEFAULT_SETUP,
) -> dict[str, Any]:
    """Run (or resume) every stage under ``out`` and write the report; returns the ``report.json`` dict.

    ``model_loader``: ``() -> (model, tokenizer)`` of the *unaligned* base model (default: the offline model
    ``cfg.model`` names, SmolLM2-135M-Instruct unless set; tests inject ``tiny_llama``). ``cfg.model`` names it in the
    keys.
    ``threads``: torch CPU threads (None: every core, :func:`~agl_trl.experiments.auto_threads`). ``precision``:
    ``auto`` (bf16 only where it is fast, :mod:`agl_trl.precision`), ``fp32`` or ``bf16``. ``shipped``: the shipped
    set-up restored instead of built (None: build it here, ``--rebuild-setup``).
    """
    check_precision(precision)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())
    try:
        return _run(cfg, Path(out), model_loader, progress, log, precision, shipped)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    cfg: ExperimentConfig,
    out: Path,
    loader: ModelLoader | None,
    progress: bool,
    log: Callable[[str], None] | None,
    precision: str,
    shipped: str | None,
) -> dict[str, Any]:
    from agl_trl.models import load_pretrained

    started = time.perf_counter()
    load_start = load_average()
    c = cfg
    bf16 = use_bf16(precision, on_cpu=True)
    hardware = hardware_summary(bf16)
    if log:
        log(f"[demo] {describe(hardware)}")
    setup = prepare_setup(c, out, loader, progress, log, shipped=shipped, precision=precision)
    runner = setup.runner
    task_settings = {"task": c.task.to_key(), "lora": asdict(c.lora), "seed": c.seed,
                     "precision": hardware["precision"]}  # fmt: skip

    def finetune(directory: Path, agl: dict[str, Any] | None) -> dict[str, Any]:
        model, tokenizer = load_pretrained(setup.aligned_dir)
        trained, record = train_lora(
            model, tokenizer, setup.task_rows, directory, lora=c.lora, seed=c.seed, steps=c.task.steps,
            learning_rate=c.task.learning_rate, batch_size=c.task.batch_size, agl=agl, progress=progress,
            precision=precision,
        )  # fmt: skip
        trained.save_pretrained(directory / "adapter")
        return {"train": record}

    def generations(directory: Path, name: str) -> dict[str, Any]:
        model, tokenizer = load_pretrained(setup.aligned_dir, out / name / "adapter")
        return evaluate_generations(
            model, tokenizer, setup.eval_subset, setup.task_eval, c.eval, c.task.answer_tokens, directory, name,
            progress, kind=c.task.kind,
        )  # fmt: skip

    def kl_stage(directory: Path, name: str) -> dict[str, Any]:
        model, tokenizer = load_pretrained(setup.aligned_dir, out / name / "adapter")
        return kl_to_aligned(model, tokenizer, kl_rows, c.eval.batch_size, progress)

    kl_rows = kl_reference_rows(setup, c.eval.kl_prompts)
    gen_info: dict[str, dict[str, Any]] = {"aligned": setup.aligned_info}
    kl_info: dict[str, dict[str, Any]] = {}
    eval_key = eval_stage_key(c, setup.eval_subset, setup.task_eval)

    def measure(name: str) -> None:  # each model is measured as soon as it is trained
        gen_info[name] = runner.run(f"gen_{name}", eval_key, lambda d: generations(d, name), ("aligned", name))
        kl_info[name] = runner.run(
            f"kl_{name}",
            {"batch_size": c.eval.batch_size, "prompts": c.eval.kl_prompts},
            lambda d: kl_stage(d, name),
            ("gen_aligned", name),
        )

    runner.run("lora", task_settings, lambda d: finetune(d, None), ("aligned",))
    measure("lora")
    agl = setup.agl_fields(c.agl)
    runner.run("agl", {**task_settings, "agl": asdict(c.agl)}, lambda d: finetune(d, agl), ("fisher",))
    measure("agl")

    from agl_trl.demo.report import build_results, write_demo_report

    drift_results = build_results(out, setup.eval_subset, gen_info, kl_info, c)
    environment = {
        **hardware,
        "setup": setup.setup_id,
        "load_average_start": load_start,
        "load_average_end": load_average(),
    }
    return write_demo_report(
        out, c, drift_results, gen_info, kl_info, setup.fisher_info, runner.records, environment,
        total_seconds=time.perf_counter() - started,
    )  # fmt: skip


def kl_reference_rows(setup: Any, n: int | None) -> list[dict[str, Any]]:
    """The aligned model's answers the KL drift is read on: all, or ``n`` test prompts, half unsafe and half safe,
    category round-robin (:func:`~agl_trl.experiments.stratified_subset`: fixed by the data file)."""
    rows = setup.reference_rows
    if n is None:
        return rows
    from agl_trl.experiments import stratified_subset

    items = setup.eval_subset
    chosen = {it.id for it in stratified_subset(items, n // 2, "unsafe") + stratified_subset(items, n - n // 2, "safe")}
    return [r for r in rows if r["id"] in chosen]


__all__ = ["MODELS", "kl_reference_rows", "run_demo"]
