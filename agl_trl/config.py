"""Configuration of AGL: the ``agl_*`` fields of the TRL trainer configs.

:class:`AGLArgs` declares every ``agl_*`` field (name and type written out, for IDEs and type checkers; default, help
and choices read from :mod:`agl_trl.settings`, the one owner of every setting, by :func:`agl_field`;
tests/trainers/test_trainer_config.py keeps the declarations equal to it). Every trainer config (``AGLSFTConfig``,
``AGLDPOConfig``, ...; one per row of :data:`agl_trl.kinds.TRAINER_KINDS`) inherits it, so ``TrlParser`` reads the
``agl_*`` keys from recipe YAML files and from the command line, and the Axolotl plugin exposes the same names.
``__post_init__`` validates the fields by building :class:`~agl_trl.settings.AGLTrainingSettings` (the trainers read
them the same way, :meth:`AGLTrainingSettings.from_prefixed`). With AGL enabled, a trainer config also checks the
files the run will read (:func:`agl_trl.preflight.check_sources`: the artifact, a local probe file) before any model
loads. Errors name the field, the bad value and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from agl_trl.kinds import TRAINER_KINDS
from agl_trl.preflight import check_sources
from agl_trl.settings import (
    BUILTIN_PROBE,
    ESTIMATOR_CHOICES,
    GATE_CHOICES,
    SETTINGS_BY_KEY,
    SKETCH_CHOICES,
    TARGETS_CHOICES,
    AGLTrainingSettings,
)
from agl_trl.utils import derived_class, derived_classes


def agl_field(key: str) -> Any:
    """The dataclass field of setting ``key``: the default of :mod:`agl_trl.settings`, and its help and choices as
    ``HfArgumentParser`` reads them. Where an unset default resolves at train start, the help ends with what it
    resolves to, and ``%(default).0s`` (which prints nothing) stops argparse from adding "(default: None)"."""
    spec = SETTINGS_BY_KEY[key]
    metadata: dict[str, Any] = {"help": f"{spec.described_help}%(default).0s" if spec.unset else spec.help}
    if spec.choices:
        metadata["choices"] = list(spec.choices)
    return field(default=spec.default, metadata=metadata)


@dataclass
class AGLArgs:
    """The ``agl_*`` fields shared by every AGL trainer config, the CLI recipes and the Axolotl plugin.

    Each field's default, help and rule: :mod:`agl_trl.settings` (and docs/trainers.md, generated from it).
    """

    agl_enabled: bool = agl_field("agl_enabled")
    agl_fisher_path: str | None = agl_field("agl_fisher_path")
    agl_probe_dataset: str | None = agl_field("agl_probe_dataset")
    agl_probe_split: str = agl_field("agl_probe_split")
    agl_save_fisher: bool = agl_field("agl_save_fisher")
    agl_lambda_align: float | None = agl_field("agl_lambda_align")
    agl_kl_budget: float = agl_field("agl_kl_budget")
    agl_kl_every: int = agl_field("agl_kl_every")
    agl_kl_batch_size: int = agl_field("agl_kl_batch_size")
    agl_kl_sequences: int = agl_field("agl_kl_sequences")
    agl_kl_anchor_every: int | None = agl_field("agl_kl_anchor_every")
    agl_kl_anchor_tokens: int = agl_field("agl_kl_anchor_tokens")
    agl_lambda_floor: float | None = agl_field("agl_lambda_floor")
    agl_align_penalty: bool = agl_field("agl_align_penalty")
    agl_lambda_task: float = agl_field("agl_lambda_task")
    agl_lambda_collision: float = agl_field("agl_lambda_collision")
    agl_mu: float = agl_field("agl_mu")
    agl_beta: float = agl_field("agl_beta")
    agl_gate: str = agl_field("agl_gate")
    agl_gate_damping: float = agl_field("agl_gate_damping")
    agl_riem_block: int = agl_field("agl_riem_block")
    agl_tau_quantile: float = agl_field("agl_tau_quantile")
    agl_tau_momentum: float = agl_field("agl_tau_momentum")
    agl_fisher_estimator: str = agl_field("agl_fisher_estimator")
    agl_fisher_targets: str = agl_field("agl_fisher_targets")
    agl_fisher_positions: str = agl_field("agl_fisher_positions")
    agl_fisher_max_rank: int = agl_field("agl_fisher_max_rank")
    agl_fisher_explained_variance: float = agl_field("agl_fisher_explained_variance")
    agl_fisher_max_samples: int = agl_field("agl_fisher_max_samples")
    agl_fisher_batch_size: int = agl_field("agl_fisher_batch_size")
    agl_fisher_max_length: int = agl_field("agl_fisher_max_length")
    agl_fisher_max_new_tokens: int = agl_field("agl_fisher_max_new_tokens")
    agl_fisher_sketch: str = agl_field("agl_fisher_sketch")
    agl_fisher_memory_budget_gb: float = agl_field("agl_fisher_memory_budget_gb")
    agl_fisher_seed: int = agl_field("agl_fisher_seed")

    def __post_init__(self) -> None:
        AGLTrainingSettings.from_prefixed(self, none_is_default=False)


# ---------------------------------------------------------------------------------------------------------------------
# Trainer configs
# ---------------------------------------------------------------------------------------------------------------------


def resolve_config_precision(config: Any) -> None:
    """Set a trainer config's unset ``bf16`` to bf16 only where it is fast (:func:`agl_trl.precision.resolve_bf16`):
    TRL would set it to True, which on a CPU without AVX512-BF16/AMX is ~100x slower than fp32. An explicit
    ``bf16=True`` there is kept, with one warning that names the slowdown and the fix."""
    import torch

    from agl_trl.precision import resolve_bf16

    if not hasattr(config, "bf16"):
        return
    use_cpu = bool(getattr(config, "use_cpu", False))
    on_cpu = use_cpu or not torch.cuda.is_available()
    if config.bf16 is None and on_cpu and not use_cpu:  # transformers allows bf16 on a CPU only with use_cpu
        config.bf16 = False
    config.bf16 = resolve_bf16(config.bf16, fp16=bool(getattr(config, "fp16", False)), on_cpu=on_cpu)


# transformers 5.23 renamed the TrainingArguments fields (old name, new name); 5.20.1 (Axolotl 0.21's pin) has only the
# old ones, so recipes that run on both keep the old names
CHECKPOINTING_RENAMES = (
    ("gradient_checkpointing", "activation_checkpointing"),
    ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
)


def adopt_checkpointing_names(config: Any) -> None:
    """Where the installed transformers has ``activation_checkpointing[_kwargs]`` and it is unset, copy the value of
    the deprecated ``gradient_checkpointing[_kwargs]`` into it, before transformers resolves the alias.

    The result is transformers' own (the new name wins, the old mirrors it), without its FutureWarning: TRL's configs
    default ``gradient_checkpointing`` to True, so every config on transformers 5.23 warned, though neither the
    recipe nor the user had used anything a 5.20.1 install accepts otherwise. A no-op on transformers < 5.23.
    """
    for old, new in CHECKPOINTING_RENAMES:
        if hasattr(config, new) and getattr(config, new) is None and getattr(config, old, None) is not None:
            setattr(config, new, getattr(config, old))


def checkpointing_arguments(enabled: bool) -> dict[str, bool]:
    """The training argument that switches activation checkpointing, under the name the installed transformers
    reads without a warning: ``{"activation_checkpointing": enabled}`` from 5.23, ``{"gradient_checkpointing": ...}``
    before. For code that builds a TRL config that has no :func:`adopt_checkpointing_names` (plain ``SFTConfig``)."""
    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def agl_config_class(base: type, name: str | None = None) -> type:
    """``base`` (a TRL trainer config) plus the ``agl_*`` fields, validated after the base's own checks."""
    name = name or f"AGL{base.__name__}"

    def __post_init__(self: Any) -> None:
        resolve_config_precision(self)
        adopt_checkpointing_names(self)
        base.__post_init__(self)
        settings = AGLTrainingSettings.from_prefixed(self, none_is_default=False)
        if settings.enabled:  # the files the run will read, before any model loads
            check_sources(settings.artifact.fisher_path, settings.artifact.probe_dataset)

    where = "trl.experimental" if ".experimental." in base.__module__ else "trl"
    doc = f"``{where}.{base.__name__}`` plus the ``agl_*`` fields of :class:`AGLArgs`."
    return dataclass(derived_class(name, (base, AGLArgs), __name__, doc, __post_init__=__post_init__))


if TYPE_CHECKING:  # what IDEs and type checkers read; at run time each class is built from its TRAINER_KINDS row
    from trl import DPOConfig, GRPOConfig, KTOConfig, RLOOConfig, SFTConfig
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.orpo import ORPOConfig

    class AGLSFTConfig(SFTConfig, AGLArgs): ...

    class AGLDPOConfig(DPOConfig, AGLArgs): ...

    class AGLKTOConfig(KTOConfig, AGLArgs): ...

    class AGLORPOConfig(ORPOConfig, AGLArgs): ...

    class AGLCPOConfig(CPOConfig, AGLArgs): ...

    class AGLGRPOConfig(GRPOConfig, AGLArgs): ...

    class AGLRLOOConfig(RLOOConfig, AGLArgs): ...


# one class per row; the trl.experimental ones on first access (importing it is slow and warns)
__getattr__ = derived_classes(
    __name__, globals(), {k.config_name: (k.trl_config, k.experimental) for k in TRAINER_KINDS}, agl_config_class
)

__all__ = [
    "AGLArgs",
    *(kind.config_name for kind in TRAINER_KINDS),
    "BUILTIN_PROBE",
    "ESTIMATOR_CHOICES",
    "GATE_CHOICES",
    "SKETCH_CHOICES",
    "TARGETS_CHOICES",
    "agl_config_class",
    "resolve_config_precision",
]
