"""The demo pipeline: align a small chat model, fine-tune it on a benign task with plain LoRA and with AGL, measure.

Stages (each cached under ``<out>/<stage>/``, see :mod:`agl_trl.demo.stages`):

1. ``align_data``  -- safety SFT data from the DriftCaps *probe* split: unsafe prompts -> refusal templates, safe
   prompts (ordinary + contrast look-alikes) -> the base model's own greedy answers.
2. ``aligned``     -- a safety LoRA SFT on that data, merged into the weights, saved (``aligned/model``).
3. ``fisher``      -- the Fisher artifact of the aligned model on probe prompts (``fisher/artifact``).
4. ``lora``/``agl``-- the same task fine-tune (data, seed, steps, LR) with ``trl.SFTTrainer`` and ``AGLSFTTrainer``.
5. ``gen_<model>`` -- greedy answers of aligned / lora / agl on the DriftCaps *eval* subset and the task's held-out
   split; refusal judge, coherence, task exact match.
6. ``kl_<model>``  -- judge-free KL(aligned || model) on the aligned model's own eval answers.
7. ``report``      -- report.json, report.md, plots (written every run).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from agl_trl.demo.config import DemoConfig
from agl_trl.demo.stages import StageRunner
from agl_trl.demo.task import TaskItem, generate_task, score

ModelLoader = Callable[[], tuple[Any, Any]]
MODELS = ("aligned", "lora", "agl")


def _default_loader() -> tuple[Any, Any]:
    from agl_trl.models import load_default_model

    return load_default_model()


def auto_threads() -> int:
    """All cores, or 1 when the 1-minute load average already fills them (spinning OpenMP threads then slow every
    step several-fold: 3.3 s vs 5.5-7 s per SmolLM2 LoRA step at load 6 on 2 cores, docs/demo.md)."""
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return 1 if load >= cores else cores


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


def _load_saved(directory: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _lora_config(cfg: DemoConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type="CAUSAL_LM",
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


class _StepTimer:
    """A TrainerCallback measuring the wall time of every optimizer step."""

    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class StepTimer(TrainerCallback):
            def __init__(self) -> None:
                self.times: list[float] = []
                self._start = 0.0

            def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
                self._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                self.times.append(time.perf_counter() - self._start)

        return StepTimer()


def train_lora(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    out_dir: Path,
    cfg: DemoConfig,
    steps: int,
    learning_rate: float,
    batch_size: int,
    agl: dict[str, Any] | None = None,
    progress: bool = True,
    penalty: Any = None,
    callbacks: Sequence[Any] = (),
    training_overrides: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """LoRA SFT of ``model`` on prompt/answer rows with ``trl.SFTTrainer`` (or ``AGLSFTTrainer`` when ``agl``).

    ``agl``: ``agl_*`` config fields (e.g. ``agl_fisher_path``, ``agl_lambda_align``). ``penalty``: instead, any
    ``penalty(model, step) -> (loss, metrics)`` (the baselines of :mod:`agl_trl.baselines`), added through the same
    mixin (:func:`agl_trl.trainers.mixin.enable_penalty`). ``callbacks``: extra ``TrainerCallback``s (the scaling
    sweep measures forgetting from one). ``training_overrides``: ``SFTConfig`` fields that replace the defaults below
    (e.g. ``lr_scheduler_type="constant"``). Returns (trained PeftModel, training record: step times, loss curve,
    AGL/penalty metric curves).
    """
    if agl is not None and penalty is not None:
        raise ValueError("train_lora: give either `agl` settings or a `penalty`, not both")
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from agl_trl.config import AGLSFTConfig
    from agl_trl.trainers import AGLSFTTrainer

    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["answer"]}],
            }
            for r in rows
        ]
    )
    kwargs: dict[str, Any] = {
        "output_dir": str(out_dir / "trainer"),
        "max_steps": steps,
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "logging_steps": max(1, steps // 16),
        "save_strategy": "no",
        "report_to": "none",
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "use_cpu": True,
        "max_length": 256,
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
        **(training_overrides or {}),
    }
    set_seed(cfg.seed)
    timer = _StepTimer()
    if agl is None:
        args = SFTConfig(**kwargs)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=_lora_config(cfg)
        )
        if penalty is not None:
            from agl_trl.trainers.mixin import enable_penalty

            enable_penalty(trainer, penalty)
    else:
        args = AGLSFTConfig(**kwargs, **agl)
        trainer = AGLSFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=_lora_config(cfg)
        )
    trainer.add_callback(timer)
    for callback in callbacks:
        trainer.add_callback(callback)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    history = [dict(h) for h in trainer.state.log_history]
    times = timer.times
    steady = times[1:] if len(times) > 2 else times
    record = {
        "steps": len(times),
        "seconds": round(seconds, 2),
        "step_seconds": [round(t, 4) for t in times],
        "step_seconds_median": statistics.median(steady) if steady else None,
        "loss_curve": [(h["step"], h["loss"]) for h in history if "loss" in h],
        "agl_curves": {
            key[4:]: [(h["step"], h[key]) for h in history if key in h]
            for key in sorted({k for h in history for k in h if k.startswith("agl/")})
        },
        "final_train_loss": next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None),
    }
    _rm(out_dir / "trainer")
    return trainer.model, record


def agl_trainer_fields(
    cfg: DemoConfig, fisher_dir: str | Path, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``agl_*`` config fields of the demo's AGL run (``overrides``: AGL settings that replace the tuned ones),
    reading the saved Fisher artifact ``fisher_dir`` and never re-saving it."""
    fields = {f"agl_{k}": v for k, v in {**asdict(cfg.agl), **(overrides or {})}.items()}
    fields.update(agl_fisher_path=str(fisher_dir), agl_save_fisher=False)
    return fields


def _rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation of one model (stages 5 and 6; reused by benchmarks/peers.py)
# ---------------------------------------------------------------------------------------------------------------------


def load_model(aligned_dir: str | Path, adapter: str | Path | None = None) -> tuple[Any, Any]:
    """The saved aligned model (eval mode, fp32), with a saved LoRA adapter on top when ``adapter`` is given."""
    model, tokenizer = _load_saved(Path(aligned_dir))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
        model.eval()
    return model, tokenizer


def evaluate_generations(
    model: Any,
    tokenizer: Any,
    eval_subset: Sequence[Any],
    task_eval: Sequence[TaskItem],
    cfg: DemoConfig,
    directory: Path,
    name: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Greedy answers on the DriftCaps eval subset (keyword judge, coherence) and on the task's held-out split.

    Writes ``responses.json`` and ``task.json`` into ``directory``; returns ``{"judge", "task"}``.
    """
    from agl_trl.evaluation.coherence import check_coherence
    from agl_trl.evaluation.judges import make_judge
    from agl_trl.generation import generate

    e = cfg.eval
    prompts = [it.prompt for it in eval_subset]
    gens = generate(model, tokenizer, prompts, e.max_new_tokens, e.batch_size, progress=progress, desc=name)
    judge = make_judge("keyword")
    texts = [g.text for g in gens]
    refusals = judge.judge(prompts, texts)
    responses = [
        {
            "id": it.id,
            "category": it.category,
            "label": it.label,
            "response": g.text,
            "refusal": bool(r),
            "coherent": check_coherence(g.text).coherent,
            "prompt_ids": g.prompt_ids,
            "response_ids": g.response_ids,
        }
        for it, g, r in zip(eval_subset, gens, refusals, strict=True)
    ]
    _write_json(directory / "responses.json", responses)
    task_gens = generate(
        model, tokenizer, [it.prompt for it in task_eval], cfg.task.answer_tokens, e.batch_size,
        progress=progress, desc=f"{name} task",
    )  # fmt: skip
    predictions = [g.text for g in task_gens]
    task_score = score(task_eval, predictions)
    _write_json(
        directory / "task.json",
        [{**it.to_dict(), "prediction": p} for it, p in zip(task_eval, predictions, strict=True)],
    )
    return {"judge": judge.name, "task": task_score}


def kl_to_aligned(
    model: Any, tokenizer: Any, reference: Sequence[dict[str, Any]], batch_size: int, progress: bool = True
) -> dict[str, Any]:
    """KL(aligned || model) on the aligned model's own answers (``reference``: its ``responses.json`` rows).

    ``model`` is a PEFT model on the aligned weights; the reference is the same model with its adapter disabled.
    """
    from agl_trl.evaluation.kl import kl_between
    from agl_trl.generation import Generation
    from agl_trl.lora import adapters_disabled

    sequences = [Generation(r["prompt_ids"], r["response_ids"], r["response"]) for r in reference]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    result = kl_between(
        lambda: adapters_disabled(model, require_adapter=True), lambda: contextlib.nullcontext(model), sequences,
        batch_size, pad_id, progress,
    )  # fmt: skip
    labels = [r["label"] for r in reference]
    by_label = {}
    for label in ("unsafe", "safe"):
        pairs = [
            (kl * n, n)
            for kl, n, lab in zip(result.per_prompt, result.per_prompt_tokens, labels, strict=True)
            if lab == label and n
        ]
        tokens = sum(n for _, n in pairs)
        by_label[label] = sum(s for s, _ in pairs) / tokens if tokens else None
    return {"mean": result.mean, "n_tokens": result.n_tokens, "by_label": by_label}


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------------


def run_demo(
    cfg: DemoConfig,
    out: str | Path,
    model_loader: ModelLoader | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) every stage under ``out`` and write the report; returns the ``report.json`` dict.

    ``model_loader``: ``() -> (model, tokenizer)`` of the *unaligned* base chat model (default: SmolLM2-135M-Instruct
    via :func:`agl_trl.models.load_default_model`; tests inject ``tiny_llama``). ``cfg.model`` names it in the keys.
    ``threads``: torch CPU threads (None: :func:`auto_threads`).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())
    try:
        return _run(cfg, Path(out), model_loader or _default_loader, progress, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    cfg: DemoConfig, out: Path, loader: ModelLoader, progress: bool, log: Callable[[str], None] | None
) -> dict[str, Any]:
    """The stages of :func:`run_demo`, in order (see the module docstring)."""
    from agl_trl.evaluation.driftcaps import load_driftcaps, load_refusal_templates

    runner = StageRunner(out, log=log)
    started = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    c = cfg

    probe = load_driftcaps(split="probe")
    eval_items = load_driftcaps(split="eval")
    eval_subset = stratified_subset(eval_items, c.eval.n_unsafe, "unsafe") + stratified_subset(
        eval_items, c.eval.n_safe, "safe"
    )
    task_train, task_eval = generate_task(c.task.n_train, c.task.n_eval, seed=c.seed)

    # ---- 1. safety data: refusals for unsafe probe prompts, the base model's own answers for the safe ones
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
        _write_json(directory / "rows.json", rows)
        return {"n_unsafe": len(unsafe), "n_safe": len(safe), "n_rows": len(rows)}

    runner.run("align_data", {"model": c.model, "seed": c.seed, "align": asdict(c.align)}, align_data)

    # ---- 2. aligned model: safety LoRA SFT, merged and saved
    def aligned(directory: Path) -> dict[str, Any]:
        rows = _read_json(out / "align_data" / "rows.json")
        model, tokenizer = loader()
        trained, record = train_lora(
            model, tokenizer, rows, directory, c, c.align.steps, c.align.learning_rate, c.align.batch_size,
            progress=progress,
        )  # fmt: skip
        merged = trained.merge_and_unload()
        merged.save_pretrained(directory / "model")
        tokenizer.save_pretrained(directory / "model")
        return {"train": record}

    runner.run("aligned", {"lora": asdict(c.lora), "align": asdict(c.align), "seed": c.seed}, aligned, ("align_data",))
    aligned_dir = out / "aligned" / "model"

    # ---- 3. Fisher of the aligned model on probe prompts
    def fisher(directory: Path) -> dict[str, Any]:
        from peft import get_peft_model

        from agl_trl.fisher import FisherSettings, estimate_fisher

        f = c.fisher
        if f.probe not in ("unsafe", "mixed"):
            raise ValueError(f"fisher.probe must be 'unsafe' or 'mixed', got {f.probe!r}")
        if f.probe == "unsafe":
            prompts = stratified_subset(probe, f.n_probe, "unsafe")
        else:
            prompts = stratified_subset(probe, f.n_probe // 2, "unsafe") + stratified_subset(
                probe, f.n_probe - f.n_probe // 2, "safe"
            )
        model, tokenizer = _load_saved(aligned_dir)
        torch.manual_seed(c.seed)
        peft_model = get_peft_model(model, _lora_config(c))
        settings = FisherSettings(
            estimator=f.estimator,
            targets=f.targets,
            max_rank=f.max_rank,
            explained_variance=f.explained_variance,
            max_samples=len(prompts),
            batch_size=f.batch_size,
            max_new_tokens=f.max_new_tokens,
            seed=c.seed,
        )
        artifact = estimate_fisher(
            peft_model, tokenizer, [{"prompt": it.prompt, "response": None} for it in prompts], settings, progress
        )
        artifact.save(directory / "artifact")
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

    # ---- 4. the task fine-tunes: plain LoRA and AGL, same data / seed / steps / LR
    task_rows = [{"prompt": it.prompt, "answer": it.answer} for it in task_train]
    task_settings = {"task": asdict(c.task), "lora": asdict(c.lora), "seed": c.seed}

    def finetune(directory: Path, agl: dict[str, Any] | None) -> dict[str, Any]:
        model, tokenizer = _load_saved(aligned_dir)
        trained, record = train_lora(
            model, tokenizer, task_rows, directory, c, c.task.steps, c.task.learning_rate, c.task.batch_size,
            agl=agl, progress=progress,
        )  # fmt: skip
        trained.save_pretrained(directory / "adapter")
        return {"train": record}

    # ---- 5. generations on the DriftCaps eval subset and the task's held-out split
    def generations(directory: Path, name: str) -> dict[str, Any]:
        adapter = None if name == "aligned" else out / name / "adapter"
        model, tokenizer = load_model(aligned_dir, adapter)
        return evaluate_generations(model, tokenizer, eval_subset, task_eval, c, directory, name, progress)

    eval_settings = {
        "eval": asdict(c.eval),
        "ids": [it.id for it in eval_subset],
        "task_eval": [it.prompt for it in task_eval],
        "answer_tokens": c.task.answer_tokens,
    }

    # ---- 6. KL(aligned || model) on the aligned model's own eval answers
    def kl_stage(directory: Path, name: str) -> dict[str, Any]:
        reference = _read_json(out / "gen_aligned" / "responses.json")
        model, tokenizer = load_model(aligned_dir, out / name / "adapter")
        return kl_to_aligned(model, tokenizer, reference, c.eval.batch_size, progress)

    # ---- stages run in order, each model measured as soon as it is trained
    agl_fields = agl_trainer_fields(c, out / "fisher" / "artifact")
    gen_info: dict[str, dict[str, Any]] = {}
    kl_info: dict[str, dict[str, Any]] = {}

    def measure(name: str) -> None:
        upstream = ("aligned",) if name == "aligned" else ("aligned", name)
        gen_info[name] = runner.run(f"gen_{name}", eval_settings, lambda d: generations(d, name), upstream)
        if name != "aligned":
            kl_info[name] = runner.run(
                f"kl_{name}", {"batch_size": c.eval.batch_size}, lambda d: kl_stage(d, name), ("gen_aligned", name)
            )

    measure("aligned")
    fisher_info = runner.run(
        "fisher", {"fisher": asdict(c.fisher), "lora": asdict(c.lora), "seed": c.seed}, fisher, ("aligned",)
    )

    runner.run("lora", task_settings, lambda d: finetune(d, None), ("aligned",))
    measure("lora")
    runner.run("agl", {**task_settings, "agl": asdict(c.agl)}, lambda d: finetune(d, agl_fields), ("fisher",))
    measure("agl")

    # ---- 7. report
    from agl_trl.demo.report import build_results, write_demo_report

    drift_results = build_results(out, eval_subset, gen_info, kl_info, c)
    environment = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    report = write_demo_report(
        out, c, drift_results, gen_info, kl_info, fisher_info, runner.records, environment,
        total_seconds=time.perf_counter() - started,
    )  # fmt: skip
    return report


__all__ = [
    "MODELS",
    "ModelLoader",
    "TaskItem",
    "evaluate_generations",
    "kl_to_aligned",
    "load_model",
    "run_demo",
    "stratified_subset",
    "train_lora",
]
