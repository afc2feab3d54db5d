"""agl-trl: AlignGuard-LoRA (AGL) for TRL, PEFT and Axolotl.

The public names are exported lazily (PEP 562): ``import agl_trl`` is cheap and imports torch/trl only when a name
that needs them is first used. To export a new name, add it to ``_LAZY`` (name -> module).
"""

from __future__ import annotations

import importlib
from typing import Any

from agl_trl.kinds import TRAINER_KINDS

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # configs and trainers: one of each per row of agl_trl.kinds.TRAINER_KINDS
    "AGLArgs": "agl_trl.config",
    **{kind.config_name: "agl_trl.config" for kind in TRAINER_KINDS},
    "AGLLossMixin": "agl_trl.trainers",
    "attach_agl": "agl_trl.trainers",
    "enable_agl": "agl_trl.trainers",
    **{kind.trainer_name: "agl_trl.trainers" for kind in TRAINER_KINDS},
    # core
    "AGLRegularizer": "agl_trl.regularizers",
    "AGLSettings": "agl_trl.regularizers",
    "FisherArtifact": "agl_trl.fisher",
    "FisherSettings": "agl_trl.fisher",
    "estimate_fisher": "agl_trl.fisher",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agl_trl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
