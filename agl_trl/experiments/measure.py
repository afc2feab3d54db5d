"""Measure one model of an experiment: greedy answers on the DriftCaps prompts (judge, coherence), the task's
held-out split, and the judge-free KL(aligned || model) on the aligned model's own answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agl_trl.experiments.config import EvalSettings
from agl_trl.experiments.task import TaskItem
from agl_trl.experiments.task_kinds import DEFAULT_TASK_KIND, task_kind

RESPONSES_FILE = "responses.json"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def response_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Refusal / over-refusal / coherence metrics (overall and by category) of ``responses.json`` rows."""
    from agl_trl.evaluation.metrics import model_metrics

    return model_metrics(
        [r["category"] for r in rows], [r["label"] for r in rows], [r["refusal"] for r in rows],
        [r["coherent"] for r in rows],
    )  # fmt: skip


def evaluate_generations(
    model: Any,
    tokenizer: Any,
    eval_subset: Sequence[Any],
    task_eval: Sequence[TaskItem],
    settings: EvalSettings,
    answer_tokens: int,
    directory: Path,
    name: str,
    progress: bool = True,
    kind: str = DEFAULT_TASK_KIND,
) -> dict[str, Any]:
    """Greedy answers on the DriftCaps prompts (judge ``settings.judge``, coherence) and on the task items
    ``task_eval`` of the task kind ``kind`` (``answer_tokens`` new tokens each for the content, more for an opening:
    :meth:`~agl_trl.experiments.task_kinds.TaskKind.generation_tokens`).

    Writes ``responses.json`` (one row per prompt: id, category, label, style, form, response, verdicts, token ids)
    and ``task.json`` into ``directory``; returns ``{"judge", "task"}`` (``task["hits"]``: per-item exact match;
    ``task["opening"]``: the share of answers that open with one of the kind's openings, when it has some).
    """
    from agl_trl.evaluation.coherence import check_coherence
    from agl_trl.evaluation.judges import make_judge
    from agl_trl.generation import generate

    prompts = [it.prompt for it in eval_subset]
    gens = generate(
        model, tokenizer, prompts, settings.max_new_tokens, settings.batch_size, progress=progress, desc=name
    )
    judge = make_judge(settings.judge)
    refusals = judge.judge(prompts, [g.text for g in gens])
    responses = [
        {
            "id": it.id,
            "category": it.category,
            "label": it.label,
            "style": getattr(it, "style", None),
            "form": getattr(it, "form", None),
            "response": g.text,
            "refusal": bool(r),
            "coherent": check_coherence(g.text).coherent,
            "prompt_ids": g.prompt_ids,
            "response_ids": g.response_ids,
        }
        for it, g, r in zip(eval_subset, gens, refusals, strict=True)
    ]
    write_json(directory / RESPONSES_FILE, responses)
    task = task_kind(kind)
    task_gens = generate(
        model, tokenizer, [it.prompt for it in task_eval], task.generation_tokens(answer_tokens, tokenizer),
        settings.batch_size, progress=progress, desc=f"{name} task",
    )  # fmt: skip
    predictions = [g.text for g in task_gens]
    write_json(
        directory / "task.json",
        [{**it.to_dict(), "prediction": p} for it, p in zip(task_eval, predictions, strict=True)],
    )
    return {"judge": judge.name, "task": task.score(task_eval, predictions)}


def task_curve_callback(
    tokenizer: Any, items: Sequence[TaskItem], marks: Sequence[int], answer_tokens: int, batch_size: int,
    kind: str = DEFAULT_TASK_KIND,
) -> Any:  # fmt: skip
    """A ``TrainerCallback`` that scores the task on ``items`` of the kind ``kind`` (greedy, exact match) after each
    optimizer step in ``marks``; its ``points`` are ``[(step, exact_match)]``: the learning curve that shows whether
    the task has plateaued."""
    from transformers import TrainerCallback

    from agl_trl.generation import generate

    wanted = set(int(m) for m in marks)
    task = task_kind(kind)
    budget = task.generation_tokens(answer_tokens, tokenizer)

    class TaskCurve(TrainerCallback):
        def __init__(self) -> None:
            self.points: list[tuple[int, float]] = []

        def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            if state.global_step in wanted and model is not None:
                gens = generate(  # eval_mode inside: dropout off, training mode restored
                    model, tokenizer, [it.prompt for it in items], budget, batch_size, progress=False
                )
                self.points.append((state.global_step, task.score(items, [g.text for g in gens])["exact_match"]))

    return TaskCurve()


def kl_to_aligned(
    model: Any, tokenizer: Any, reference: Sequence[dict[str, Any]], batch_size: int, progress: bool = True
) -> dict[str, Any]:
    """KL(aligned || model) on the aligned model's own answers (``reference``: its ``responses.json`` rows).

    ``model`` is a PEFT model on the aligned weights; the reference is the same model with its adapter disabled.
    """
    import contextlib

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


__all__ = [
    "RESPONSES_FILE",
    "evaluate_generations",
    "kl_to_aligned",
    "read_json",
    "response_metrics",
    "task_curve_callback",
    "write_json",
]
