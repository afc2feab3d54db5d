"""Evaluate several models on one prompt set in one run: a base model plus any number of LoRA adapters.

The base model is loaded once; adapters are attached to it with PEFT and switched in place (``set_adapter``), and
the base is evaluated with the adapters disabled, so N adapters cost one copy of the weights. For each model:
greedy responses -> judge -> coherence -> metrics; then drift vs the reference model, drift reduction vs the
baseline (plain LoRA), and the judge-free KL drift on the reference's own responses.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from agl_trl.driftcaps import PromptItem
from agl_trl.generation import Generation, generate
from agl_trl.lora import adapters_disabled, has_adapter
from agl_trl.models import load_pretrained
from agl_trl.utils import package_version

from .coherence import check_coherence
from .judges import Judge, make_judge
from .kl import kl_between
from .metrics import add_drift, add_drift_reduction, model_metrics
from .report import jsonable

BASE = "base"


def attach_adapters(model: Any, adapters: Mapping[str, str | Path]) -> Any:
    """Wrap ``model`` in a PeftModel holding every adapter (name -> directory); returns the PeftModel."""
    from peft import PeftModel

    wrapped = model
    for i, (name, directory) in enumerate(adapters.items()):
        if name == BASE:
            raise ValueError(f"adapter name {BASE!r} is reserved for the model without adapters")
        if not Path(directory, "adapter_config.json").is_file():
            raise FileNotFoundError(f"adapter {name!r}: {directory} has no adapter_config.json (not a PEFT adapter)")
        if i == 0 and not hasattr(wrapped, "peft_config"):
            wrapped = PeftModel.from_pretrained(model, str(directory), adapter_name=name, is_trainable=False)
        else:
            wrapped.load_adapter(str(directory), adapter_name=name, is_trainable=False)
    wrapped.eval()
    return wrapped


def _context(model: Any, adapter: str | None) -> Any:
    """Zero-arg factory of a context yielding ``model`` with ``adapter`` active (None: adapters disabled)."""

    @contextlib.contextmanager
    def ctx() -> Iterator[Any]:
        if adapter is None:
            if has_adapter(model):
                with adapters_disabled(model):
                    yield model
            else:
                yield model
        else:
            model.set_adapter(adapter)
            yield model

    return ctx


def evaluate_models(
    model: str | Path | Any = "default",
    adapters: Mapping[str, str | Path] | None = None,
    tokenizer: Any = None,
    reference: str | Path | Any | None = None,
    baseline: str | None = None,
    items: Sequence[PromptItem] | None = None,
    dataset: str = "driftcaps",
    split: str = "test",
    categories: Sequence[str] | None = None,
    limit_per_category: int | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    judge: str | Judge | None = "keyword",
    compute_kl: bool = True,
    system_prompt: str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare the base model and its adapters (and optionally a separate reference model) on one prompt set.

    model: ``"default"``, a directory / hub id, or a loaded model (then pass ``tokenizer``); a loaded PeftModel's
        own adapters are evaluated too.
    adapters: name -> PEFT adapter directory, attached to the base model.
    reference: what drift is measured against: None / ``"base"`` (the model without adapters), an adapter name, or
        another model (directory / id / loaded model, evaluated as ``"reference"``).
    baseline: name of the model whose drift is the denominator of drift reduction (default: adapter ``"lora"`` if
        present).
    split: DriftCaps split, default ``"test"`` (the held-out split for reported numbers); use ``"validation"`` when
        the numbers are used to choose settings.
    Returns the ``drift.json`` dict (see ``agl_trl.evaluation.report``).
    """
    from .loaders import load_prompts

    if items is None:
        items = load_prompts(dataset, split=split, categories=categories, limit_per_category=limit_per_category)
    items = list(items)
    if not items:
        raise ValueError("no prompts to evaluate (check split / categories / dataset)")
    judge_obj = make_judge(judge)

    source = "<in-memory model>" if not isinstance(model, (str, Path)) else str(model)
    if isinstance(model, (str, Path)):
        base, tokenizer = load_pretrained(model, dtype=dtype)
    else:
        if tokenizer is None:
            raise ValueError("pass tokenizer= with a loaded model")
        base = model
    wrapped = attach_adapters(base, adapters) if adapters else base
    adapter_names = list(getattr(wrapped, "peft_config", {}) or {}) if has_adapter(wrapped) else []
    adapter_dirs = {n: str(d) for n, d in (adapters or {}).items()}

    # models to evaluate: name -> (context factory, adapter or None, source)
    runs: dict[str, tuple[Any, str | None, str]] = {BASE: (_context(wrapped, None), None, source)}
    for name in adapter_names:
        runs[name] = (_context(wrapped, name), name, source)
    ref_name = BASE
    extra_ref_model = None
    if reference not in (None, BASE):
        if isinstance(reference, str) and reference in runs:
            ref_name = reference
        else:
            ref_source = str(reference) if isinstance(reference, (str, Path)) else "<in-memory reference>"
            if isinstance(reference, (str, Path)):
                extra_ref_model, _ = load_pretrained(reference, dtype=dtype)
            else:
                extra_ref_model = reference
            ref_name = "reference"
            runs = {ref_name: (_context(extra_ref_model, None), None, ref_source), **runs}
    if baseline is None and "lora" in runs:
        baseline = "lora"
    if baseline is not None and baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not one of the evaluated models {list(runs)}")

    prompts = [it.prompt for it in items]
    labels = [it.label for it in items]
    cats = [it.category for it in items]
    generations: dict[str, list[Generation]] = {}
    models_out: dict[str, Any] = {}
    responses_out: dict[str, Any] = {}
    for name, (ctx, adapter, src) in tqdm(runs.items(), desc="models", disable=not progress):
        with ctx() as m:
            gens = generate(m, tokenizer, prompts, max_new_tokens, batch_size, system_prompt, True, progress, name)
        generations[name] = gens
        texts = [g.text for g in gens]
        refusals = judge_obj.judge(prompts, texts)
        coh = [check_coherence(t) for t in texts]
        metrics = model_metrics(cats, labels, refusals, [c.coherent for c in coh])
        role = "reference" if name == ref_name else "baseline" if name == baseline else "model"
        models_out[name] = {"source": src, "adapter": adapter_dirs.get(adapter, adapter), "role": role, **metrics}
        models_out[name]["kl"] = None
        responses_out[name] = [
            {
                "id": it.id,
                "category": it.category,
                "label": it.label,
                "response": t,
                "refusal": r,
                "coherent": c.coherent,
            }
            for it, t, r, c in zip(items, texts, refusals, coh, strict=True)
        ]

    ref_metrics = models_out[ref_name]
    for name, m in models_out.items():
        if name != ref_name:
            add_drift(m, ref_metrics)
    if baseline is not None:
        for name, m in models_out.items():
            if name != ref_name:
                add_drift_reduction(m, models_out[baseline])

    if compute_kl:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ref_ctx = runs[ref_name][0]
        for name, (ctx, _, _) in runs.items():
            if name == ref_name:
                continue
            kl = kl_between(ref_ctx, ctx, generations[ref_name], batch_size, pad_id, progress)
            models_out[name]["kl"] = kl.to_dict()

    n_unsafe = sum(lab == "unsafe" for lab in labels)
    results = {
        "schema": "agl-trl/drift",
        "schema_version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "agl_trl_version": package_version(),
        "config": {
            "model": source,
            "adapters": adapter_dirs,
            "reference": ref_name if not isinstance(reference, (str, Path)) else str(reference),
            "baseline": baseline,
            "dataset": dataset,
            "split": split,
            "categories": list(categories) if categories else None,
            "limit_per_category": limit_per_category,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "system_prompt": system_prompt,
            "compute_kl": compute_kl,
        },
        "judge": {"name": judge_obj.name},
        "dataset": {
            "name": items[0].source,
            "split": split,
            "n_prompts": len(items),
            "n_unsafe": n_unsafe,
            "n_safe": len(items) - n_unsafe,
            "categories": sorted(set(cats)),
        },
        "reference": ref_name,
        "baseline": baseline,
        "models": models_out,
        "responses": responses_out,
    }
    return jsonable(results)
