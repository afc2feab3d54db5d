"""Settings of the demo: the default run (``make demo``), ``--quick``, and dotted overrides (``--set a.b=value``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str = "all-linear"


@dataclass
class AlignSettings:
    """Stage b: safety LoRA SFT on the DriftCaps probe split, merged into the weights."""

    n_unsafe: int | None = None  # None: every unsafe probe prompt (260)
    n_safe: int | None = None  # None: every safe probe prompt (240, incl. the contrast look-alikes)
    answer_tokens: int = 24  # greedy budget of the base model's own answers to the safe prompts
    steps: int = 56
    learning_rate: float = 5e-4
    batch_size: int = 8


@dataclass
class FisherStageSettings:
    """Stage c: the Fisher of the aligned model (``agl_trl.fisher.FisherSettings`` fields + the probe choice)."""

    probe: str = "unsafe"  # "unsafe": unsafe probe prompts only; "mixed": unsafe and safe probe prompts
    n_probe: int = 64
    estimator: str = "kfac"
    targets: str = "sampled"
    max_rank: int = 64
    explained_variance: float = 0.95
    max_new_tokens: int = 24
    batch_size: int = 8


@dataclass
class TaskSettings:
    """Stage d: the benign task fine-tune (same for plain LoRA and AGL)."""

    n_train: int = 480
    n_eval: int = 150
    steps: int = 80
    learning_rate: float = 5e-4
    batch_size: int = 8
    answer_tokens: int = 16


@dataclass
class AGLDemoSettings:
    """The regulariser (``agl_trl.regularizers.AGLSettings`` fields), tuned on this demo (docs/benchmarks.md)."""

    lambda_align: float = 100.0
    lambda_task: float = 10.0
    lambda_collision: float = 0.1
    mu: float = 0.5
    beta: float = 4.0
    gate: str = "soft"
    gate_damping: float = 0.01


@dataclass
class EvalSettings:
    """Stage e: DriftCaps eval split, a fixed category-stratified subset (None: all 220 unsafe / 220 safe)."""

    n_unsafe: int | None = 88
    n_safe: int | None = 44
    max_new_tokens: int = 24
    batch_size: int = 32


@dataclass
class DemoConfig:
    seed: int = 0
    model: str = "smollm2-135m-instruct"  # a name for the cache keys; the pipeline's model_loader loads it
    quick: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    align: AlignSettings = field(default_factory=AlignSettings)
    fisher: FisherStageSettings = field(default_factory=FisherStageSettings)
    task: TaskSettings = field(default_factory=TaskSettings)
    agl: AGLDemoSettings = field(default_factory=AGLDemoSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_config(seed: int = 0) -> DemoConfig:
    """The settings of ``make demo`` (about 20 minutes on 2 idle CPU cores)."""
    return DemoConfig(seed=seed)


def quick_config(seed: int = 0) -> DemoConfig:
    """``--quick``: the same stages, smaller (about 5 minutes on 2 idle CPU cores); numbers are indicative only."""
    cfg = DemoConfig(seed=seed, quick=True)
    cfg.align = replace(cfg.align, n_unsafe=64, n_safe=64, answer_tokens=24, steps=24)
    cfg.fisher = replace(cfg.fisher, n_probe=32, max_new_tokens=24)
    cfg.task = replace(cfg.task, n_train=160, n_eval=30, steps=24)
    cfg.eval = replace(cfg.eval, n_unsafe=24, n_safe=16, max_new_tokens=24)
    return cfg


TINY_OVERRIDES = (
    "align.n_unsafe=6", "align.n_safe=6", "align.answer_tokens=6", "align.steps=2", "align.batch_size=4",
    "fisher.n_probe=4", "fisher.max_new_tokens=6", "fisher.max_rank=8", "fisher.batch_size=4",
    "task.n_train=12", "task.n_eval=6", "task.steps=2", "task.batch_size=4", "task.answer_tokens=6",
    "eval.n_unsafe=4", "eval.n_safe=4", "eval.max_new_tokens=6", "eval.batch_size=8",
)  # fmt: skip


def tiny_config(seed: int = 0) -> DemoConfig:
    """Seconds per stage on a random tiny Llama (``agl_trl.models.tiny_llama``): the tests' and smoke runs' sizes."""
    return apply_overrides(DemoConfig(seed=seed, model="tiny-llama", quick=True), list(TINY_OVERRIDES))


def apply_overrides(cfg: DemoConfig, overrides: list[str]) -> DemoConfig:
    """Apply ``section.field=value`` overrides (value parsed as JSON when possible, else a string)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value (e.g. agl.lambda_align=0.5)")
        path, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        target: Any = cfg
        parts = path.split(".")
        for part in parts[:-1]:
            if not is_dataclass(target) or part not in {f.name for f in fields(target)}:
                raise ValueError(f"unknown settings section {part!r} in override {item!r}")
            target = getattr(target, part)
        if not is_dataclass(target) or parts[-1] not in {f.name for f in fields(target)}:
            known = sorted(f.name for f in fields(target)) if is_dataclass(target) else []
            raise ValueError(f"unknown setting {path!r} in override {item!r}; known here: {known}")
        setattr(target, parts[-1], value)
    return cfg
