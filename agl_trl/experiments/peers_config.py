"""Settings of the peers benchmark (:mod:`agl_trl.experiments.peers`): its sizes, methods, seeds and scenarios.

``--quick`` (2 seeds, 7 methods, 2 stress runs), the full run (3 seeds, every method and ablation, the stress
scenario for every peer; a superset of ``--quick`` with the same config key, so it resumes it), ``--scale demo`` (the
full run at ``make demo`` sizes) and ``--tiny`` (a random tiny Llama, for the tests); overrides ``section.field=value``
of the experiment and ``peers.field=value`` of the peers' weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from agl_trl.baselines.registry import ALL_METHODS, PEERS, PeerSettings
from agl_trl.experiments.config import ExperimentConfig
from agl_trl.experiments.log import settings_key

STRESS_METHODS = ("plain", "agl", *PEERS)


@dataclass
class BenchConfig:
    demo: ExperimentConfig  # the shared set-up and the task fine-tune of every run
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    stress_methods: list[str] = field(default_factory=lambda: list(STRESS_METHODS))
    stress_seeds: list[int] | None = None  # None: the same seeds as the standard scenario
    stress_lr_factor: float = 2.5
    stress_steps_factor: float = 1.5
    peers: PeerSettings = field(default_factory=PeerSettings)
    mode: str = "full"


def build_config(
    mode: str,
    seeds: int | None,
    methods: Sequence[str] | None,
    overrides: Sequence[str],
    scale: str = "quick",
) -> BenchConfig:
    """The benchmark of ``mode`` (``tiny``, ``quick`` or ``full`` at ``scale`` ``quick`` or ``demo``), with
    ``seeds`` (0..n-1), a ``methods`` subset and ``--set`` overrides applied."""
    from agl_trl.experiments.config import apply_overrides, default_config, quick_config, tiny_config

    if mode == "tiny":
        cfg = BenchConfig(demo=tiny_config(0), seeds=[0, 1], stress_methods=["plain", "agl", "safe_lora"], mode=mode)
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
    apply_overrides(cfg.demo, [o for o in overrides if not o.startswith("peers.")])
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


def scenario_demo(cfg: BenchConfig, scenario: str, seed: int) -> ExperimentConfig:
    """The experiment config of one run: the seed of the LoRA init / data order, and the stress LR and steps."""
    demo = replace(cfg.demo, seed=seed)
    if scenario == "stress":
        demo.task = replace(
            demo.task,
            learning_rate=demo.task.learning_rate * cfg.stress_lr_factor,
            steps=round(demo.task.steps * cfg.stress_steps_factor),
        )
    return demo


def config_key(cfg: BenchConfig) -> str:
    """A hash of everything a result depends on except the seed and the method list (those may grow on resume)."""
    return settings_key(
        {
            "demo": {k: v for k, v in cfg.demo.to_dict().items() if k != "seed"},
            "peers": asdict(cfg.peers),
            "stress": [cfg.stress_lr_factor, cfg.stress_steps_factor],
        }
    )


__all__ = ["STRESS_METHODS", "BenchConfig", "build_config", "config_key", "runs_of", "scenario_demo"]
