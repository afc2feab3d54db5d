"""AGL against the peers a user would pick instead, under one fair protocol (docs/peers.md).

The shared stages come from :func:`~agl_trl.experiments.prepare_setup` (cached under ``<out>/demo``): the aligned
SmolLM2 (base + merged safety LoRA), its K-FAC Fisher artifact, and the aligned model's answers on the DriftCaps
validation and test prompts. On top of them, cached under ``<out>/shared``, what only the peers need
(:func:`~agl_trl.baselines.prepare_peer_artifacts`). Every training is the experiments' task fine-tune
(:func:`~agl_trl.experiments.train_lora`: same data, steps, LR, batch; the seed sets the LoRA init and the data
order) with one method of the registry (:mod:`benchmarks.lab.registry`) at one strength.

The protocol (:mod:`benchmarks.lab.peers_config`), method by method, plain LoRA first:

1. **sweep**: train at each strength of the method's grid with the sweep seed and measure on the *validation*
   split (plain LoRA's sweep run also records the task's learning curve on the validation items);
2. **choose** the strength the method would ship (:func:`~benchmarks.lab.peers_config.choose`, validation
   numbers only);
3. **test**: train at that strength with every seed (the sweep seed's training is reused) and measure once on the
   *test* split.

Resumable: one JSON line per finished (split, method, strength, seed) in ``<out>/peers.jsonl``, adapters cached per
(method, strength, seed); a rerun skips what is there. ``--report`` (or ``benchmarks/peers_report.py``) turns the file
into docs/peers.md and its plots.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agl_trl.experiments.setup import ModelLoader, Setup
from benchmarks.lab.peers_config import (
    BenchConfig,
    Point,
    choose,
    config_key,
    method_order,
    run_key,
)
from benchmarks.lab.records import RESULTS_DIR, sync_results
from benchmarks.lab.registry import (
    ABLATIONS,
    METHOD_REVISIONS,
    PeerArtifacts,
    method_agl_settings,
    method_settings,
    method_training,
    prepare_peer_artifacts,
    safe_lora_adapter,
    strength_of,
    with_strength,
)

RESULTS_FILE = "peers.jsonl"
RECORD_DIR = RESULTS_DIR / "peers_runs"  # ``--record``: the committed copies of run folders' results, per precision
STALE_FILE = "peers.stale.jsonl"  # rows whose run key no longer matches (an older revision of a method's settings)
TRAIN_RECORD = "train.json"
RUN_KEY = ("split", "method", "strength", "seed")


@dataclass
class Shared:
    """What every run reads: the shared set-up, the peers' artifacts, and the aligned model's answers per split."""

    setup: Setup
    artifacts: PeerArtifacts
    reference_rows: dict[str, list[dict[str, Any]]]  # split -> the aligned model's responses.json rows
    setup_id: str  # Setup.setup_id, hashed once: every row records it

    @property
    def aligned_dir(self) -> Path:
        return self.setup.aligned_dir


# extra measurements during a training: (shared, tokenizer, method, strength, seed) -> {record field: a
# TrainerCallback whose ``points`` hold what it measured, as JSON}; each callback's ``points`` land in the training
# record (and so in the row) under its field (the stress scenarios' gap curve: benchmarks.lab.peers_stress)
TrainHook = Callable[[Shared, Any, str, float | None, int], Mapping[str, Any]]


def _log(message: str) -> None:
    print(message, flush=True)


def prepare_shared(
    cfg: BenchConfig, out: Path, loader: ModelLoader | None, progress: bool, demo_dir: Path | None = None
) -> Shared:
    """The shared set-up (under ``demo_dir``, default ``<out>/demo``: an ``agl-trl demo --out`` folder with the same
    settings is reused) and the peers' artifacts under ``<out>/shared`` (cleared when the settings change)."""
    from agl_trl.experiments import lora_config, model_loader, prepare_setup, probe_items
    from agl_trl.experiments.log import settings_key

    c = cfg.demo
    setup = prepare_setup(c, demo_dir or out / "demo", loader, progress, log=_log, validation=True)
    shared = out / "shared"
    # what the artifacts depend on: the aligned model and the probe (not the task fine-tune or AGL's settings)
    key = settings_key({k: v for k, v in c.to_dict().items() if k not in ("task", "agl", "eval", "quick")}
                       | {"rank": cfg.peers.direction_rank})  # fmt: skip
    key_file = shared / "key.json"
    if not key_file.is_file() or key_file.read_text() != key:  # other (or unknown) settings: start this folder afresh
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir(parents=True)
        key_file.write_text(key)
    probe = probe_items(c)
    artifacts = prepare_peer_artifacts(
        shared, setup.aligned_dir, loader or model_loader(c.model), [it.prompt for it in probe], c.fisher,
        lora_config(c.lora), unsafe_prompts=[it.prompt for it in probe if it.label == "unsafe"],
        safety_rows=setup.safety_rows, direction_rank=cfg.peers.direction_rank,
        generation_batch_size=c.eval.batch_size, seed=c.seed, progress=progress, log=_log,
    )  # fmt: skip
    references = {split: setup.reference_rows_of(split) for split in ("validation", "test")}
    return Shared(setup, artifacts, references, setup.setup_id)


def _strength_dir(strength: float | None) -> str:
    return "none" if strength is None else f"{strength:g}"


def train_dir(out: Path, method: str, strength: float | None, seed: int) -> Path:
    """Where the adapter and training record of one (method, strength, seed) are cached."""
    return out / "train" / method / _strength_dir(strength) / f"seed{seed}"


def twin_training(cfg: BenchConfig, out: Path, method: str, strength: float | None, seed: int) -> Path | None:
    """A finished, current training of another AGL method (AGL or an ablation) with the same regulariser settings,
    strength and seed, or None. It is the same computation (same code, data, seed; the runs are deterministic: the
    demo reproduces the benchmark's rows exactly), so :func:`train_run` copies its adapter instead of training
    again, e.g. when a default change makes AGL equal one of its ablations."""
    agl, _ = with_strength(method, strength, cfg.demo.agl, cfg.peers)
    mine = method_agl_settings(method, agl)
    if mine is None:
        return None
    from agl_trl.experiments import read_json

    for other in ("agl", *ABLATIONS):
        if other == method or METHOD_REVISIONS.get(other, 0) != METHOD_REVISIONS.get(method, 0):
            continue
        if method_agl_settings(other, with_strength(other, strength, cfg.demo.agl, cfg.peers)[0]) != mine:
            continue
        record_file = train_dir(out, other, strength, seed) / TRAIN_RECORD
        if record_file.is_file() and read_json(record_file).get("run_key") == run_key(cfg, other, strength):
            return record_file.parent
    return None


def train_run(
    cfg: BenchConfig, shared: Shared, out: Path, method: str, strength: float | None, seed: int, progress: bool,
    hook: TrainHook | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train (or project, for Safe LoRA; or reuse the cached adapter) one (method, strength, seed); returns its
    training record (``adapter``: the adapter folder; ``hook``'s fields when it was trained here with one)."""
    from agl_trl.experiments import PeakRSS, read_json, train_lora, write_json
    from agl_trl.experiments.measure import task_curve_callback
    from agl_trl.models import load_pretrained

    directory = train_dir(out, method, strength, seed)
    record_file = directory / TRAIN_RECORD
    key = run_key(cfg, method, strength)
    if record_file.is_file():
        cached = read_json(record_file)
        if cached.get("run_key") == key:  # the adapter is where the record is now (run folders move, links resolve)
            return {**cached, "adapter": str(directory / "adapter")}
        stale = directory.with_name(f"{directory.name}.stale-{cached.get('run_key') or 'unkeyed'}")
        shutil.rmtree(stale, ignore_errors=True)
        directory.rename(stale)  # kept beside it, never deleted: trained with other settings or code
        _log(f"peers: {directory} was trained with other settings; moved to {stale.name}, training again")
    directory.mkdir(parents=True, exist_ok=True)
    adapter = directory / "adapter"
    twin = twin_training(cfg, out, method, strength, seed)
    if twin is not None:
        shutil.rmtree(adapter, ignore_errors=True)
        shutil.copytree(twin / "adapter", adapter)
        record = {**read_json(twin / TRAIN_RECORD), "run_key": key, "adapter": str(adapter), "copied_from": str(twin)}
        write_json(record_file.with_suffix(".tmp"), record)
        record_file.with_suffix(".tmp").replace(record_file)
        _log(f"peers: {directory}: the same training as {twin} (identical settings and seed), copied")
        return record
    demo = cfg.demo
    agl, peers = with_strength(method, strength, demo.agl, cfg.peers)
    record: dict[str, Any] = {"settings": method_settings(method, agl, peers), "run_key": key}
    if method == "safe_lora":
        plain = train_run(cfg, shared, out, "plain", None, seed, progress)
        record.update(safe_lora_adapter(shared.artifacts, Path(plain["adapter"]), adapter, peers))
        record.update({k: plain.get(k) for k in ("step_seconds_median", "train_seconds", "peak_memory_mb")})
    else:
        model, tokenizer = load_pretrained(shared.aligned_dir)
        model.train()
        rows, kwargs = method_training(cfg, shared, method, strength, seed)
        curve = None
        if method == "plain" and seed == cfg.sweep_seed and cfg.curve_points > 0:
            steps = demo.task.steps
            marks = sorted({max(1, round(steps * (i + 1) / cfg.curve_points)) for i in range(cfg.curve_points)})
            curve = task_curve_callback(
                tokenizer, shared.setup.task_validation, marks, demo.task.answer_tokens, demo.eval.batch_size,
                demo.task.kind,
            )  # fmt: skip
            kwargs["callbacks"] = [curve]
        extra = dict(hook(shared, tokenizer, method, strength, seed)) if hook is not None else {}
        if extra:
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), *extra.values()]
        with PeakRSS() as rss:  # the experiments train on CPU (use_cpu=True): resident memory is the training memory
            trained, train = train_lora(
                model, tokenizer, rows, directory, lora=demo.lora, seed=seed, steps=demo.task.steps,
                learning_rate=demo.task.learning_rate, batch_size=demo.task.batch_size, progress=progress, **kwargs,
            )  # fmt: skip
        trained.save_pretrained(adapter)
        del trained
        record.update(
            step_seconds_median=train.get("step_seconds_median"), train_seconds=train.get("seconds"),
            peak_memory_mb=round(rss.extra / 2**20, 1), final_train_loss=train.get("final_train_loss"),
            # the last logged value of each agl/* metric (AGL terms or the baseline penalty's): proof that it ran
            penalty_metrics={k: v[-1][1] for k, v in (train.get("agl_curves") or {}).items() if v},
            agl_curves=train.get("agl_curves") or {},  # every logged agl/* value (the KL meter's readings too)
            n_train_rows=len(rows), task_curve=curve.points if curve is not None else None,
            **{field: callback.points for field, callback in extra.items()},
        )  # fmt: skip
    record["adapter"] = str(adapter)
    write_json(record_file.with_suffix(".tmp"), record)
    record_file.with_suffix(".tmp").replace(record_file)  # the marker lands last: a cut run retrains
    return record


def _bits(values: Sequence[bool]) -> str:
    return "".join("1" if v else "0" for v in values)


def _verdict_fields(rows: list[dict[str, Any]], verdicts: Any) -> dict[str, Any]:
    """The per-prompt fields every result row carries: verdict bits (for the paired bootstrap), prompt ids and the
    by-style / by-form rates."""
    from agl_trl.evaluation.report import jsonable
    from agl_trl.evaluation.selectivity import by_group

    return {
        "n_unsafe": len(verdicts.unsafe),
        "n_safe": len(verdicts.safe),
        "verdicts": {"unsafe": _bits(verdicts.unsafe), "safe": _bits(verdicts.safe), "task": _bits(verdicts.task)},
        "prompt_ids": [r["id"] for r in rows],
        "by_style": jsonable(by_group(rows, "style")),
        "by_form": jsonable(by_group(rows, "form")),
    }


def evaluate_run(
    cfg: BenchConfig, shared: Shared, out: Path, split: str, method: str, strength: float | None, seed: int,
    record: dict[str, Any], progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Measure one trained (method, strength, seed) on ``split``; returns its result row."""
    from agl_trl.evaluation.report import jsonable
    from agl_trl.evaluation.selectivity import Verdicts, selectivity
    from agl_trl.experiments import evaluate_generations, kl_to_aligned, read_json, response_metrics
    from agl_trl.experiments.measure import RESPONSES_FILE
    from agl_trl.models import load_pretrained

    demo = cfg.demo
    directory = train_dir(out, method, strength, seed) / split
    directory.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_pretrained(shared.aligned_dir, record["adapter"])
    prompts, task_items = shared.setup.prompts_of(split)
    gen = evaluate_generations(
        model, tokenizer, prompts, task_items, demo.eval, demo.task.answer_tokens, directory, method, progress,
        kind=demo.task.kind,
    )  # fmt: skip
    reference = shared.reference_rows[split]
    kl = kl_to_aligned(model, tokenizer, reference, demo.eval.batch_size, progress)
    rows = read_json(directory / RESPONSES_FILE)
    verdicts = Verdicts.from_rows(rows, gen["task"]["hits"])
    aligned = selectivity(Verdicts.from_rows(reference))
    own = selectivity(verdicts)
    overall = jsonable(response_metrics(rows)["overall"])
    return {
        "split": split,
        "method": method,
        "strength": strength,
        "strength_name": strength_of(method),
        "seed": seed,
        "refusal_unsafe": own["refusal_unsafe"],
        "over_refusal": own["over_refusal"],
        "gap": own["gap"],
        "aligned_refusal_unsafe": aligned["refusal_unsafe"],
        "aligned_over_refusal": aligned["over_refusal"],
        "aligned_gap": aligned["gap"],
        "gap_drift": aligned["gap"] - own["gap"],
        "refusal_drift": aligned["refusal_unsafe"] - own["refusal_unsafe"],
        "incoherent": overall["incoherent"]["rate"],
        **_verdict_fields(rows, verdicts),
        "kl_drift": kl["mean"],
        "kl_drift_by_label": kl["by_label"],
        "task_exact_match": gen["task"]["exact_match"],
        "task_n": gen["task"]["n"],
        **task_fields(demo.task.kind, gen["task"]),
        "judge": gen["judge"],
        **{k: v for k, v in record.items() if k != "adapter"},
    }


def task_fields(kind: str, task: Mapping[str, Any]) -> dict[str, Any]:
    """The task kind's fields of a result row: ``task_kind`` (which data the run trained on); for a kind whose
    answers open with a fixed text (identity_shift's affirmations), ``task_opening_rate``: the share of task answers
    that open with one (was the data learned?); for a kind scored with token F1 too (passage_qa), ``task_f1``."""
    opening = {"task_opening_rate": task["opening"]["rate"]} if "opening" in task else {}
    return {"task_kind": kind, **opening, **({"task_f1": task["f1"]} if "f1" in task else {})}


def reference_row(shared: Shared, split: str) -> dict[str, Any]:
    """The aligned model's row on ``split`` (method ``aligned``): the reference every paired comparison needs."""
    from agl_trl.evaluation.selectivity import Verdicts, selectivity
    from agl_trl.experiments import read_json
    from agl_trl.experiments.task import TaskItem
    from agl_trl.experiments.task_kinds import task_kind

    stage = "gen_aligned" if split == "test" else "gen_aligned_validation"
    task = read_json(shared.setup.out / stage / "task.json")
    items = [TaskItem(t["prompt"], t["answer"], t["operation"]) for t in task]
    kind = shared.setup.cfg.task.kind
    hits = task_kind(kind).score(items, [t["prediction"] for t in task])
    rows = shared.reference_rows[split]
    verdicts = Verdicts.from_rows(rows, hits["hits"])
    own = selectivity(verdicts)
    return {
        "split": split, "method": "aligned", "strength": None, "strength_name": None, "seed": 0, **own,
        **_verdict_fields(rows, verdicts), "task_exact_match": hits["exact_match"], "task_n": hits["n"],
        **task_fields(kind, hits), "judge": shared.setup.aligned_info.get("judge"), "align": shared.setup.align_info,
        "setup_id": shared.setup_id,
    }  # fmt: skip


def run_benchmark(
    cfg: BenchConfig,
    out: str | Path,
    loader: ModelLoader | None = None,
    progress: bool = True,
    demo_dir: str | Path | None = None,
    threads: int | None = None,
    max_runs: int | None = None,
    points: Sequence[Point] = (),
    train_hook: TrainHook | None = None,
    record: Path | None = None,
) -> list[dict[str, Any]]:
    """Run every missing step of the protocol and append its rows to ``<out>/peers.jsonl``; returns all rows.

    ``max_runs``: stop after that many new rows (a budgeted slice of a run that spans sessions). ``points``: extra
    (split, method, strength, seed) runs, done first (e.g. an ablation's validation point at more seeds; a training
    is shared by every split, so a point whose training exists only needs its measurement). A file made with other
    settings (another config key) is refused with a ``ValueError``. ``train_hook``: extra measurements during each new
    training (:data:`TrainHook`). ``record``: a committed copy of the results file (``<record>/<out name>.jsonl``),
    kept in step before the run and after each new row, so that a fresh checkout resumes (:func:`sync_results`).
    """
    from agl_trl.experiments import ResultsLog, auto_threads
    from agl_trl.precision import hardware_summary, load_average, use_bf16

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def keep() -> None:
        if record is not None:
            sync_results(out.parent, record, [out.name], RESULTS_FILE)

    keep()
    results = ResultsLog(out / RESULTS_FILE, config_key(cfg))
    rows = results.check()
    stale = [r for r in rows if r.get("run_key") != run_key(cfg, r["method"], r.get("strength"))]
    if stale:
        print(f"peers: {len(stale)} rows made with other settings of their method moved to {out / STALE_FILE}")
        rows = results.retire(stale, out / STALE_FILE)
    print(f"peers: {len(rows)} rows already in {results.path}", flush=True)
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())  # for every stage and run
    budget = [max_runs if max_runs is not None else -1]
    shared: Shared | None = None
    try:
        environment = {**hardware_summary(use_bf16("auto", on_cpu=True)), "mode": cfg.mode}

        def ensure(split: str, method: str, strength: float | None, seed: int) -> dict[str, Any] | None:
            nonlocal shared
            key = (split, method, strength, seed)
            found = next((r for r in rows if tuple(r.get(k) for k in RUN_KEY) == key), None)
            if found is not None:
                return found
            if budget[0] == 0:
                return None
            if shared is None:
                shared = prepare_shared(cfg, out, loader, progress, Path(demo_dir) if demo_dir else None)
                for ref_split in ("validation", "test"):
                    if not any(r["method"] == "aligned" and r["split"] == ref_split for r in rows):
                        results.append([{**reference_row(shared, ref_split), "run_key": run_key(cfg, "aligned", None)}])
                        rows.append(results.rows()[-1])
            started = time.perf_counter()
            print(f"peers: {split} {method} {strength_of(method) or ''}={strength} seed {seed}", flush=True)
            record = train_run(cfg, shared, out, method, strength, seed, progress=False, hook=train_hook)
            row = evaluate_run(cfg, shared, out, split, method, strength, seed, record, progress=False)
            row.update(
                run_seconds=round(time.perf_counter() - started, 2), mode=cfg.mode, setup_id=shared.setup_id,
                environment={**environment, "load_average": load_average()},
            )  # fmt: skip
            row["run_key"] = run_key(cfg, method, strength)
            results.append([row])  # stamped with the config key; a row lands whole or not at all
            rows.append(row)
            keep()
            budget[0] -= 1
            return row

        for point in points:
            if ensure(*point) is None:
                break
        for method in method_order(cfg.methods):
            plain_sweep = ensure("validation", "plain", None, cfg.sweep_seed)
            if plain_sweep is None:
                break
            sweep = [ensure("validation", method, v, cfg.sweep_seed) for v in cfg.grid(method)]
            if any(r is None for r in sweep):
                break
            chosen, _why = choose(sweep, plain_sweep["task_exact_match"], cfg.max_task_drop)
            if any(ensure("test", method, chosen, s) is None for s in cfg.seeds):
                break
    finally:
        torch.set_num_threads(previous_threads)
    return results.rows()


__all__ = [
    "RESULTS_FILE",
    "RUN_KEY",
    "Shared",
    "TrainHook",
    "evaluate_run",
    "prepare_shared",
    "reference_row",
    "run_benchmark",
    "task_fields",
    "train_dir",
    "train_run",
    "twin_training",
]
