"""The shared set-up of every experiment, as cached stages under one folder (:mod:`agl_trl.experiments.stages`).

1. ``align_data`` -- safety SFT data from the safety-training part of the DriftCaps *probe* split: unsafe prompts
   -> composed refusals, safe prompts (ordinary + contrast look-alikes) -> the base model's own greedy answers (those
   the judge reads as refusals dropped); a base model that does not answer chat takes SmolLM2's shipped ones
   (:func:`reference_safe_answers`).
2. ``aligned``    -- a safety LoRA SFT on that data, stored as a bf16 adapter (``aligned/adapter``) and merged into
   the weights (``aligned/model``).
3. ``gen_aligned`` -- the aligned model's greedy answers on the DriftCaps *test* subset and the task's test items
   (the reference of every reported drift and KL number); ``gen_aligned_validation`` the same on the *validation*
   split (only when asked: the reference of every choice of settings).
4. ``fisher``     -- the Fisher artifact of the aligned model on the probe split's *held-back* part
   (:func:`probe_parts`: behaviours the safety stage never trained on) (``fisher/artifact``), and ``probe.jsonl``:
   its probe records, then the KL meter's, each with the aligned model's answer.

The demo, the peers benchmark and the scaling sweep start from :func:`prepare_setup`, so with the same settings
they share (and reuse) one set-up folder; stages whose settings match the shipped set-up
(:mod:`agl_trl.experiments.shipped`) are restored from it instead of built.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from agl_trl.experiments.aligned import ModelLoader, merge_adapter, model_loader, save_adapter
from agl_trl.experiments.config import ExperimentConfig
from agl_trl.experiments.log import settings_key
from agl_trl.experiments.measure import RESPONSES_FILE, evaluate_generations, read_json, write_json
from agl_trl.experiments.shipped import DEFAULT_SETUP, STAGES, ShippedSetup, ShippedSetupError, shipped_setup
from agl_trl.experiments.stages import StageRunner, read_marker
from agl_trl.experiments.task import TaskItem
from agl_trl.experiments.task_kinds import task_kind
from agl_trl.experiments.training import lora_config, train_lora
from agl_trl.model_sources import is_chat_model
from agl_trl.utils import append_jsonl, files_sha256, read_jsonl

PROBE_FILE = "probe.jsonl"  # in the fisher stage's folder: the Fisher's probe records, then the KL meter's


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


def probe_parts(items: Sequence[Any], holdout_every: int) -> tuple[list[Any], list[Any]]:
    """Split probe prompts into (safety-training part, held-back part) by behaviour: within each (label, category),
    every ``holdout_every``-th behaviour (file order; ``behavior`` field, else the id) is held back, so no behaviour
    that the Fisher or a probe-based anchor sees was trained on by the safety stage."""
    order: dict[tuple[str, str], list[str]] = {}
    for it in items:
        behaviours = order.setdefault((it.label, it.category), [])
        key = getattr(it, "behavior", None) or it.id
        if key not in behaviours:
            behaviours.append(key)
    held = {
        (group, b) for group, behaviours in order.items() for i, b in enumerate(behaviours)
        if i % holdout_every == holdout_every - 1
    }  # fmt: skip
    train, back = [], []
    for it in items:
        key = ((it.label, it.category), getattr(it, "behavior", None) or it.id)
        (back if key in held else train).append(it)
    return train, back


def held_back_items(cfg: ExperimentConfig) -> list[Any]:
    """The probe split's held-back part (:func:`probe_parts`) without the styles ``probe.exclude_styles`` names."""
    from agl_trl.driftcaps import load_driftcaps

    _, held = probe_parts(load_driftcaps(split="probe"), cfg.probe.holdout_every)
    excluded = set(cfg.probe.exclude_styles)
    return [it for it in held if getattr(it, "style", None) not in excluded]


def probe_items(cfg: ExperimentConfig) -> list[Any]:
    """The Fisher stage's probe prompts (also the peers' probe anchors) as DriftCaps items: from the probe split's
    held-back part, unsafe only or half unsafe / half safe (``probe.kind``)."""
    p = cfg.probe
    held = held_back_items(cfg)
    if p.kind == "unsafe":
        return stratified_subset(held, p.n, "unsafe")
    return stratified_subset(held, p.n // 2, "unsafe") + stratified_subset(held, p.n - p.n // 2, "safe")


def meter_items(cfg: ExperimentConfig) -> list[Any]:
    """The KL meter's probe prompts: the probe split's held-back part minus the Fisher's (:func:`probe_items`),
    unsafe and safe alternating, so the drift budget is measured on prompts neither the safety stage nor the Fisher
    saw, on both sides of the boundary."""
    from agl_trl.driftcaps import alternate_labels

    held = held_back_items(cfg)
    used = {it.prompt for it in probe_items(cfg)}
    # leftovers first: the meter reads the last ones, which are then balanced
    return alternate_labels([it for it in held if it.prompt not in used], leftovers_first=True)


def probe_prompts(cfg: ExperimentConfig) -> list[str]:
    """The prompts of :func:`probe_items`."""
    return [it.prompt for it in probe_items(cfg)]


def eval_subset_of(cfg: ExperimentConfig, split: str = "test") -> list[Any]:
    """The DriftCaps prompts of ``split`` (``test`` or ``validation``) every model is measured on: a fixed
    category-stratified subset of the sizes in ``cfg.eval``."""
    from agl_trl.driftcaps import load_driftcaps

    if split not in ("test", "validation"):
        raise ValueError(f"eval_subset_of: split must be 'test' or 'validation', got {split!r}")
    items = load_driftcaps(split=split)
    e = cfg.eval
    n_unsafe, n_safe = (e.n_unsafe, e.n_safe) if split == "test" else (e.n_val_unsafe, e.n_val_safe)
    return stratified_subset(items, n_unsafe, "unsafe") + stratified_subset(items, n_safe, "safe")


SAFE_ANSWERS_SETUP = DEFAULT_SETUP
"""The shipped set-up whose safety data gives a base model's safe answers (:func:`reference_safe_answers`)."""


def reference_safe_answers(prompts: Sequence[str]) -> list[str]:
    """The safe answers of the safety data of a base model (``chat=False`` in :mod:`agl_trl.model_sources`).

    A base model does not answer chat (Gemma 3 270M repeats the prompt), so its own answers would teach the safety
    stage nothing helpful. The answers come from :data:`SAFE_ANSWERS_SETUP` instead: SmolLM2-135M-Instruct's greedy
    answers to the same DriftCaps probe prompts in its shipped safety data (those the judge read as refusals already
    dropped): the same bytes on every machine, whatever model is aligned. A prompt without one there (other
    ``probe.holdout_every``, or dropped there) gets ``""``, and the stage drops it.
    """
    answers = shipped_setup(SAFE_ANSWERS_SETUP).safe_answers()
    return [answers.get(p, "") for p in prompts]


def eval_stage_key(cfg: ExperimentConfig, eval_subset: Sequence[Any], task_eval: Sequence[TaskItem]) -> dict:
    """What a model's ``gen_<name>`` stage depends on besides the model."""
    return {
        "eval": {k: v for k, v in asdict(cfg.eval).items() if k != "kl_prompts"},  # answers do not depend on it
        "ids": [it.id for it in eval_subset],
        "prompts": settings_key([it.prompt for it in eval_subset]),
        "task_eval": [it.prompt for it in task_eval],
        "answer_tokens": cfg.task.answer_tokens,
        **cfg.task.kind_key(),  # the items' answers, their scoring and the generation budget (none: the default)
    }


@dataclass
class Setup:
    """The shared set-up on disk, and what every run of an experiment is measured against."""

    cfg: ExperimentConfig
    out: Path
    runner: StageRunner
    eval_subset: list[Any]  # the test prompts (reported)
    task_train: list[TaskItem]
    task_eval: list[TaskItem]  # the task's test items
    aligned_info: dict[str, Any]  # the gen_aligned stage's result (judge, task score)
    fisher_info: dict[str, Any]
    validation_subset: list[Any]  # the validation prompts (settings are chosen on them)
    task_validation: list[TaskItem]
    align_info: dict[str, Any]  # the align_data stage's result (rows, dropped safe refusals)

    @property
    def aligned_dir(self) -> Path:
        return self.out / "aligned" / "model"

    @property
    def fisher_dir(self) -> Path:
        return self.out / "fisher" / "artifact"

    @property
    def shipped_version(self) -> str | None:
        """The shipped set-up (``<name>/<version>``) every set-up stage was restored from; None for a local build."""
        versions = {(read_marker(self.out / s) or {}).get("result", {}).get("shipped") for s in ("aligned", "fisher")}
        return versions.pop() if len(versions) == 1 else None

    @property
    def setup_id(self) -> str:
        """Which set-up this is: the shipped set-up's version, else (a local build) the first 12 hex digits of the
        SHA-256 of the aligned model's weight files.

        Rebuilding the set-up on another machine can give other weights (the float results of its training differ),
        so rows measured on different set-ups are compared against different aligned models; results record this id
        so a report can tell them apart. Hashing the ~0.5 GB of SmolLM2 weights takes about a second.
        """
        if self.shipped_version is not None:
            return self.shipped_version
        files = sorted(self.aligned_dir.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no aligned model weights under {self.aligned_dir}: run prepare_setup first")
        return files_sha256(*files)[:12]

    @property
    def probe_file(self) -> Path:
        """The Fisher's probe records, then the KL meter's held-out ones (:func:`meter_items`)."""
        return self.out / "fisher" / PROBE_FILE

    def agl_fields(self, settings: Any) -> dict[str, Any]:
        """The ``agl_*`` fields of an AGL run with regulariser ``settings`` on this set-up's artifact and probe."""
        from agl_trl.experiments.training import agl_fields

        n = len(read_jsonl(self.probe_file)) - len(meter_items(self.cfg))
        return agl_fields(settings, self.fisher_dir, replace(self.cfg.fisher, max_samples=n), self.probe_file)

    @property
    def reference_rows(self) -> list[dict[str, Any]]:
        """The aligned model's ``responses.json`` rows on the test prompts (its answers, judge verdicts)."""
        return read_json(self.out / "gen_aligned" / RESPONSES_FILE)

    def reference_rows_of(self, split: str) -> list[dict[str, Any]]:
        """The aligned model's rows on ``split`` (``test``; ``validation`` when the setup was asked for it)."""
        stage = "gen_aligned" if split == "test" else "gen_aligned_validation"
        path = self.out / stage / RESPONSES_FILE
        if not path.is_file():
            raise RuntimeError(f"no aligned answers on the {split} split: call prepare_setup(..., validation=True)")
        return read_json(path)

    def prompts_of(self, split: str) -> tuple[list[Any], list[TaskItem]]:
        """(DriftCaps prompts, task items) of ``split`` (``test`` or ``validation``)."""
        if split == "test":
            return self.eval_subset, self.task_eval
        if split == "validation":
            return self.validation_subset, self.task_validation
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")

    @property
    def task_rows(self) -> list[dict[str, str]]:
        return [{"prompt": it.prompt, "answer": it.answer} for it in self.task_train]

    @property
    def safety_rows(self) -> list[dict[str, str]]:
        """The safety stage's unsafe rows (prompt -> composed refusal): data mixing and Lisa train on them."""
        return [r for r in read_json(self.out / "align_data" / "rows.json") if r["label"] == "unsafe"]


def prepare_setup(
    cfg: ExperimentConfig,
    out: str | Path,
    loader: ModelLoader | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    validation: bool = False,
    shipped: str | ShippedSetup | None = DEFAULT_SETUP,
    precision: str = "auto",
) -> Setup:
    """Run, restore or reuse the set-up stages under ``out`` (see the module docstring).

    ``loader``: ``() -> (model, tokenizer)`` of the *unaligned* base model (default: the offline model ``cfg.model``
    names, :func:`~agl_trl.experiments.aligned.model_loader`; tests inject a tiny Llama). ``cfg.model`` names it in
    the stage keys; a shipped set-up of another model is never restored. ``validation``: also measure the aligned
    model on the validation split (what choosing settings compares against). ``shipped``: the shipped set-up whose
    stages are restored where their settings match (:mod:`agl_trl.experiments.shipped`; a name, a folder or a
    :class:`ShippedSetup`); None builds every stage here (``agl-trl demo --rebuild-setup``; refused in a folder
    whose set-up was restored, since its later stages were measured against that one). ``precision``: the safety
    LoRA's (:func:`train_lora`), when it is built here.
    """
    from agl_trl.driftcaps import load_driftcaps, load_refusal_templates
    from agl_trl.models import load_pretrained

    out, c, loader = Path(out), cfg, loader or model_loader(cfg.model)
    chat = is_chat_model(c.model)
    runner = StageRunner(out, log=log)
    source = shipped if isinstance(shipped, ShippedSetup) or shipped is None else shipped_setup(shipped, loader)
    if source is not None and source.loader is None:  # its adapter merges into this set-up's base model
        source.loader = loader
    if source is None:  # a rebuild: a folder whose set-up was restored holds stages trained on that set-up
        restored = [s for s in STAGES if ((runner.marker(s) or {}).get("result") or {}).get("shipped")]
        if restored:
            raise ShippedSetupError(
                f"{out} holds a set-up restored from the shipped {runner.marker(restored[0])['result']['shipped']} "
                f"({', '.join(restored)}), and the stages after it were measured against that set-up: build the "
                "set-up in a new folder instead (e.g. `agl-trl demo --rebuild-setup --out runs/demo-rebuilt`)"
            )
    if source is not None and source.model not in (None, c.model):  # another model's set-up is never restored
        if log:
            log(f"[setup] the shipped set-up {source.version} is of model {source.model!r}, not {c.model!r}: "
                "building the set-up here")  # fmt: skip
        source = None
    align_part, _ = probe_parts(load_driftcaps(split="probe"), c.probe.holdout_every)
    eval_subset = eval_subset_of(c, "test")
    validation_subset = eval_subset_of(c, "validation")
    task_train, task_validation, task_eval = task_kind(c.task.kind).splits(
        c.task.n_train, c.task.n_validation, c.task.n_eval, seed=c.seed
    )

    def align_data(directory: Path) -> dict[str, Any]:
        from agl_trl.evaluation.judges import make_judge
        from agl_trl.generation import generate_responses

        unsafe = stratified_subset(align_part, c.align.n_unsafe, "unsafe")
        safe = stratified_subset(align_part, c.align.n_safe, "safe")
        refusals = load_refusal_templates()
        rng = random.Random(c.seed)
        if chat:
            model, tokenizer = loader()
            answers = generate_responses(
                model, tokenizer, [it.prompt for it in safe], c.align.answer_tokens, 32, progress=progress, desc="base"
            )
        else:  # a base model: another model's answers (reference_safe_answers)
            answers = reference_safe_answers([it.prompt for it in safe])
        judge = make_judge(c.eval.judge)
        refused = judge.judge([it.prompt for it in safe], answers)
        helpful = [(it, a) for it, a, r in zip(safe, answers, refused, strict=True) if a.strip() and not r]
        rows = [{"prompt": it.prompt, "answer": rng.choice(refusals), "label": "unsafe"} for it in unsafe]
        rows += [{"prompt": it.prompt, "answer": a, "label": "safe"} for it, a in helpful] * c.align.safe_weight
        rng.shuffle(rows)
        write_json(directory / "rows.json", rows)
        return {
            "n_unsafe": len(unsafe), "n_safe": len(safe), "n_rows": len(rows), "judge": judge.name,
            "safe_dropped_as_refusals": int(sum(refused)), "distinct_refusals": len(set(refusals)),
            **({} if chat else {"safe_answers": SAFE_ANSWERS_SETUP, "safe_without_answer": answers.count("")}),
        }  # fmt: skip

    def aligned(directory: Path) -> dict[str, Any]:
        model, tokenizer = loader()
        trained, record = train_lora(
            model, tokenizer, read_json(out / "align_data" / "rows.json"), directory, lora=c.lora, seed=c.seed,
            steps=c.align.steps, learning_rate=c.align.learning_rate, batch_size=c.align.batch_size,
            progress=progress, precision=precision,
        )  # fmt: skip
        save_adapter(trained, directory / "adapter")
        del trained, model
        merge_adapter(loader, directory / "adapter", directory / "model")
        return {"train": record}

    def gen_aligned_on(items: Sequence[Any], task_items: Sequence[TaskItem]) -> Callable[[Path], dict[str, Any]]:
        def stage(directory: Path) -> dict[str, Any]:
            model, tokenizer = load_pretrained(out / "aligned" / "model")
            return evaluate_generations(
                model, tokenizer, items, task_items, c.eval, c.task.answer_tokens, directory, "aligned", progress,
                kind=c.task.kind,
            )  # fmt: skip

        return stage

    def fisher(directory: Path) -> dict[str, Any]:
        from peft import get_peft_model

        from agl_trl.fisher import resolve_artifact
        from agl_trl.fisher.probe import fill_missing_responses

        prompts = probe_prompts(c)
        model, tokenizer = load_pretrained(out / "aligned" / "model")
        settings = replace(c.fisher, max_samples=len(prompts), seed=c.seed)
        # the aligned model answers every probe prompt once, here: the Fisher, the KL meter and the anchor steps read
        # these answers from the probe file instead of generating them again at every training start
        pending = [{"prompt": p, "response": None} for p in [*prompts, *(it.prompt for it in meter_items(c))]]
        answered = fill_missing_responses(
            model, tokenizer, pending, settings.max_new_tokens, settings.batch_size, progress
        )
        records = answered[: len(prompts)]
        (directory / PROBE_FILE).unlink(missing_ok=True)
        append_jsonl(directory / PROBE_FILE, answered)  # the Fisher's records, then the KL meter's
        torch.manual_seed(c.seed)
        peft_model = get_peft_model(model, lora_config(c.lora))
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

    from agl_trl.driftcaps import split_sha256

    # the safety data reads only the probe split, so it is keyed by the probe records alone: a DriftCaps version that
    # adds validation or test prompts and keeps the probe records (v3) keeps this stage, the aligned model and the Fisher
    data = {"probe_sha256": split_sha256("probe")[:16]}
    data_key = {"model": c.model, "seed": c.seed, "align": asdict(c.align), "data": data,
                "judge": c.eval.judge, "holdout_every": c.probe.holdout_every}  # fmt: skip
    if not chat:  # a base model's safe answers are another set-up's (a chat model's keys stay as they were)
        data_key["safe_answers"] = SAFE_ANSWERS_SETUP
    align_info = runner.run("align_data", data_key, align_data, source=source)
    aligned_key = {"lora": asdict(c.lora), "align": asdict(c.align), "seed": c.seed}
    planned = runner.preview_key(aligned_key, ("align_data",))
    if source is not None and log and not source.has("aligned", planned) and not runner.is_done("aligned", planned):
        log(f"[aligned] the settings differ from the shipped set-up {source.version}: building the set-up here")
    runner.run("aligned", aligned_key, aligned, ("align_data",), source=source)
    aligned_info = runner.run(
        "gen_aligned", eval_stage_key(c, eval_subset, task_eval), gen_aligned_on(eval_subset, task_eval), ("aligned",),
        source=source,
    )  # fmt: skip
    if validation:
        runner.run(
            "gen_aligned_validation", eval_stage_key(c, validation_subset, task_validation),
            gen_aligned_on(validation_subset, task_validation), ("aligned",), source=source,
        )  # fmt: skip
    fisher_key = {"probe": c.probe.to_key(), "fisher": asdict(c.fisher), "lora": asdict(c.lora), "seed": c.seed}
    fisher_info = runner.run("fisher", fisher_key, fisher, ("aligned",), source=source)
    return Setup(
        c, out, runner, eval_subset, task_train, task_eval, aligned_info, fisher_info, validation_subset,
        task_validation, align_info,
    )  # fmt: skip


__all__ = [
    "Setup",
    "eval_stage_key",
    "eval_subset_of",
    "prepare_setup",
    "probe_items",
    "probe_parts",
    "probe_prompts",
    "reference_safe_answers",
    "stratified_subset",
]
