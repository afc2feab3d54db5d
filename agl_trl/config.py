"""Configuration of AGL: the ``agl_*`` fields of the TRL trainer configs.

``AGLArgs`` is a dataclass mixin generated from :mod:`agl_trl.settings` (the one owner of every setting's default,
help, choices and rule). Every trainer config (``AGLSFTConfig``, ``AGLDPOConfig``, ...) inherits it, so ``TrlParser``
reads the ``agl_*`` keys from recipe YAML files and from the command line, and the Axolotl plugin exposes the same
names. ``__post_init__`` validates the fields once, by building :class:`~agl_trl.settings.AGLTrainingSettings`; the
trainers take that object from :meth:`AGLArgs.agl_settings`. With AGL enabled, a trainer config also checks the
files the run will read (:func:`agl_trl.preflight.check_sources`: the artifact, a local probe file) before any model
loads. Errors name the field, the bad value and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from trl import DPOConfig, GRPOConfig, KTOConfig, RLOOConfig, SFTConfig

from agl_trl.preflight import check_sources
from agl_trl.settings import (
    BUILTIN_PROBE,
    ESTIMATOR_CHOICES,
    GATE_CHOICES,
    SKETCH_CHOICES,
    TARGETS_CHOICES,
    AGLTrainingSettings,
    setting_fields,
)
from agl_trl.utils import derived_class, lazy_getattr


def _agl_post_init(self: Any) -> None:
    validate_agl_args(self)


def _agl_settings(self: Any) -> AGLTrainingSettings:
    """The validated settings objects of these fields (rebuilt only if a field changed since the last call)."""
    snapshot = tuple(getattr(self, name) for name in AGL_FIELD_NAMES)
    cached = self.__dict__.get("_agl_settings_cache")
    if cached is None or cached[0] != snapshot:
        cached = (snapshot, AGLTrainingSettings.from_prefixed(self, none_is_default=False))
        self.__dict__["_agl_settings_cache"] = cached
    return cached[1]


def _make_agl_args() -> type:
    specs = setting_fields()
    columns = []
    for spec in specs:
        metadata: dict[str, Any] = {"help": spec.help}
        if spec.choices:
            metadata["choices"] = list(spec.choices)
        columns.append((spec.key, spec.type, field(default=spec.default, metadata=metadata)))
    doc = "\n".join(f"        {s.key}: {s.help}" for s in specs)
    namespace = {"__post_init__": _agl_post_init, "agl_settings": _agl_settings, "__module__": __name__}
    cls = make_dataclass("AGLArgs", columns, namespace=namespace)
    cls.__doc__ = (
        "The ``agl_*`` fields shared by every AGL trainer config, the CLI recipes and the Axolotl plugin "
        "(generated from :mod:`agl_trl.settings`).\n\n    Parameters:\n" + doc
    )
    return cls


AGLArgs = _make_agl_args()

AGL_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(AGLArgs))
"""Names of every ``agl_*`` field, in declaration order."""


def validate_agl_args(args: Any) -> AGLTrainingSettings:
    """Check every ``agl_*`` field of ``args`` (an ``AGLArgs`` or any object with those attributes).

    Raises ``ValueError`` naming the field, the bad value and the fix; returns the validated settings objects.
    """
    if isinstance(args, AGLArgs):
        return args.agl_settings()
    return AGLTrainingSettings.from_prefixed(args, none_is_default=False)


def agl_args_from(source: Any) -> Any:
    """Build a validated :class:`AGLArgs` from any object with ``agl_*`` attributes (a config, an Axolotl cfg, ...).

    Missing attributes, and ``None`` for fields whose default is not ``None`` (Axolotl's ``DictDefault`` answers
    ``None`` for unknown keys), take the defaults.
    """
    values: dict[str, Any] = {}
    for f in fields(AGLArgs):
        value = source.get(f.name, None) if isinstance(source, dict) else getattr(source, f.name, None)
        values[f.name] = f.default if value is None and f.default is not None else value
    return AGLArgs(**values)


def regularizer_settings(args: Any) -> Any:
    """The validated :class:`~agl_trl.settings.AGLSettings` of the ``agl_*`` fields of ``args``."""
    return validate_agl_args(args).regularizer


def fisher_settings(args: Any) -> Any:
    """The validated :class:`~agl_trl.settings.FisherSettings` of the ``agl_fisher_*`` fields of ``args``."""
    return validate_agl_args(args).fisher


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


def agl_config_class(base: type, name: str | None = None) -> type:
    """``base`` (a TRL trainer config) plus the ``agl_*`` fields, validated after the base's own checks."""
    name = name or f"AGL{base.__name__}"

    def __post_init__(self: Any) -> None:
        resolve_config_precision(self)
        base.__post_init__(self)
        settings = validate_agl_args(self)
        if settings.enabled:  # the files the run will read, before any model loads
            check_sources(settings.artifact.fisher_path, settings.artifact.probe_dataset)

    where = "trl.experimental" if ".experimental." in base.__module__ else "trl"
    doc = f"``{where}.{base.__name__}`` plus the ``agl_*`` fields of :class:`AGLArgs`."
    return dataclass(derived_class(name, (base, AGLArgs), __name__, doc, __post_init__=__post_init__))


AGLSFTConfig = agl_config_class(SFTConfig)
AGLDPOConfig = agl_config_class(DPOConfig)
AGLKTOConfig = agl_config_class(KTOConfig)
AGLGRPOConfig = agl_config_class(GRPOConfig)
AGLRLOOConfig = agl_config_class(RLOOConfig)

# TRL's experimental trainers AGL wraps (kind -> module); their AGL config and trainer classes are built on first
# access, since importing trl.experimental is slow and prints a warning
EXPERIMENTAL_KINDS = {"ORPO": "trl.experimental.orpo", "CPO": "trl.experimental.cpo"}
EXPERIMENTAL_CONFIGS = {f"AGL{kind}Config": f"{module}:{kind}Config" for kind, module in EXPERIMENTAL_KINDS.items()}

__getattr__ = lazy_getattr(__name__, globals(), EXPERIMENTAL_CONFIGS, agl_config_class)

__all__ = [
    "AGLArgs",
    "AGLSFTConfig",
    "AGLDPOConfig",
    "AGLKTOConfig",
    "AGLGRPOConfig",
    "AGLRLOOConfig",
    "AGL_FIELD_NAMES",
    "BUILTIN_PROBE",
    "ESTIMATOR_CHOICES",
    "GATE_CHOICES",
    "SKETCH_CHOICES",
    "TARGETS_CHOICES",
    "agl_config_class",
    "agl_args_from",
    "resolve_config_precision",
    "validate_agl_args",
    "regularizer_settings",
    "fisher_settings",
]
