"""Every AGL setting in one place: name, default, help, choices, unit and rule (no torch, trl or pydantic).

Three dataclasses own the settings, and validate themselves when built (``__post_init__``), so an object that exists
is valid and is passed on as it is:

* :class:`AGLSettings` -- the regulariser (keys ``agl_<name>``);
* :class:`FisherSettings` -- how the Fisher is estimated (keys ``agl_fisher_<name>``);
* :class:`ArtifactSettings` -- where the Fisher artifact comes from (keys ``agl_<name>``).

:class:`AGLTrainingSettings` bundles them with ``agl_enabled`` for a training run; its
:meth:`~AGLTrainingSettings.from_prefixed` is the one reader of the ``agl_*`` keys (a config, an Axolotl cfg, a
dict). The front ends declare each key with its type and take the rest from :func:`setting_fields`:
``agl_trl.config.AGLArgs`` (the ``agl_*`` fields of the TRL configs, via :func:`agl_trl.config.agl_field`) and
``agl_trl.integrations.axolotl.args.AGLAxolotlArgs`` (the Axolotl keys); both validate through this module, so a rule
written here holds in every front end with the same message. The rules themselves and the error they raise live in
:mod:`agl_trl.setting_rules` (re-exported here); :mod:`agl_trl.settings_docs` writes docs/trainers.md's table
and docs/settings.md, the full reference, from :func:`setting_fields`.
"""

from __future__ import annotations

import difflib
import functools
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from agl_trl.setting_rules import (
    AGLUserError,
    Check,
    at_least,
    check_value,
    invalid,
    optional_at_least,
    optional_text,
    optional_weight,
    positive,
    probe_source,
    split_name,
    weight,
    within,
)

BUILTIN_PROBE = "driftcaps"
# the KL anchor's interval when `agl_kl_anchor_every` is unset (chosen on validation: docs/benchmarks.md)
DEFAULT_KL_ANCHOR_EVERY = 10
# the anchor's response tokens and the adaptive lambda's floor, chosen by the held-out-style folds (docs/generalization.md)
DEFAULT_KL_ANCHOR_TOKENS = 16
DEFAULT_LAMBDA_FLOOR = 1.0
GATE_CHOICES = ("soft", "hard")
ESTIMATOR_CHOICES = ("kfac", "diagonal")
TARGETS_CHOICES = ("sampled", "empirical")
SKETCH_CHOICES = ("auto", "exact", "nystrom")
POSITIONS_CHOICES = ("all", "response")


def setting(
    default: Any,
    help: str,
    check: Check | None = None,
    choices: tuple[str, ...] | None = None,
    unset: str | None = None,
    unit: str | None = None,
) -> Any:
    """A dataclass field carrying its help text, its choices and its rule (read by :func:`setting_fields`).
    ``unset``: what the default ``None`` resolves to at train start, as ``--help`` and the docs show it; ``unit``:
    the value's unit where the help states one (docs/settings.md shows it)."""
    metadata = {"help": help, "choices": choices, "check": check, "unset": unset, "unit": unit}
    return field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------------------------------
# The settings
# ---------------------------------------------------------------------------------------------------------------------


class _Validated:
    """Mixin: validate every field at construction (and on ``dataclasses.replace``)."""

    KEY_PREFIX = "agl_"

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            meta = f.metadata
            check_value(self.KEY_PREFIX + f.name, getattr(self, f.name), f.type, meta["choices"], meta["check"])

    def validate(self) -> Any:
        """Re-check every field (after an in-place change); returns ``self``."""
        self.__post_init__()
        return self


@dataclass
class AGLSettings(_Validated):
    """Weights and knobs of the AGL objective (docs/method.md; values measured on SmolLM2: docs/benchmarks.md)."""

    lambda_align: float | None = setting(
        None,
        "Weight of R_A, the Fisher-weighted penalty on the update, per nat of estimated KL. Unset (default): "
        "adapted during training so that the measured probe KL settles at `agl_kl_budget`; a number: a fixed weight "
        "(expert override; the KL is still measured and logged); 0: meter only (no penalty).",
        optional_weight,
        unset="adaptive (the measured probe KL settles at agl_kl_budget)",
    )
    kl_budget: float = setting(
        0.1,
        "Drift budget: the KL(aligned || tuned) per probe response token, in nats, that the adaptive lambda_align "
        "aims for (measured on held-out probe sequences, adapter on vs off; > 0). 0.1: chosen on the peers "
        "benchmark's validation split (docs/benchmarks.md); lower protects more at a task cost.",
        positive("must be > 0 nats per token (e.g. 0.1)."),
        unit="nats per token",
    )
    kl_every: int = setting(
        10,
        "Measure the probe KL every this many optimizer steps (a forward of `agl_kl_batch_size` sequences, no "
        "backward); 0: never (then `agl_lambda_align` must be set).",
        at_least(0),
        unit="optimizer steps",
    )
    kl_batch_size: int = setting(
        4, "Probe sequences per KL measurement, and per KL anchor step (>= 1).", at_least(1), unit="sequences"
    )
    kl_sequences: int = setting(
        16,
        "Held-out probe sequences the KL meter cycles through (the last ones of the probe data; >= 1).",
        at_least(1),
        unit="sequences",
    )
    kl_anchor_every: int | None = setting(
        None,
        "Every this many optimizer steps, add lambda_align x the KL(aligned || tuned) itself, with its gradient, on "
        "`agl_kl_batch_size` of the Fisher's probe sequences (one no-grad and one grad forward of them): the "
        "function-space term that holds the KL the K-FAC penalty cannot see (docs/method.md, 'KL anchor steps'). "
        f"Unset (default): every {DEFAULT_KL_ANCHOR_EVERY}th step; off under DeepSpeed ZeRO-3 and when the probe data "
        "has no records beyond the meter's (both with a warning), and without `agl_probe_dataset`. 0: off; a number: "
        "that interval, refused where it cannot run.",
        optional_at_least(0),
        unset=f"{DEFAULT_KL_ANCHOR_EVERY} (off under DeepSpeed ZeRO-3, without probe data or probe records of its own)",
        unit="optimizer steps",
    )
    kl_anchor_tokens: int = setting(
        DEFAULT_KL_ANCHOR_TOKENS,
        "Response tokens of each KL anchor sequence the anchor term reads, from the first: the tokens where a refusal "
        f"is decided, at a fraction of the anchor's cost. {DEFAULT_KL_ANCHOR_TOKENS} (default): chosen by the "
        "held-out-style folds (docs/generalization.md); 0: every response token.",
        at_least(0),
        unit="tokens",
    )
    lambda_floor: float | None = setting(
        None,
        "Lowest value the adaptive lambda_align may take (>= 0). With the KL anchor steps holding the measured probe "
        "KL under budget, the budget would otherwise lower the K-FAC penalty's weight towards 0 and give up what the "
        f"meter cannot see (docs/method.md, 'Lambda floor'). Unset (default): {DEFAULT_LAMBDA_FLOOR:g} with the "
        "adaptive lambda_align (chosen by the held-out-style folds), none beside a fixed one; 0: no floor.",
        optional_weight,
        unset=f"{DEFAULT_LAMBDA_FLOOR:g} with the adaptive lambda_align; none beside a fixed agl_lambda_align",
    )
    align_penalty: bool = setting(
        True,
        "Add R_A, the K-FAC penalty (default). False: only the KL meter, the drift budget and the KL anchor steps act "
        "(the ablation that measures what R_A adds; docs/method.md).",
    )
    lambda_task: float = setting(
        0.01, "Weight of R_T, the trust-region penalty on the task part of the update.", weight
    )
    lambda_collision: float = setting(
        0.0,
        "Weight of the collision term mu * E_riem + (1 - mu) * E_geo; opt-in (0: off): at 3 validation seeds it "
        "changed neither gap drift nor task measurably (docs/method.md).",
        weight,
    )
    mu: float = setting(
        0.5,
        "Blend of the collision term in [0, 1]: mu * Riemannian overlap + (1 - mu) * geodesic.",
        within(0.0, 1.0, False, False, "must lie in [0, 1] (1 = Riemannian overlap only, 0 = geodesic only)."),
    )
    beta: float = setting(
        4.0, "Strength of the metric eta = 1 + beta * sigmoid(...) in the Riemannian overlap (>= 0).", weight
    )
    gate: str = setting(
        "soft",
        "Spectral gate splitting the update: 'soft' (G = lam / (lam + gamma), default) or 'hard' (projector; makes the "
        "geodesic term identically 0).",
        choices=GATE_CHOICES,
    )
    gate_damping: float = setting(
        0.1,
        "Gate damping gamma as a fraction of the largest Fisher eigenvalue product (> 0).",
        positive("must be > 0 (e.g. 0.1)."),
    )
    riem_block: int = setting(
        64, "Rows/columns of the random sub-block on which the Riemannian overlap is evaluated (>= 1).", at_least(1)
    )
    tau_quantile: float = setting(
        0.9,
        "Quantile of |dW| tracked as the adaptive threshold tau, in (0, 1).",
        within(0.0, 1.0, True, True, "must lie strictly between 0 and 1 (e.g. 0.9)."),
    )
    tau_momentum: float = setting(
        0.9,
        "Momentum of the running tau estimate, in [0, 1).",
        within(0.0, 1.0, False, True, "must lie in [0, 1) (e.g. 0.9)."),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weight_settings(self.lambda_align, self.kl_every, self.kl_budget)
        if self.lambda_align is not None and self.lambda_floor is not None and self.lambda_floor > 0:
            raise invalid(
                "agl_lambda_floor",
                self.lambda_floor,
                f"it bounds the adaptive weight, which agl_lambda_align={self.lambda_align:g} fixes: remove one of them.",
            )

    @property
    def adaptive(self) -> bool:
        """Whether lambda_align is adapted to the drift budget (no fixed weight given)."""
        return self.lambda_align is None

    @property
    def floor(self) -> float:
        """The floor in use: ``lambda_floor``; unset, :data:`DEFAULT_LAMBDA_FLOOR` if adaptive, else 0."""
        if self.lambda_floor is not None:
            return self.lambda_floor
        return DEFAULT_LAMBDA_FLOOR if self.adaptive else 0.0


def check_weight_settings(lambda_align: float | None, kl_every: int, kl_budget: float) -> None:
    """The rules between the alignment weight's keys, shared by the TRL configs and the Axolotl args: the adaptive
    weight needs the meter, and a fixed weight leaves ``agl_kl_budget`` without effect, so a budget other than the
    default beside a fixed weight is a conflict (the user meant one of the two)."""
    if lambda_align is None and kl_every == 0:
        raise invalid(
            "agl_kl_every",
            0,
            "the adaptive lambda_align (the default) needs the KL meter: set agl_kl_every "
            ">= 1 (e.g. 10), or fix the weight with agl_lambda_align (0: no penalty).",
        )
    default_budget = AGLSettings.__dataclass_fields__["kl_budget"].default
    if lambda_align is not None and kl_budget != default_budget:
        raise invalid(
            "agl_kl_budget",
            kl_budget,
            f"it has no effect while agl_lambda_align={lambda_align:g} fixes the weight: remove agl_lambda_align to "
            "let lambda adapt to this budget, or remove agl_kl_budget to keep the fixed weight.",
        )


@dataclass
class FisherSettings(_Validated):
    """How the Fisher of the aligned model is estimated (keys ``agl_fisher_<name>``)."""

    KEY_PREFIX = "agl_fisher_"

    estimator: str = setting(
        "kfac",
        "Fisher estimator: 'kfac' (Kronecker-factored, default) or 'diagonal' (EWC-style baseline).",
        choices=ESTIMATOR_CHOICES,
    )
    targets: str = setting(
        "sampled",
        "Targets: 'sampled' from the model (true Fisher, default) or 'empirical' (the probe responses).",
        choices=TARGETS_CHOICES,
    )
    positions: str = setting(
        "all",
        "Token positions whose layer inputs and output gradients enter the K-FAC factors: 'all' (default; the "
        "response's likelihood also moves through the prompt positions, via attention) or 'response' (only the "
        "positions that predict a response token; underestimates the KL several-fold).",
        choices=POSITIONS_CHOICES,
    )
    max_rank: int = setting(64, "Maximum number of eigen-directions kept per Kronecker factor (>= 1).", at_least(1))
    explained_variance: float = setting(
        0.95,
        "Keep the fewest eigen-directions explaining this fraction of a factor's trace, in (0, 1].",
        within(0.0, 1.0, True, False, "must lie in (0, 1] (e.g. 0.95)."),
    )
    max_samples: int = setting(
        256, "Maximum number of probe records used for the estimate (>= 1).", at_least(1), unit="probe records"
    )
    batch_size: int = setting(
        4, "Batch size of the Fisher estimation passes (>= 1).", at_least(1), unit="probe sequences"
    )
    max_length: int = setting(
        512, "Maximum tokens per probe sequence (prompt + response) (>= 2).", at_least(2), unit="tokens"
    )
    max_new_tokens: int = setting(
        64, "Tokens generated per probe prompt that has no response (>= 1).", at_least(1), unit="tokens"
    )
    sketch: str = setting(
        "auto",
        "How large factors are reduced: 'auto' (exact when it fits `agl_fisher_memory_budget_gb`), 'exact' or "
        "'nystrom'.",
        choices=SKETCH_CHOICES,
    )
    memory_budget_gb: float = setting(
        4.0,
        "Memory budget (GiB) for exact factors before 'auto' switches to a sketch (> 0).",
        positive("must be > 0 GiB (e.g. 4)."),
        unit="GiB",
    )
    seed: int = setting(0, "Seed of the Fisher estimation (sampled targets, probe subsampling).", at_least(0))


@dataclass
class ArtifactSettings(_Validated):
    """Where a training run's Fisher artifact comes from (resolved by :func:`agl_trl.fisher.resolve_artifact`)."""

    fisher_path: str | None = setting(
        None,
        "Directory of a saved Fisher artifact (from `agl-trl fisher`). If unset, reuse <output_dir>/agl_fisher/ "
        "when present, else estimate from `agl_probe_dataset` before training.",
        optional_text("give the directory of a saved Fisher artifact, or leave it unset."),
    )
    probe_dataset: str | None = setting(
        BUILTIN_PROBE,
        "Probe data used to estimate the Fisher when no artifact is given: 'driftcaps' (built-in probe split), a "
        "local .jsonl/.json file, or a Hub dataset id with a `prompt` (+ optional `response`) column.",
        probe_source,
    )
    probe_split: str = setting(
        "train", "Split of a Hub `agl_probe_dataset` to read (DriftCaps always uses its probe split).", split_name
    )
    save_fisher: bool = setting(
        True, "Save an estimated Fisher artifact to <output_dir>/agl_fisher/ (main process only)."
    )


ENABLED_HELP = "Add the AlignGuard-LoRA regulariser to the training loss (--no_agl_enabled: plain TRL)."

NO_FISHER_SOURCE = (
    "with AGL enabled and no `agl_fisher_path`, a probe dataset is needed to estimate the Fisher: set "
    "`agl_probe_dataset` (e.g. 'driftcaps') or `agl_fisher_path`, or disable AGL with `agl_enabled: false`."
)


SETTING_GROUPS: tuple[type[ArtifactSettings | AGLSettings | FisherSettings], ...] = (
    ArtifactSettings,
    AGLSettings,
    FisherSettings,
)
"""The dataclasses of the ``agl_*`` keys, in the order front ends and docs list them (after ``agl_enabled``)."""


@dataclass
class AGLTrainingSettings:
    """Everything a trainer needs to run AGL: on/off, the artifact's source, the regulariser, the estimator."""

    enabled: bool = True
    artifact: ArtifactSettings = field(default_factory=ArtifactSettings)
    regularizer: AGLSettings = field(default_factory=AGLSettings)
    fisher: FisherSettings = field(default_factory=FisherSettings)

    def __post_init__(self) -> None:
        check_value("agl_enabled", self.enabled, bool)
        if self.enabled and self.artifact.fisher_path is None and self.artifact.probe_dataset is None:
            raise invalid("agl_probe_dataset", None, NO_FISHER_SOURCE)

    @classmethod
    def from_prefixed(cls, source: Any, none_is_default: bool = True) -> AGLTrainingSettings:
        """Build (and validate, once) from the ``agl_*`` keys of a config, an Axolotl cfg or a dict: the one reader
        of the settings (the configs' ``__post_init__``, the trainers, the Fisher script, the Axolotl plugin).

        ``none_is_default``: a ``None`` entry takes the default (Axolotl's cfg answers ``None`` for unset keys);
        ``False`` keeps it (a TRL config, where ``agl_probe_dataset=None`` means "no probe").
        """
        values = {f.key: _read(source, f.key) for f in setting_fields()}
        if none_is_default:
            values = {k: v for k, v in values.items() if v is not None}
        enabled = values.pop("agl_enabled", True)
        groups = {}
        for name, cls_ in (("artifact", ArtifactSettings), ("regularizer", AGLSettings), ("fisher", FisherSettings)):
            prefix = cls_.KEY_PREFIX
            groups[name] = cls_(**{f.name: values[prefix + f.name] for f in fields(cls_) if prefix + f.name in values})
        return cls(enabled=enabled, **groups)

    def to_prefixed(self) -> dict[str, Any]:
        """The ``agl_*`` keys of these settings (for a TRL config or an Axolotl YAML)."""
        out: dict[str, Any] = {"agl_enabled": self.enabled}
        for group in (self.artifact, self.regularizer, self.fisher):
            out.update({group.KEY_PREFIX + k: v for k, v in asdict(group).items()})
        return out


# ---------------------------------------------------------------------------------------------------------------------
# The one key table and the one validator, used by every front end
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingField:
    """One ``agl_*`` key: its type, default, help, choices and rule."""

    key: str
    type: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None
    rule: Check | None
    unset: str | None = None
    """What the default ``None`` resolves to at train start (None: the default is what it says)."""
    unit: str | None = None
    """The value's unit, where the help states one (``"nats per token"``, ``"GiB"``, ...)."""

    @property
    def described_help(self) -> str:
        """The help with what an unset default resolves to (the Axolotl schema's description)."""
        return f"{self.help} (default: {self.unset})" if self.unset else self.help

    @property
    def markdown_default(self) -> str:
        """The default as the docs' tables show it: ``0.1``, ``true``, or what an unset default resolves to."""
        if self.default is None:
            return f"unset: {self.unset}" if self.unset else "unset"
        return f"`{str(self.default).lower() if isinstance(self.default, bool) else self.default}`"

    @property
    def markdown_help(self) -> str:
        """The help as a Markdown table cell (literal ``|`` and ``<`` escaped)."""
        return self.help.replace("|", "\\|").replace("<", "\\<")

    def validate(self, value: Any) -> Any:
        """``value`` if valid for this key, else the :func:`invalid` error."""
        check_value(self.key, value, self.type, self.choices, self.rule)
        return value


@functools.cache
def setting_fields() -> tuple[SettingField, ...]:
    """Every ``agl_*`` key in the order front ends list them: enabled, artifact source, regulariser, Fisher."""
    table = [SettingField("agl_enabled", bool, True, ENABLED_HELP, None, None)]
    for cls in SETTING_GROUPS:
        hints = typing.get_type_hints(cls)  # the annotations as types (``float | None``), not strings
        for f in fields(cls):
            meta = f.metadata
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            table.append(
                SettingField(
                    cls.KEY_PREFIX + f.name,
                    hints[f.name],
                    default,
                    meta["help"],
                    meta["choices"],
                    meta["check"],
                    meta["unset"],
                    meta["unit"],
                )
            )
    return tuple(table)


SETTING_KEYS: tuple[str, ...] = tuple(f.key for f in setting_fields())
"""Every ``agl_*`` key, in declaration order."""
SETTINGS_BY_KEY: dict[str, SettingField] = {f.key: f for f in setting_fields()}


def unknown_key_message(key: str, valid: tuple[str, ...] = SETTING_KEYS) -> str:
    """``unknown key agl_lamda_align: did you mean agl_lambda_align?`` (the closest of ``valid``, if any is close)."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "no AGL setting has this name (the agl_* keys: docs/trainers.md)."
    return f"unknown key {key}: {hint}"


def check_known_keys(keys: Any, valid: tuple[str, ...] = SETTING_KEYS) -> None:
    """Raise :class:`AGLUserError` for the first ``agl_*`` key of ``keys`` that is not a setting (others are left)."""
    for key in keys:
        if isinstance(key, str) and key.startswith("agl_") and key not in valid:
            raise AGLUserError(unknown_key_message(key, valid))


def _read(source: Any, key: str) -> Any:
    return source.get(key) if isinstance(source, dict) else getattr(source, key, None)


__all__ = [
    "AGLSettings",
    "AGLUserError",
    "AGLTrainingSettings",
    "ArtifactSettings",
    "BUILTIN_PROBE",
    "DEFAULT_KL_ANCHOR_EVERY",
    "DEFAULT_KL_ANCHOR_TOKENS",
    "DEFAULT_LAMBDA_FLOOR",
    "ESTIMATOR_CHOICES",
    "FisherSettings",
    "GATE_CHOICES",
    "SETTING_GROUPS",
    "SETTING_KEYS",
    "SETTINGS_BY_KEY",
    "POSITIONS_CHOICES",
    "SKETCH_CHOICES",
    "SettingField",
    "TARGETS_CHOICES",
    "check_known_keys",
    "check_value",
    "check_weight_settings",
    "invalid",
    "setting_fields",
    "unknown_key_message",
]
