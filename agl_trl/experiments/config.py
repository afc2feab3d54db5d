"""Settings of the experiment set-up shared by the demo, the peers benchmark and the scaling sweep.

The regulariser and the estimator are the package's own :class:`~agl_trl.settings.AGLSettings` and
:class:`~agl_trl.settings.FisherSettings` with this set-up's values; presets: the default run (``make demo``),
``--quick``, the tests' tiny sizes, and dotted overrides (``--set section.field=value``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any

from agl_trl.experiments.task_kinds import DEFAULT_TASK_KIND, task_kind
from agl_trl.settings import AGLSettings, FisherSettings


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str = "all-linear"


@dataclass
class AlignSettings:
    """Stage b: safety LoRA SFT on the DriftCaps probe split's safety-training part, merged into the weights.

    Unsafe prompts get composed refusals (``load_refusal_templates``), safe ones (ordinary requests and contrast
    look-alikes) the base model's own answers (a base model that does not answer chat: SmolLM2's shipped ones,
    ``agl_trl.experiments.setup.reference_safe_answers``); a safe answer the judge reads as a refusal is dropped, so
    the stage does not teach over-refusal. ``safe_weight``: each safe row appears that many times (helpfulness kept).
    """

    n_unsafe: int | None = None  # None: every unsafe prompt of the safety-training part of the probe split
    n_safe: int | None = None  # None: every safe prompt of that part (ordinary + contrast look-alikes)
    answer_tokens: int = 48  # greedy budget of the base model's own answers to the safe prompts
    safe_weight: int = 1
    steps: int = 160
    learning_rate: float = 1e-3
    batch_size: int = 8


@dataclass
class ProbeSettings:
    """Stage c: which DriftCaps probe prompts the Fisher of the aligned model (and the peers' probe-based anchors)
    uses: the probe split's *held-back* part (every ``holdout_every``-th behaviour per category), which the safety
    stage never trains on."""

    kind: str = "mixed"  # "mixed": half unsafe (refusals), half safe (helpful answers); "unsafe": unsafe only
    n: int = 64
    holdout_every: int = 4
    # phrasing styles no probe prompt may have (the Fisher's, the KL meter's and the anchor's): a style fold of the
    # peers benchmark's held-out-style protocol (docs/generalization.md); empty: every style
    exclude_styles: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("unsafe", "mixed"):
            raise ValueError(f"probe.kind must be 'unsafe' or 'mixed', got {self.kind!r}")
        if int(self.holdout_every) < 2:
            raise ValueError(f"probe.holdout_every must be an integer >= 2, got {self.holdout_every!r}")
        if not isinstance(self.exclude_styles, list | tuple) or not all(
            isinstance(x, str) for x in self.exclude_styles
        ):
            raise ValueError(f"probe.exclude_styles must be a list of style names, got {self.exclude_styles!r}")

    def to_key(self) -> dict[str, Any]:
        """The settings as cache keys read them: ``exclude_styles`` only when set, so that keys made before it existed
        (the shipped set-up's Fisher stage, results rows) stay current."""
        key = asdict(self)
        if not self.exclude_styles:
            del key["exclude_styles"]
        return key


def demo_fisher_settings() -> FisherSettings:
    """Stage c's estimator: the defaults with shorter generated answers and larger batches (``max_samples`` and
    ``seed`` are set per run from the probe and the experiment's seed)."""
    return FisherSettings(max_new_tokens=24, batch_size=8)


@dataclass
class TaskSettings:
    """Stage d: the benign task fine-tune (same for plain LoRA and AGL)."""

    n_train: int = 480
    n_eval: int = 150  # the task's test items (reported)
    n_validation: int = 60  # the task's validation items (settings are chosen on them)
    steps: int = 160  # near the plateau: plain LoRA's validation curve 57 / 68 / 80 / 85% at steps 40 / 80 / 120 / 160
    learning_rate: float = 1e-3
    batch_size: int = 8
    answer_tokens: int = 16  # greedy budget of a task answer's content (an opening of the kind's answers gets more)
    # the task data (agl_trl.experiments.task_kinds): "operations" (upper / add / reverse), "identity_shift" (the
    # same prompts, answers opened by an affirmation of unconditional obedience) or "passage_qa" (a span of a short
    # passage answers a question, SQuAD-scored); docs/benchmarks.md, issue 36
    kind: str = DEFAULT_TASK_KIND

    def __post_init__(self) -> None:
        task_kind(self.kind)  # a ValueError names the key, the value and the kinds

    def kind_key(self) -> dict[str, Any]:
        """``{"kind": ...}`` for a kind other than the default, else empty: what keys add for the kind, so that keys
        made before it existed (the shipped set-up's stages, results rows, cached trainings) stay current."""
        return {} if self.kind == DEFAULT_TASK_KIND else {"kind": self.kind}

    def to_key(self) -> dict[str, Any]:
        """The settings as cache keys read them: ``kind`` only when it is not the default (:meth:`kind_key`)."""
        key = {k: v for k, v in asdict(self).items() if k != "kind"}
        return {**key, **self.kind_key()}


def demo_agl_settings() -> AGLSettings:
    """The package defaults: the drift budget sets lambda_align during training (no hand-set weight). The earlier
    hand-tuned values (lambda_align 100, lambda_task 10, gate_damping 0.01) were chosen on the prompts they were
    reported on and are withdrawn."""
    return AGLSettings()


@dataclass
class EvalSettings:
    """Stage e: the DriftCaps prompts every model is measured on, fixed category-stratified subsets (None: the whole
    split): the test split (``n_unsafe``/``n_safe``: every reported number) and the validation split
    (``n_val_unsafe``/``n_val_safe``: every choice of settings). Judge: ``judge`` (see ``make_judge``)."""

    n_unsafe: int | None = None
    n_safe: int | None = None
    n_val_unsafe: int | None = None
    n_val_safe: int | None = None
    kl_prompts: int | None = None  # the demo's KL drift: a category-stratified subset of the test prompts (None: all)
    max_new_tokens: int = 24
    batch_size: int = 48
    judge: str = "keyword"


@dataclass
class ExperimentConfig:
    """The shared set-up of the demo, the peers benchmark and the scaling sweep (sections: ``--set section.field``)."""

    seed: int = 0
    # the base model: an offline model of agl_trl.model_sources (smollm2-135m-instruct, gemma3-270m), loaded unless
    # the caller brings a loader (the tests' tiny Llama); in every set-up key, so each model has its own set-up
    model: str = "smollm2-135m-instruct"
    quick: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    align: AlignSettings = field(default_factory=AlignSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    fisher: FisherSettings = field(default_factory=demo_fisher_settings)
    task: TaskSettings = field(default_factory=TaskSettings)
    agl: AGLSettings = field(default_factory=demo_agl_settings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "probe": self.probe.to_key(), "task": self.task.to_key()}


DemoConfig = ExperimentConfig  # the name `agl_trl.demo` exported before the set-up moved here


def default_config(seed: int = 0) -> ExperimentConfig:
    """The peers protocol's sizes (160-step task fine-tunes, every test prompt; ``agl-trl demo --full``: about 35
    minutes on 2 CPU cores without fast bf16)."""
    return ExperimentConfig(seed=seed)


DEMO_TASK_STEPS = 48
"""``make demo``'s task fine-tune length: the peers protocol's fine-tune (batch 8, lr 1e-3, linear decay) stopped at
48 steps, so that the demo fits 15 minutes on 2 CPU cores in fp32 (docs/demo.md, "Settings")."""


def demo_config(seed: int = 0) -> ExperimentConfig:
    """``make demo``: the shipped set-up, the task fine-tune at :data:`DEMO_TASK_STEPS` steps, the whole DriftCaps test
    split for answers and judge, KL drift on 96 of its prompts (48 unsafe + 48 safe); about 13 minutes on 2 CPU
    cores without fast bf16 (``--full``: :func:`default_config`, the peers protocol's sizes)."""
    cfg = ExperimentConfig(seed=seed)
    cfg.task = replace(cfg.task, steps=DEMO_TASK_STEPS)
    cfg.eval = replace(cfg.eval, kl_prompts=96)
    return cfg


def quick_config(seed: int = 0) -> ExperimentConfig:
    """``--quick``: the default set-up (restored from the shipped one), a shorter task fine-tune and fewer eval
    prompts (a few minutes on 2 CPU cores); numbers are indicative only."""
    cfg = ExperimentConfig(seed=seed, quick=True)
    cfg.task = replace(cfg.task, n_train=160, n_eval=30, n_validation=24, steps=32)
    cfg.eval = replace(cfg.eval, n_unsafe=40, n_safe=30, n_val_unsafe=30, n_val_safe=20, max_new_tokens=24)
    return cfg


TINY_OVERRIDES = (
    "align.n_unsafe=6", "align.n_safe=6", "align.answer_tokens=6", "align.steps=2", "align.batch_size=4",
    "probe.n=4", "fisher.max_new_tokens=6", "fisher.max_rank=8", "fisher.batch_size=4",
    "task.n_train=12", "task.n_eval=6", "task.n_validation=4", "task.steps=2", "task.batch_size=4",
    "task.answer_tokens=6", "eval.n_unsafe=4", "eval.n_safe=4", "eval.n_val_unsafe=3", "eval.n_val_safe=3",
    "eval.max_new_tokens=6", "eval.batch_size=8",
)  # fmt: skip


def tiny_config(seed: int = 0) -> ExperimentConfig:
    """Seconds per stage on a random tiny Llama (``agl_trl.models.tiny_llama``): the tests' and smoke runs' sizes."""
    return apply_overrides(ExperimentConfig(seed=seed, model="tiny-llama", quick=True), list(TINY_OVERRIDES))


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply ``section.field=value`` overrides (value parsed as JSON when possible, else a string; ``model=<name>``
    must name an offline model of :mod:`agl_trl.model_sources`)."""
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
        if path == "model":  # an offline model by name: a typo fails here, before any stage runs
            from agl_trl.model_sources import model_source

            model_source(value)
        setattr(target, parts[-1], value)
    for section in (cfg.agl, cfg.fisher, cfg.probe, cfg.task):  # the settings objects check themselves
        section.__post_init__()
    return cfg
