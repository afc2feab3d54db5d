"""AGL versions of the TRL trainers: the TRL trainer with the AGL regulariser added to its loss.

``AGLSFTTrainer``, ``AGLDPOTrainer``, ``AGLKTOTrainer`` and the online RL trainers ``AGLGRPOTrainer`` and
``AGLRLOOTrainer`` take exactly the arguments of their TRL parents; pass an AGL config (``AGLSFTConfig``, ...) as
``args`` to set the ``agl_*`` fields. The online trainers generate inside their training step; the regulariser does
not depend on the batch, so it is added to every micro-batch's loss under the same gradient-accumulation rule
(:func:`scale_for_ga`) and reaches each optimizer step once, however ``num_generations``, ``steps_per_generation``
and ``num_iterations`` slice and reuse the generated batch (docs/trainers.md). ``AGLORPOTrainer`` and ``AGLCPOTrainer``
wrap ``trl.experimental`` trainers and are built on first access (importing ``trl.experimental`` only then).
"""

from __future__ import annotations

from typing import Any

from trl import DPOTrainer, GRPOTrainer, KTOTrainer, RLOOTrainer, SFTTrainer

from agl_trl.config import EXPERIMENTAL_KINDS
from agl_trl.parallel import check_parallelism
from agl_trl.trainers.install import (
    AGLCallback,
    as_agl_trainer,
    attach_agl,
    attach_penalty,
    enable_agl,
    enable_penalty,
    initialise_agl,
)
from agl_trl.trainers.mixin import AGLLossMixin, scale_for_ga, trainer_divides_loss_by_ga
from agl_trl.trainers.runtime import AGLRuntime
from agl_trl.trainers.state import AGL_STATE_FILE, save_agl_state
from agl_trl.utils import derived_class, lazy_getattr


class AGLSFTTrainer(AGLLossMixin, SFTTrainer):
    """``trl.SFTTrainer`` + AGL. Configure with :class:`agl_trl.config.AGLSFTConfig`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        attach_agl(self, self.args)


class AGLDPOTrainer(AGLLossMixin, DPOTrainer):
    """``trl.DPOTrainer`` + AGL. Configure with :class:`agl_trl.config.AGLDPOConfig`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        attach_agl(self, self.args)


class AGLKTOTrainer(AGLLossMixin, KTOTrainer):
    """``trl.KTOTrainer`` + AGL. Configure with :class:`agl_trl.config.AGLKTOConfig`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        attach_agl(self, self.args)


class AGLGRPOTrainer(AGLLossMixin, GRPOTrainer):
    """``trl.GRPOTrainer`` + AGL. Configure with :class:`agl_trl.config.AGLGRPOConfig`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        attach_agl(self, self.args)


class AGLRLOOTrainer(AGLLossMixin, RLOOTrainer):
    """``trl.RLOOTrainer`` + AGL. Configure with :class:`agl_trl.config.AGLRLOOConfig`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        attach_agl(self, self.args)


def agl_trainer_class(base: type, name: str | None = None) -> type:
    """``base`` (a TRL trainer class) with the AGL regulariser added to its loss, configured from ``self.args``."""
    name = name or f"AGL{base.__name__}"

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        attach_agl(self, self.args)

    doc = f"``trl.experimental.{base.__name__}`` + AGL (configure with ``AGL{base.__name__[:-7]}Config``)."
    return derived_class(name, (AGLLossMixin, base), __name__, doc, __init__=__init__)


EXPERIMENTAL_TRAINERS = {f"AGL{kind}Trainer": f"{module}:{kind}Trainer" for kind, module in EXPERIMENTAL_KINDS.items()}

__getattr__ = lazy_getattr(__name__, globals(), EXPERIMENTAL_TRAINERS, agl_trainer_class)

__all__ = [
    "AGL_STATE_FILE",
    "AGLCallback",
    "AGLRuntime",
    "agl_trainer_class",
    "as_agl_trainer",
    "attach_penalty",
    "check_parallelism",
    "enable_penalty",
    "initialise_agl",
    "save_agl_state",
    "scale_for_ga",
    "trainer_divides_loss_by_ga",
    "AGLLossMixin",
    "AGLSFTTrainer",
    "AGLDPOTrainer",
    "AGLKTOTrainer",
    "AGLGRPOTrainer",
    "AGLRLOOTrainer",
    "attach_agl",
    "enable_agl",
]
