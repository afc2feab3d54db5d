"""The peer methods AGL is benchmarked against, written by the project (one module per method, see each docstring).

During training (callables ``penalty(model, step) -> (loss, metrics)``, attached to any TRL trainer with
:func:`agl_trl.trainers.enable_penalty` / :func:`~agl_trl.trainers.attach_penalty`, the plumbing AGL uses):

- :func:`ewc_penalty` -- EWC: AGL's regulariser on a diagonal Fisher artifact.
- :class:`L2UpdatePenalty` -- L2-SP towards the aligned weights, lambda * sum ||s B A||^2.
- :class:`KLToReferencePenalty` -- KL(aligned || current) on probe sequences (an extra forward per step).
- :class:`AsFTPenalty` -- AsFT-style: the update's energy orthogonal to the alignment direction.
- :class:`RepresentationAnchorPenalty` -- SBR's representation anchor: MSE of the last-prompt-token final hidden
  state to the aligned model's on unsafe probe prompts (an extra forward per step).
- :class:`LisaPenalty` -- Lisa as a penalty: alignment-phase CE on refusals + a proximal term to the last switch point.

Before training: :func:`mix_safety_rows` -- safety data mixing (refusal rows added to the task data; no penalty).

After training: :func:`safe_lora_project` -- Safe LoRA's projection of the adapter onto C = V V^T / ||V||_F.

The peers benchmark's method registry (names, strengths, artifacts, how each is built by name) is lab code outside
the package: ``benchmarks/lab/registry.py``.
"""

from agl_trl.baselines.alignment import (
    AlignmentDirection,
    alignment_directions,
    direction_from_delta,
    load_directions,
    save_directions,
)
from agl_trl.baselines.asft import AsFTPenalty
from agl_trl.baselines.common import Penalty
from agl_trl.baselines.ewc import ewc_fisher_settings, ewc_penalty
from agl_trl.baselines.kl_reference import KLToReferencePenalty
from agl_trl.baselines.l2 import L2UpdatePenalty
from agl_trl.baselines.lisa import LisaPenalty
from agl_trl.baselines.mixing import mix_safety_rows
from agl_trl.baselines.representation import RepresentationAnchorPenalty
from agl_trl.baselines.safe_lora import SafeLoRAReport, safe_lora_cosines, safe_lora_project

__all__ = [
    "AlignmentDirection",
    "AsFTPenalty",
    "KLToReferencePenalty",
    "L2UpdatePenalty",
    "LisaPenalty",
    "Penalty",
    "RepresentationAnchorPenalty",
    "SafeLoRAReport",
    "alignment_directions",
    "direction_from_delta",
    "ewc_fisher_settings",
    "ewc_penalty",
    "load_directions",
    "mix_safety_rows",
    "safe_lora_cosines",
    "safe_lora_project",
    "save_directions",
]
