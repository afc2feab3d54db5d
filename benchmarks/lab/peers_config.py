"""Settings of the peers benchmark (:mod:`benchmarks.lab.peers`): the protocol, its sizes, methods and grids.

The protocol (docs/peers.md): every method, AGL included, gets the same tuning budget: a sweep of its strength
(:data:`~benchmarks.lab.registry.STRENGTHS`, >= 4 log-spaced values, one seed) measured on the DriftCaps
*validation* split and the task's validation items; the point it would ship is chosen there by a rule fixed in
advance (:func:`choose`), then trained with every seed and measured once on the *test* split. Nothing measured on
the test split chooses anything.

Modes: the full run (``make demo`` sizes), ``--quick`` (the demo's ``--quick`` sizes, 2 grid points, 2 seeds, 7
methods; numbers indicative only) and ``--tiny`` (a random tiny Llama, for the tests); overrides
``section.field=value`` of the experiment and ``peers.field=value`` of the peers' settings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agl_trl.experiments.config import ExperimentConfig
from agl_trl.experiments.log import settings_key
from benchmarks.lab.registry import (
    ALL_METHODS,
    METHOD_REVISIONS,
    PROBE_METHODS,
    STRENGTHS,
    PeerSettings,
    method_settings,
    with_strength,
)

# what a user would pick instead of AGL, AGL's hard-gate variant and AGL with KL anchor steps
PROTOCOL_METHODS = (
    "plain",
    "agl",
    "agl_hard_gate",
    "ewc",
    "l2",
    "kl_ref",
    "safe_lora",
    "asft",
    "sbr",
    "mix",
    "lisa",
    "kl_ref_sparse",
    "agl_kl_anchor",
)
QUICK_METHODS = ("plain", "agl", "ewc", "l2", "kl_ref", "sbr", "mix")
MAX_TASK_DROP = 0.05  # the selection rule's default task tolerance vs plain LoRA (exact-match fraction)
DEFAULT_TASK_DROP = 0.02  # the package default's task tolerance vs plain LoRA (the method issue's target)
DEFAULT_SEEDS = (0, 1, 2)  # the validation seeds the package-default rule averages over
# the test seeds start here: adapters that no validation choice (seeds 0-2) trained, so the test split is fresh for
# every choice made on validation (issue 34; rows before 2026-12-07 used test seeds 0-2, shared with validation)
TEST_SEED_BASE = 100
SWEEP_SEED = 0  # the seed of every validation sweep; validation rows at other seeds are extra (ablation) points


@dataclass
class BenchConfig:
    demo: ExperimentConfig  # the shared set-up and the task fine-tune of every run
    methods: list[str] = field(default_factory=lambda: list(PROTOCOL_METHODS))
    grids: dict[str, list[float]] = field(default_factory=lambda: {m: list(g) for m, (_, g) in STRENGTHS.items()})
    sweep_seed: int = SWEEP_SEED
    seeds: list[int] = field(default_factory=lambda: fresh_test_seeds(3))  # the test seeds
    max_task_drop: float = MAX_TASK_DROP
    curve_points: int = 6  # plain LoRA's task curve: validation task score at this many checkpoints
    peers: PeerSettings = field(default_factory=PeerSettings)
    mode: str = "full"

    def grid(self, method: str) -> list[float | None]:
        """The strengths swept for ``method`` (``[None]`` for plain LoRA)."""
        if method == "plain":
            return [None]
        return [float(v) for v in self.grids[method]]


def fresh_test_seeds(n: int) -> list[int]:
    """The first ``n`` test seeds (:data:`TEST_SEED_BASE` on): never a validation seed."""
    return [TEST_SEED_BASE + i for i in range(n)]


def build_config(mode: str, seeds: int | None, methods: Sequence[str] | None, overrides: Sequence[str]) -> BenchConfig:
    """The benchmark of ``mode`` (``tiny``, ``quick`` or ``full``) with ``seeds`` test seeds, a ``methods`` subset and
    ``--set`` overrides applied."""
    from agl_trl.experiments.config import apply_overrides, default_config, quick_config, tiny_config

    if mode == "tiny":
        cfg = BenchConfig(
            demo=tiny_config(0), methods=["plain", "agl", "safe_lora", "sbr", "mix", "lisa"], seeds=fresh_test_seeds(2),
            curve_points=2, mode=mode,
        )  # fmt: skip
        cfg.grids = {m: g[1:3] for m, g in cfg.grids.items()}
    elif mode == "quick":
        cfg = BenchConfig(
            demo=quick_config(0), methods=list(QUICK_METHODS), seeds=fresh_test_seeds(2), curve_points=4, mode=mode
        )
        cfg.grids = {m: g[1:3] for m, g in cfg.grids.items()}
    elif mode == "full":
        cfg = BenchConfig(demo=default_config(0), mode=mode)
    else:
        raise ValueError(f"unknown mode {mode!r}; expected tiny, quick or full")
    apply_overrides(cfg.demo, [o for o in overrides if not o.startswith("peers.")])
    for item in overrides:
        if item.startswith("peers."):
            key, _, raw = item[len("peers.") :].partition("=")
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            if key.startswith("grid."):
                method = key[len("grid.") :]
                if method not in STRENGTHS or not isinstance(value, list) or not value:
                    raise ValueError(f"peers.grid.<method>=[values]: unknown method {method!r} or not a list")
                cfg.grids[method] = [float(v) for v in value]
            elif key == "max_task_drop":
                cfg.max_task_drop = float(value)
            elif hasattr(cfg.peers, key):
                setattr(cfg.peers, key, value)
            else:
                raise ValueError(f"unknown peers setting {key!r}; known: {sorted(asdict(cfg.peers))}, grid.<method>")
    if seeds is not None:
        cfg.seeds = fresh_test_seeds(seeds)
    if methods is not None:
        unknown = sorted(set(methods) - set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {list(ALL_METHODS)}")
        cfg.methods = list(dict.fromkeys(["plain", *methods]))  # plain LoRA is every comparison's baseline
    return cfg


def method_order(methods: Sequence[str]) -> list[str]:
    """Plain LoRA first (every selection and Safe LoRA's projection need its runs), the rest in the given order."""
    return sorted(dict.fromkeys(methods), key=lambda m: m != "plain")


Point = tuple[str, str, float | None, int]  # (split, method, strength, seed): one row of a results file


def parse_point(text: str) -> Point:
    """``SPLIT:METHOD:STRENGTH:SEED`` (``--point``) as a :data:`Point`; a ``ValueError`` names what is wrong."""
    parts = text.split(":")
    usage = f"--point {text!r}: expected SPLIT:METHOD:STRENGTH:SEED, e.g. validation:agl_no_collision:0.03:1"
    if len(parts) != 4:
        raise ValueError(usage)
    split, method, raw_strength, raw_seed = parts
    if split not in ("validation", "test"):
        raise ValueError(f"{usage}; SPLIT must be validation or test, got {split!r}")
    if method not in ALL_METHODS:
        raise ValueError(f"{usage}; unknown METHOD {method!r} (one of {', '.join(ALL_METHODS)})")
    try:
        strength = None if raw_strength.lower() == "none" else float(raw_strength)
        seed = int(raw_seed)
    except ValueError:
        raise ValueError(f"{usage}; STRENGTH must be a number (or none) and SEED an integer") from None
    if (strength is None) != (method == "plain"):
        raise ValueError(f"{usage}; plain LoRA takes STRENGTH none, every other method a number")
    return split, method, strength, seed


def config_key(cfg: BenchConfig) -> str:
    """A hash of what every run depends on: the aligned model, the task fine-tune and the evaluation (with the probe
    split's partition, which decides the safety stage's data). Not in it: the seed, method, strength (rows record
    them) and what only some methods read (the probe's size and kind, the Fisher estimator, AGL's and the peers'
    settings): :func:`run_key` keys those per row, so a change to AGL re-runs AGL's rows and no one else's."""
    demo = cfg.demo.to_dict()
    shared = {k: v for k, v in demo.items() if k not in ("seed", "agl", "fisher", "probe")}
    shared["probe"] = {"holdout_every": demo["probe"]["holdout_every"]}
    return settings_key({"demo": shared})


def run_key(cfg: BenchConfig, method: str, strength: float | None) -> str:
    """A hash of what one method's run reads beyond :func:`config_key`: its settings at ``strength``
    (:func:`~benchmarks.lab.registry.method_settings`), the probe and the Fisher estimator when it uses them
    (:data:`~benchmarks.lab.registry.PROBE_METHODS`) and its code revision
    (:data:`~benchmarks.lab.registry.METHOD_REVISIONS`). A row or cached training with another run key is stale.

    The task's kind (also in :func:`config_key`) is in it when it is not the default: cached trainings are found by
    run key alone, so one on other task data is never reused, whatever results file asks for it."""
    kind = cfg.demo.task.kind_key()  # empty for the default kind: the keys made before it existed stay current
    if method == "aligned":
        return settings_key({"method": method, **kind})
    agl, peers = with_strength(method, strength, cfg.demo.agl, cfg.peers)
    payload: dict[str, Any] = {
        "method": method,
        "settings": method_settings(method, agl, peers),
        "revision": METHOD_REVISIONS.get(method, 0),
        **kind,
    }
    if method in PROBE_METHODS:
        payload["probe"] = cfg.demo.probe.to_key()
        payload["fisher"] = asdict(cfg.demo.fisher)
    return settings_key(payload)


def gap_drift_of(row: Mapping[str, Any]) -> float:
    """The gap drift (aligned gap - model gap, fraction) of a result row."""
    return float(row["gap_drift"])


def choose(sweep: Sequence[Mapping[str, Any]], plain_task: float, max_task_drop: float) -> tuple[float | None, str]:
    """The strength a method would ship, from its validation sweep rows (one per strength), and why.

    Rule (fixed before any test number exists): among the points whose validation task score is at least plain
    LoRA's (same seed) minus ``max_task_drop``, the one with the smallest gap drift (ties: the better task score, then
    the weaker strength); when no point keeps the task, the one with the best task score.
    """
    if not sweep:
        raise ValueError("choose: no sweep rows")

    def strength(r: Mapping[str, Any]) -> float:
        return -math.inf if r.get("strength") is None else float(r["strength"])

    keep = [r for r in sweep if r["task_exact_match"] >= plain_task - max_task_drop - 1e-12]
    if keep:
        best = min(keep, key=lambda r: (gap_drift_of(r), -r["task_exact_match"], strength(r)))
        why = f"smallest validation gap drift with task >= plain - {100 * max_task_drop:g} pts"
    else:
        best = max(sweep, key=lambda r: (r["task_exact_match"], -gap_drift_of(r), -strength(r)))
        why = f"no point kept the task within {100 * max_task_drop:g} pts of plain: best task score"
    return best.get("strength"), why


def choose_default(
    rows: Sequence[Mapping[str, Any]],
    method: str = "agl",
    seeds: Sequence[int] = DEFAULT_SEEDS,
    max_task_drop: float = DEFAULT_TASK_DROP,
) -> tuple[float | None, str, list[dict[str, Any]]]:
    """The strength the package ships as ``method``'s default, from validation rows at ``seeds``, and why.

    Rule (docs/benchmarks.md, written before the seeds it reads existed): a sweep point (a strength with a row at
    :data:`SWEEP_SEED`) is admitted when its task score averaged over ``seeds`` is at least plain LoRA's average over
    the same seeds minus ``max_task_drop``; the default is the admitted point with the smallest average gap drift
    (ties: the larger strength); when none is admitted, the best average task score. Returns (strength or None
    while a point lacks a seed, why, one summary per point: strength, task, plain_task, gap_drift, admitted).
    """
    val = [r for r in rows if r["split"] == "validation"]
    plain = {r["seed"]: r for r in val if r["method"] == "plain"}
    strengths = sorted({r["strength"] for r in val if r["method"] == method and r["seed"] == SWEEP_SEED})
    missing = [f"plain seed {s}" for s in seeds if s not in plain]
    points: list[dict[str, Any]] = []
    for value in strengths:
        by_seed = {r["seed"]: r for r in val if r["method"] == method and r["strength"] == value}
        missing += [f"{value:g} seed {s}" for s in seeds if s not in by_seed]
        if all(s in by_seed for s in seeds) and all(s in plain for s in seeds):
            mean = lambda group, key: sum(float(group[s][key]) for s in seeds) / len(seeds)  # noqa: E731
            task, plain_task = mean(by_seed, "task_exact_match"), mean(plain, "task_exact_match")
            points.append({
                "strength": value, "task": task, "plain_task": plain_task, "gap_drift": mean(by_seed, "gap_drift"),
                "admitted": task >= plain_task - max_task_drop - 1e-12,
            })  # fmt: skip
    if not strengths or missing:
        return None, f"waiting for {', '.join(missing) or 'a sweep'}", points
    admitted = [p for p in points if p["admitted"]]
    if admitted:
        best = min(admitted, key=lambda p: (round(p["gap_drift"], 9), -p["strength"]))  # means: round off ulps
        why = f"smallest gap drift with the task within {100 * max_task_drop:g} pts of plain (seeds {list(seeds)})"
    else:
        best = max(points, key=lambda p: (round(p["task"], 9), -round(p["gap_drift"], 9)))
        why = f"no point kept the task within {100 * max_task_drop:g} pts of plain: best task score"
    return best["strength"], why, points


def tiny_loader() -> tuple[Any, Any]:
    """The ``--tiny`` smoke runs' model: a random tiny Llama and its tokenizer (no SmolLM2)."""
    from agl_trl.models import tiny_llama

    return tiny_llama(vocab_size=512, seed=0)


__all__ = [
    "DEFAULT_SEEDS",
    "DEFAULT_TASK_DROP",
    "MAX_TASK_DROP",
    "PROTOCOL_METHODS",
    "QUICK_METHODS",
    "SWEEP_SEED",
    "TEST_SEED_BASE",
    "BenchConfig",
    "Point",
    "build_config",
    "choose",
    "choose_default",
    "config_key",
    "fresh_test_seeds",
    "gap_drift_of",
    "method_order",
    "parse_point",
    "run_key",
    "tiny_loader",
]
