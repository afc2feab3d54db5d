"""The shared set-up of every experiment, as cached stages under one folder (:mod:`agl_trl.experiments.stages`).

1. ``align_data`` -- safety SFT data from the DriftCaps *probe* split: unsafe prompts -> refusal templates, safe
   prompts (ordinary + contrast look-alikes) -> the base model's own greedy answers.
2. ``aligned``    -- a safety LoRA SFT on that data, merged into the weights, saved (``aligned/model``).
3. ``gen_aligned`` -- the aligned model's greedy answers on the DriftCaps *eval* subset and the task's held-out
   split (the reference of every drift and KL number).
4. ``fisher``     -- the Fisher artifact of the aligned model on probe prompts (``fisher/artifact``).

The demo, the peers benchmark and the scaling sweep start from :func:`prepare_setup`, so with the same settings
they share (and reuse) one set-up folder.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from agl_trl.experiments.config import ExperimentConfig
from agl_trl.experiments.measure import RESPONSES_FILE, evaluate_generations, read_json, write_json
from agl_trl.experiments.stages import StageRunner
from agl_trl.experiments.task import TaskItem, generate_task
from agl_trl.experiments.training import lora_config, train_lora

ModelLoader = Callable[[], tuple[Any, Any]]


def default_loader() -> tuple[Any, Any]:
    """The unaligned base chat model: SmolLM2-135M-Instruct (offline GGUF)."""
    from agl_trl.models import load_default_model

    return load_default_model()


def stratified_subset(items: Sequence[Any], n: int | None, label: str) -> list[Any]:
    """The first ``n`` items of ``label``, taken round-robin over categories (sorted) in file order; None: all.

    Fixed by the data file alone (never by model outcomes), so every model is measured on the same prompts.
    """
    pool = [it for it in items if it.label == label]
    if n is None or n >= len(pool):
        return pool
    by_cat: dict[str, list[Any]] = {}
    for it in pool:
        by_cat.setdefault(it.category, []).append(it)
    queues = [list(by_cat[c]) for c in sorted(by_cat)]
    chosen: list[Any] = []
    while len(chosen) < n:
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop(0))
    keep = {id(it) for it in chosen}
    return [it for it in pool if id(it) in keep]


def probe_prompts(cfg: ExperimentConfig) -> list[str]:
    """The Fisher stage's probe prompts: unsafe probe prompts, or half unsafe / half safe (``probe.kind``)."""
    from agl_trl.driftcaps import load_driftcaps

    probe, p = load_driftcaps(split="probe"), cfg.probe
    if p.kind == "unsafe":
        items = stratified_subset(probe, p.n, "unsafe")
    else:
        items = stratified_subset(probe, p.n // 2, "unsafe") + stratified_subset(probe, p.n - p.n // 2, "safe")
    return [it.prompt for it in items]


def eval_subset_of(cfg: ExperimentConfig) -> list[Any]:
    """The DriftCaps eval prompts every model is measured on (a fixed category-stratified subset)."""
    from agl_trl.driftcaps import load_driftcaps

    items = load_driftcaps(split="eval")
    return stratified_subset(items, cfg.eval.n_unsafe, "unsafe") + stratified_subset(items, cfg.eval.n_safe, "safe")


def eval_stage_key(cfg: ExperimentConfig, eval_subset: Sequence[Any], task_eval: Sequence[TaskItem]) -> dict:
    """What a model's ``gen_<name>`` stage depends on besides the model."""
    return {
        "eval": asdict(cfg.eval),
        "ids": [it.id for it in eval_subset],
        "task_eval": [it.prompt for it in task_eval],
        "answer_tokens": cfg.task.answer_tokens,
    }


@dataclass
class Setup:
    """The shared set-up on disk, and what every run of an experiment is measured against."""

    cfg: ExperimentConfig
    out: Path
    runner: StageRunner
    eval_subset: list[Any]
    task_train: list[TaskItem]
    task_eval: list[TaskItem]
    aligned_info: dict[str, Any]  # the gen_aligned stage's result (judge, task score)
    fisher_info: dict[str, Any]

    @property
    def aligned_dir(self) -> Path:
        return self.out / "aligned" / "model"

    @property
    def fisher_dir(self) -> Path:
        return self.out / "fisher" / "artifact"

    @property
    def reference_rows(self) -> list[dict[str, Any]]:
        """The aligned model's ``responses.json`` rows (prompts, its answers, judge verdicts)."""
        return read_json(self.out / "gen_aligned" / RESPONSES_FILE)

    @property
    def task_rows(self) -> list[dict[str, str]]:
        return [{"prompt": it.prompt, "answer": it.answer} for it in self.task_train]


def prepare_setup(
    cfg: ExperimentConfig,
    out: str | Path,
    loader: ModelLoader | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> Setup:
    """Run (or reuse) the set-up stages under ``out`` (see the module docstring).

    ``loader``: ``() -> (model, tokenizer)`` of the *unaligned* base chat model (default :func:`default_loader`;
    tests inject a tiny Llama). ``cfg.model`` names it in the stage keys.
    """
    from agl_trl.driftcaps import load_driftcaps, load_refusal_templates
    from agl_trl.models import load_pretrained

    out, c, loader = Path(out), cfg, loader or default_loader
    runner = StageRunner(out, log=log)
    probe = load_driftcaps(split="probe")
    eval_subset = eval_subset_of(c)
    task_train, task_eval = generate_task(c.task.n_train, c.task.n_eval, seed=c.seed)

    def align_data(directory: Path) -> dict[str, Any]:
        from agl_trl.generation import generate_responses

        unsafe = stratified_subset(probe, c.align.n_unsafe, "unsafe")
        safe = stratified_subset(probe, c.align.n_safe, "safe")
        templates = load_refusal_templates()
        rng = random.Random(c.seed)
        model, tokenizer = loader()
        answers = generate_responses(
            model, tokenizer, [it.prompt for it in safe], c.align.answer_tokens, 32, progress=progress, desc="base"
        )
        rows = [{"prompt": it.prompt, "answer": rng.choice(templates), "label": "unsafe"} for it in unsafe]
        rows += [{"prompt": it.prompt, "answer": a, "label": "safe"} for it, a in zip(safe, answers, strict=True)]
        rows = [r for r in rows if r["answer"].strip()]
        rng.shuffle(rows)
        write_json(directory / "rows.json", rows)
        return {"n_unsafe": len(unsafe), "n_safe": len(safe), "n_rows": len(rows)}

    def aligned(directory: Path) -> dict[str, Any]:
        model, tokenizer = loader()
        trained, record = train_lora(
            model, tokenizer, read_json(out / "align_data" / "rows.json"), directory, lora=c.lora, seed=c.seed,
            steps=c.align.steps, learning_rate=c.align.learning_rate, batch_size=c.align.batch_size,
            progress=progress,
        )  # fmt: skip
        merged = trained.merge_and_unload()
        merged.save_pretrained(directory / "model")
        tokenizer.save_pretrained(directory / "model")
        return {"train": record}

    def gen_aligned(directory: Path) -> dict[str, Any]:
        model, tokenizer = load_pretrained(out / "aligned" / "model")
        return evaluate_generations(
            model, tokenizer, eval_subset, task_eval, c.eval, c.task.answer_tokens, directory, "aligned", progress
        )

    def fisher(directory: Path) -> dict[str, Any]:
        from peft import get_peft_model

        from agl_trl.fisher import resolve_artifact

        prompts = probe_prompts(c)
        model, tokenizer = load_pretrained(out / "aligned" / "model")
        torch.manual_seed(c.seed)
        peft_model = get_peft_model(model, lora_config(c.lora))
        settings = replace(c.fisher, max_samples=len(prompts), seed=c.seed)
        records = [{"prompt": p, "response": None} for p in prompts]
        artifact = resolve_artifact(
            peft_model, tokenizer, settings, probe=records, save_to=directory / "artifact", show_progress=progress
        ).artifact
        curv = sorted(m.mean_curvature for m in artifact.modules.values())
        k_out = [m.k_out for m in artifact.modules.values() if m.q_out is not None]
        k_in = [m.k_in for m in artifact.modules.values() if m.q_in is not None]
        return {
            "n_probe": len(prompts),
            "tokens": artifact.metadata.get("tokens"),
            "modules": len(artifact.modules),
            "mean_curvature_median": statistics.median(curv) if curv else None,
            "mean_curvature_min": curv[0] if curv else None,
            "mean_curvature_max": curv[-1] if curv else None,
            "k_out_median": statistics.median(k_out) if k_out else None,
            "k_in_median": statistics.median(k_in) if k_in else None,
        }

    runner.run("align_data", {"model": c.model, "seed": c.seed, "align": asdict(c.align)}, align_data)
    runner.run("aligned", {"lora": asdict(c.lora), "align": asdict(c.align), "seed": c.seed}, aligned, ("align_data",))
    aligned_info = runner.run("gen_aligned", eval_stage_key(c, eval_subset, task_eval), gen_aligned, ("aligned",))
    fisher_key = {"probe": asdict(c.probe), "fisher": asdict(c.fisher), "lora": asdict(c.lora), "seed": c.seed}
    fisher_info = runner.run("fisher", fisher_key, fisher, ("aligned",))
    return Setup(c, out, runner, eval_subset, task_train, task_eval, aligned_info, fisher_info)


__all__ = [
    "ModelLoader",
    "Setup",
    "default_loader",
    "eval_stage_key",
    "eval_subset_of",
    "prepare_setup",
    "probe_prompts",
    "stratified_subset",
]
