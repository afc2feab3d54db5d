"""AGL versions of the TRL trainers: the TRL trainer with the AGL regulariser added to its loss.

One class per row of :data:`agl_trl.kinds.TRAINER_KINDS`: ``AGLSFTTrainer``, ``AGLDPOTrainer``, ``AGLKTOTrainer`` and
the online RL trainers ``AGLGRPOTrainer`` and ``AGLRLOOTrainer`` take exactly the arguments of their TRL parents; pass an AGL config (``AGLSFTConfig``, ...) as
``args`` to set the ``agl_*`` fields. The online trainers generate inside their training step; the regulariser does
not depend on the batch, so it is added to every micro-batch's loss under the same gradient-accumulation rule
(:func:`scale_for_ga`) and reaches each optimizer step once, however ``num_generations``, ``steps_per_generation``
and ``num_iterations`` slice and reuse the generated batch (docs/trainers.md). ``AGLORPOTrainer`` and ``AGLCPOTrainer``
wrap ``trl.experimental`` trainers and are built on first access (importing ``trl.experimental`` only then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agl_trl.kinds import TRAINER_KINDS
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
from agl_trl.utils import derived_class, derived_classes


def agl_trainer_class(base: type, name: str | None = None) -> type:
    """``base`` (a TRL trainer class) with the AGL regulariser added to its loss, configured from ``self.args``."""
    name = name or f"AGL{base.__name__}"

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        super(cls, self).__init__(*args, **kwargs)
        attach_agl(self, self.args)

    where = "trl.experimental" if ".experimental." in base.__module__ else "trl"
    config = f"AGL{base.__name__.removesuffix('Trainer')}Config"
    doc = f"``{where}.{base.__name__}`` + AGL. Configure with :class:`agl_trl.config.{config}`."
    cls = derived_class(name, (AGLLossMixin, base), __name__, doc, __init__=__init__)
    return cls


if TYPE_CHECKING:  # what IDEs and type checkers read; at run time each class is built from its TRAINER_KINDS row
    from trl import DPOTrainer, GRPOTrainer, KTOTrainer, RLOOTrainer, SFTTrainer
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    class AGLSFTTrainer(AGLLossMixin, SFTTrainer): ...

    class AGLDPOTrainer(AGLLossMixin, DPOTrainer): ...

    class AGLKTOTrainer(AGLLossMixin, KTOTrainer): ...

    class AGLORPOTrainer(AGLLossMixin, ORPOTrainer): ...

    class AGLCPOTrainer(AGLLossMixin, CPOTrainer): ...

    class AGLGRPOTrainer(AGLLossMixin, GRPOTrainer): ...

    class AGLRLOOTrainer(AGLLossMixin, RLOOTrainer): ...


# one class per row; the trl.experimental ones on first access (importing it is slow and warns)
__getattr__ = derived_classes(
    __name__, globals(), {k.trainer_name: (k.trl_trainer, k.experimental) for k in TRAINER_KINDS}, agl_trainer_class
)

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
    *(kind.trainer_name for kind in TRAINER_KINDS),
    "attach_agl",
    "enable_agl",
]
