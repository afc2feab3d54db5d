"""AGL against its peers, its ablations, and a stress setting, on the demo's set-up (docs/peers.md).

Shared stages come from the demo pipeline (:func:`agl_trl.demo.pipeline.run_demo`, cached under ``<out>/demo``): the
aligned SmolLM2 (base + merged safety LoRA), its K-FAC Fisher artifact, and the aligned model's own answers on the
DriftCaps eval subset. On top of them this script caches, under ``<out>/shared``, what only the peers need: a diagonal
Fisher (EWC) on the same probe prompts, the alignment directions V = W_aligned - W_base (Safe LoRA, AsFT) and the
aligned model's answers to the probe prompts (KL to reference). Every run is the demo's task fine-tune
(:func:`~agl_trl.demo.pipeline.train_lora`: same data, steps, LR, batch; the seed sets the LoRA init and the data
order) with one method, then the demo's evaluation (:func:`~agl_trl.demo.pipeline.evaluate_generations`,
:func:`~agl_trl.demo.pipeline.kl_to_aligned`).

Resumable: one JSON line per finished (scenario, method, seed) in ``<out>/peers.jsonl``; a rerun skips those.
``--report`` (or ``benchmarks/peers_report.py``) turns the file into docs/peers.md and a Pareto plot.

    python benchmarks/peers.py --quick            # < 30 min on 2 idle CPU cores (runs/peers)
    python benchmarks/peers.py                    # 3 seeds, every method, the stress scenario (resumes --quick)
    python benchmarks/peers.py --scale demo       # the same at `make demo` sizes (~5 h)
    python benchmarks/peers.py --tiny --out /tmp/p  # smoke run on a random tiny Llama (used by the tests)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _setup import PeakRSS  # noqa: E402

RESULTS_FILE = "peers.jsonl"

# the AGL ablations: overrides of the demo's tuned AGL settings
ABLATIONS: dict[str, dict[str, Any]] = {
    "agl_align_only": {"lambda_task": 0.0, "lambda_collision": 0.0},
    "agl_no_rt": {"lambda_task": 0.0},
    "agl_no_collision": {"lambda_collision": 0.0},
    "agl_riem_only": {"mu": 1.0},
    "agl_geo_only": {"mu": 0.0},
    "agl_hard_gate": {"gate": "hard"},
}
# "agl_diag" (AGL with a diagonal Fisher) is EWC by construction (docs/method.md, Degeneracies): reported from "ewc"
PEERS = ("ewc", "l2", "kl_ref", "safe_lora", "asft")
ALL_METHODS = ("plain", "agl", *ABLATIONS, *PEERS)
STRESS_METHODS = ("plain", "agl", *PEERS)


@dataclass
class PeerSettings:
    """Weights of the peers (not tuned per method: compare them on the Pareto plot, task score vs drift)."""

    lambda_ewc: float | None = None  # None: the AGL lambda_align (both are in nats per token)
    lambda_l2: float = 0.06
    lambda_kl: float = 1.0
    kl_batch_size: int = 4
    kl_every: int = 1
    lambda_asft: float = 0.06
    asft_matrix: str = "projector"
    direction_rank: int = 32
    safe_lora_fraction: float = 0.3


@dataclass
class BenchConfig:
    demo: Any  # agl_trl.demo.config.DemoConfig
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    stress_methods: list[str] = field(default_factory=lambda: list(STRESS_METHODS))
    stress_seeds: list[int] | None = None  # None: the same seeds as the standard scenario
    stress_lr_factor: float = 2.5
    stress_steps_factor: float = 1.5
    peers: PeerSettings = field(default_factory=PeerSettings)
    mode: str = "full"


# ---------------------------------------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------------------------------------


def build_config(
    mode: str,
    seeds: int | None,
    methods: Sequence[str] | None,
    overrides: Sequence[str],
    scale: str = "quick",
) -> BenchConfig:
    from agl_trl.demo.config import apply_overrides, default_config, quick_config, tiny_config

    if mode == "tiny":
        demo = tiny_config(0)
        cfg = BenchConfig(demo=demo, seeds=[0, 1], stress_methods=["plain", "agl", "safe_lora"], mode=mode)
    elif mode == "quick":
        # budget (2 idle CPU cores, from the demo's measured stage times): demo --quick stages + shared artefacts
        # ~8 min, 14 trained runs of 24 steps with evaluation ~15 min, 2 stress runs of 36 steps ~3 min
        cfg = BenchConfig(
            demo=quick_config(0),
            seeds=[0, 1],
            methods=["plain", "agl", "ewc", "l2", "kl_ref", "safe_lora", "asft"],
            stress_methods=["plain", "agl"],
            stress_seeds=[0],
            mode=mode,
        )
    else:
        # every method and ablation, 3 seeds, the stress scenario for every peer. scale="quick": the task sizes of
        # `agl-trl demo --quick` (a superset of --quick: the same --out resumes it; ~1 h 15 min on 2 idle cores);
        # scale="demo": those of `make demo` (~5 h: 60 runs of ~5 min)
        demo = quick_config(0) if scale == "quick" else default_config(0)
        cfg = BenchConfig(demo=demo, mode=mode if scale == "quick" else f"{mode}-demo-scale")
    demo_overrides = [o for o in overrides if not o.startswith("peers.")]
    apply_overrides(cfg.demo, demo_overrides)
    for item in overrides:
        if item.startswith("peers."):
            key, _, raw = item[len("peers.") :].partition("=")
            if not hasattr(cfg.peers, key):
                raise ValueError(f"unknown peers setting {key!r}; known: {sorted(asdict(cfg.peers))}")
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            setattr(cfg.peers, key, value)
    if seeds is not None:
        cfg.seeds = list(range(seeds))
        cfg.stress_seeds = None if cfg.stress_seeds is None else [s for s in cfg.stress_seeds if s < seeds]
    if methods is not None:
        unknown = sorted(set(methods) - set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {list(ALL_METHODS)}")
        cfg.methods = list(methods)
        cfg.stress_methods = [m for m in cfg.stress_methods if m in methods]
    return cfg


def runs_of(cfg: BenchConfig) -> list[tuple[str, str, int]]:
    """(scenario, method, seed) in execution order: plain first (Safe LoRA projects the plain adapter)."""

    def ordered(methods: Sequence[str]) -> list[str]:
        return sorted(methods, key=lambda m: (m != "plain", m == "safe_lora"))

    runs = [("standard", m, s) for s in cfg.seeds for m in ordered(cfg.methods)]
    stress_seeds = cfg.seeds if cfg.stress_seeds is None else cfg.stress_seeds
    runs += [("stress", m, s) for s in stress_seeds for m in ordered(cfg.stress_methods)]
    return runs


def scenario_demo(cfg: BenchConfig, scenario: str, seed: int) -> Any:
    """The demo config of one run: the seed of the LoRA init / data order, and the stress LR and steps."""
    demo = replace(cfg.demo, seed=seed)
    if scenario == "stress":
        demo.task = replace(
            demo.task,
            learning_rate=demo.task.learning_rate * cfg.stress_lr_factor,
            steps=round(demo.task.steps * cfg.stress_steps_factor),
        )
    return demo


# ---------------------------------------------------------------------------------------------------------------------
# shared artefacts
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Shared:
    demo_dir: Path
    aligned_dir: Path
    fisher_dir: Path
    diag_dir: Path
    directions_dir: Path
    kl_sequences: Path
    reference_rows: list[dict[str, Any]]
    aligned_metrics: dict[str, Any]
    eval_subset: list[Any]
    task_rows: list[dict[str, str]]
    task_eval: list[Any]


def probe_prompts(cfg: Any) -> list[str]:
    """The Fisher stage's probe prompts (same rule as the demo: unsafe probe prompts, or half unsafe / half safe)."""
    from agl_trl.demo.pipeline import stratified_subset
    from agl_trl.evaluation.driftcaps import load_driftcaps

    probe, f = load_driftcaps(split="probe"), cfg.fisher
    if f.probe == "unsafe":
        items = stratified_subset(probe, f.n_probe, "unsafe")
    else:
        items = stratified_subset(probe, f.n_probe // 2, "unsafe") + stratified_subset(
            probe, f.n_probe - f.n_probe // 2, "safe"
        )
    return [it.prompt for it in items]


def prepare_shared(
    cfg: BenchConfig,
    out: Path,
    loader: Callable[[], tuple[Any, Any]] | None,
    progress: bool,
    demo_dir: Path | None = None,
    threads: int | None = None,
) -> Shared:
    from agl_trl.baselines.alignment import DIRECTIONS_FILE
    from agl_trl.demo.pipeline import _lora_config, load_model, run_demo, stratified_subset
    from agl_trl.demo.task import generate_task
    from agl_trl.evaluation.driftcaps import load_driftcaps
    from agl_trl.evaluation.metrics import model_metrics
    from agl_trl.evaluation.report import jsonable

    demo_dir = demo_dir or out / "demo"  # an existing `agl-trl demo --out` folder with the same settings is reused
    run_demo(
        cfg.demo, demo_dir, model_loader=loader, progress=progress, log=lambda m: print(m, flush=True), threads=threads
    )
    aligned_dir = demo_dir / "aligned" / "model"
    shared = out / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    prompts = probe_prompts(cfg.demo)
    key = json.dumps({"demo": cfg.demo.to_dict(), "rank": cfg.peers.direction_rank}, sort_keys=True, default=str)
    key_file = shared / "key.json"
    if not key_file.is_file() or key_file.read_text() != key:  # other (or unknown) settings: start this folder afresh
        import shutil

        shutil.rmtree(shared)
        shared.mkdir(parents=True)
        key_file.write_text(key)

    diag_dir = shared / "fisher_diagonal"
    if not (diag_dir / "fisher.json").is_file():
        from peft import get_peft_model

        from agl_trl.baselines import ewc_fisher_settings
        from agl_trl.fisher import FisherSettings, estimate_fisher

        print("[shared] diagonal Fisher (EWC) ...", flush=True)
        f = cfg.demo.fisher
        model, tokenizer = load_model(aligned_dir)
        peft_model = get_peft_model(model, _lora_config(cfg.demo))
        settings = ewc_fisher_settings(
            FisherSettings(
                targets=f.targets, max_samples=len(prompts), batch_size=f.batch_size, max_new_tokens=f.max_new_tokens,
                seed=cfg.demo.seed,
            )
        )  # fmt: skip
        records = [{"prompt": p, "response": None} for p in prompts]
        estimate_fisher(peft_model, tokenizer, records, settings, progress).save(diag_dir)

    directions_dir = shared / "directions"
    if not (directions_dir / DIRECTIONS_FILE).is_file():
        from peft import get_peft_model

        from agl_trl.baselines import alignment_directions, save_directions

        print("[shared] alignment directions V = W_aligned - W_base ...", flush=True)
        aligned, _ = load_model(aligned_dir)
        aligned = get_peft_model(aligned, _lora_config(cfg.demo))  # names the target modules; base weights = W_aligned
        base, _ = (loader or _default_loader)()
        save_directions(alignment_directions(aligned, base, rank=cfg.peers.direction_rank), directions_dir)

    kl_sequences = shared / "kl_reference.json"
    if not kl_sequences.is_file():
        from agl_trl.generation import generate

        print("[shared] aligned answers to the probe prompts (KL to reference) ...", flush=True)
        model, tokenizer = load_model(aligned_dir)
        gens = generate(
            model, tokenizer, prompts, cfg.demo.fisher.max_new_tokens, cfg.demo.eval.batch_size, progress=progress,
            desc="kl-reference",
        )  # fmt: skip
        tmp = kl_sequences.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(g) for g in gens]), encoding="utf-8")
        tmp.replace(kl_sequences)  # atomic: an interrupted run never leaves a cut file behind

    reference_rows = json.loads((demo_dir / "gen_aligned" / "responses.json").read_text(encoding="utf-8"))
    metrics = model_metrics(
        [r["category"] for r in reference_rows], [r["label"] for r in reference_rows],
        [r["refusal"] for r in reference_rows], [r["coherent"] for r in reference_rows],
    )  # fmt: skip
    eval_items = load_driftcaps(split="eval")
    c = cfg.demo
    eval_subset = stratified_subset(eval_items, c.eval.n_unsafe, "unsafe") + stratified_subset(
        eval_items, c.eval.n_safe, "safe"
    )
    task_train, task_eval = generate_task(c.task.n_train, c.task.n_eval, seed=c.seed)
    return Shared(
        demo_dir=demo_dir,
        aligned_dir=aligned_dir,
        fisher_dir=demo_dir / "fisher" / "artifact",
        diag_dir=diag_dir,
        directions_dir=directions_dir,
        kl_sequences=kl_sequences,
        reference_rows=reference_rows,
        aligned_metrics=jsonable(metrics),
        eval_subset=eval_subset,
        task_rows=[{"prompt": it.prompt, "answer": it.answer} for it in task_train],
        task_eval=task_eval,
    )


def _default_loader() -> tuple[Any, Any]:
    from agl_trl.models import load_default_model

    return load_default_model()


# ---------------------------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------------------------


def make_penalty(method: str, cfg: BenchConfig, shared: Shared) -> Any:
    from agl_trl import baselines as bl
    from agl_trl.fisher import FisherArtifact
    from agl_trl.generation import Generation

    p = cfg.peers
    if method == "ewc":
        lam = cfg.demo.agl.lambda_align if p.lambda_ewc is None else p.lambda_ewc
        return bl.ewc_penalty(FisherArtifact.load(shared.diag_dir), lambda_ewc=lam, seed=cfg.demo.seed)
    if method == "l2":
        return bl.L2UpdatePenalty(lambda_l2=p.lambda_l2)
    if method == "kl_ref":
        rows = json.loads(shared.kl_sequences.read_text(encoding="utf-8"))
        sequences = [Generation(r["prompt_ids"], r["response_ids"], r["text"]) for r in rows]
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(shared.aligned_dir)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        return bl.KLToReferencePenalty(
            sequences, lambda_kl=p.lambda_kl, batch_size=p.kl_batch_size, every=p.kl_every, pad_id=pad,
            seed=cfg.demo.seed,
        )  # fmt: skip
    if method == "asft":
        return bl.AsFTPenalty(
            bl.load_directions(shared.directions_dir), lambda_asft=p.lambda_asft, matrix=p.asft_matrix
        )
    raise ValueError(f"no penalty for method {method!r}")


def run_one(cfg: BenchConfig, shared: Shared, out: Path, scenario: str, method: str, seed: int, progress: bool) -> dict:
    """Train (or project, for Safe LoRA), evaluate, and return the result row of one (scenario, method, seed)."""
    from agl_trl.demo.pipeline import agl_trainer_fields, evaluate_generations, kl_to_aligned, load_model, train_lora
    from agl_trl.evaluation.metrics import model_metrics
    from agl_trl.evaluation.report import jsonable

    demo = scenario_demo(cfg, scenario, seed)
    run_dir = out / "runs" / scenario / method / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    adapter = run_dir / "adapter"
    record: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    peak_bytes: int | None = None
    if method == "safe_lora":
        from agl_trl.baselines import load_directions, safe_lora_project

        plain_adapter = out / "runs" / scenario / "plain" / f"seed{seed}" / "adapter"
        if not (plain_adapter / "adapter_config.json").is_file():
            raise RuntimeError(f"Safe LoRA projects the plain LoRA adapter of the same run, missing: {plain_adapter}")
        started = time.perf_counter()
        model, _ = load_model(shared.aligned_dir, plain_adapter)
        projected, report = safe_lora_project(
            model, load_directions(shared.directions_dir), fraction=cfg.peers.safe_lora_fraction, inplace=True
        )
        projected.save_pretrained(adapter)
        extra["safe_lora"] = {k: v for k, v in report.to_dict().items() if k != "cosines"}
        extra["projection_seconds"] = round(time.perf_counter() - started, 3)
        extra["trained_as"] = "plain"  # post-hoc: the training cost is the plain run's
    else:
        model, tokenizer = load_model(shared.aligned_dir)
        model.train()
        kwargs: dict[str, Any] = {}
        if method == "agl":
            kwargs["agl"] = agl_trainer_fields(cfg.demo, shared.fisher_dir)
        elif method in ABLATIONS:
            kwargs["agl"] = agl_trainer_fields(cfg.demo, shared.fisher_dir, ABLATIONS[method])
        elif method != "plain":
            kwargs["penalty"] = make_penalty(method, cfg, shared)
        with PeakRSS() as rss:  # the demo trains on CPU (use_cpu=True): resident memory is the training memory
            trained, record = train_lora(
                model, tokenizer, shared.task_rows, run_dir, demo, demo.task.steps, demo.task.learning_rate,
                demo.task.batch_size, progress=progress, **kwargs,
            )  # fmt: skip
        peak_bytes = rss.extra
        trained.save_pretrained(adapter)
        del trained
    model, tokenizer = load_model(shared.aligned_dir, adapter)
    gen = evaluate_generations(model, tokenizer, shared.eval_subset, shared.task_eval, demo, run_dir, method, progress)
    kl = kl_to_aligned(model, tokenizer, shared.reference_rows, demo.eval.batch_size, progress)
    rows = json.loads((run_dir / "responses.json").read_text(encoding="utf-8"))
    overall = jsonable(
        model_metrics(
            [r["category"] for r in rows], [r["label"] for r in rows], [r["refusal"] for r in rows],
            [r["coherent"] for r in rows],
        )["overall"]
    )  # fmt: skip
    aligned_refusal = shared.aligned_metrics["overall"]["refusal_unsafe"]["rate"]
    return {
        "scenario": scenario,
        "method": method,
        "seed": seed,
        "refusal_unsafe": overall["refusal_unsafe"]["rate"],
        "over_refusal": overall["over_refusal"]["rate"],
        "incoherent": overall["incoherent"]["rate"],
        "aligned_refusal_unsafe": aligned_refusal,
        "aligned_over_refusal": shared.aligned_metrics["overall"]["over_refusal"]["rate"],
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
        "settings": _settings_of(cfg, method),
        **extra,
    }


def _settings_of(cfg: BenchConfig, method: str) -> dict[str, Any]:
    p = cfg.peers
    if method == "agl":
        return asdict(cfg.demo.agl)
    if method in ABLATIONS:
        return {**asdict(cfg.demo.agl), **ABLATIONS[method]}
    return {
        "plain": {},
        "ewc": {"lambda_ewc": cfg.demo.agl.lambda_align if p.lambda_ewc is None else p.lambda_ewc},
        "l2": {"lambda_l2": p.lambda_l2},
        "kl_ref": {"lambda_kl": p.lambda_kl, "batch_size": p.kl_batch_size, "every": p.kl_every},
        "safe_lora": {"fraction": p.safe_lora_fraction, "direction_rank": p.direction_rank},
        "asft": {"lambda_asft": p.lambda_asft, "matrix": p.asft_matrix, "direction_rank": p.direction_rank},
    }[method]


# ---------------------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------------------


def config_key(cfg: BenchConfig) -> str:
    """A hash of everything a result depends on except the seed and the method list (those may grow on resume)."""
    import hashlib

    payload = {
        "demo": {k: v for k, v in cfg.demo.to_dict().items() if k != "seed"},
        "peers": asdict(cfg.peers),
        "stress": [cfg.stress_lr_factor, cfg.stress_steps_factor],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            with contextlib.suppress(ValueError):  # a line cut by an interrupted write is rerun
                rows.append(json.loads(line))
    return rows


def run_benchmark(
    cfg: BenchConfig,
    out: str | Path,
    loader: Callable[[], tuple[Any, Any]] | None = None,
    progress: bool = True,
    demo_dir: str | Path | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Run every missing (scenario, method, seed) and append its row to ``<out>/peers.jsonl``; returns all rows."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS_FILE
    key = config_key(cfg)
    previous = read_results(results)
    other = sorted({r.get("config_key") for r in previous} - {key}, key=str)
    if other:
        raise ValueError(
            f"{results} holds runs made with other settings (config keys {other}, now {key}): a benchmark file must "
            "compare like with like. Use another --out for the new settings."
        )
    done = {(r["scenario"], r["method"], r["seed"]) for r in previous}
    todo = [run for run in runs_of(cfg) if run not in done]
    print(f"peers: {len(done)} runs already in {results}, {len(todo)} to go", flush=True)
    if todo:
        import torch

        from agl_trl.demo.pipeline import auto_threads

        torch.set_num_threads(threads or auto_threads())  # for every stage and run (run_demo restores it on return)
        shared = prepare_shared(
            cfg, out, loader, progress, Path(demo_dir) if demo_dir else None, torch.get_num_threads()
        )

        environment = {
            "torch_threads": torch.get_num_threads(),
            "mode": cfg.mode,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        }
        for scenario, method, seed in tqdm(todo, desc="peers", disable=not progress):
            started = time.perf_counter()
            row = run_one(cfg, shared, out, scenario, method, seed, progress=False)
            row.update(
                run_seconds=round(time.perf_counter() - started, 2),
                mode=cfg.mode,
                config_key=key,
                environment={**environment, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
            )
            with results.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, default=str) + "\n")
    return read_results(results)


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
        from peers_report import write_report

        write_report(rows, Path(args.report_dir), source=out / RESULTS_FILE)
    print(f"peers: {len(rows)} runs in {out / RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
