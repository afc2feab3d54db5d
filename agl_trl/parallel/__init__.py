"""Multi-GPU support in one place: which parallel set-ups AGL runs under, and how it reads sharded parameters.

- this module (no torch import, so the Axolotl config check can use it): the refusals and
  :func:`check_parallelism`, which a trainer's install runs;
- :mod:`agl_trl.parallel.sharding`: FSDP2 (DTensor shards) and DeepSpeed ZeRO-3 (partitioned parameters): whole
  reads, the differentiable group all-gather, ZeRO-3's gradient relay, ``generate`` under FSDP2;
- :mod:`agl_trl.parallel.ranks`: torch.distributed ranks (which process writes files, collective counts).

Supported: DDP and ZeRO-1/2 (full parameters on every rank), FSDP2 and ZeRO-3 (docs/distributed.md).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

FSDP1_MESSAGE = (
    "AGL does not support FSDP1 (FullyShardedDataParallel): its parameters can only be gathered outside forward "
    "and backward (summon_full_params), which gives the regulariser no gradient. Use FSDP2: `fsdp_version: 2` in "
    "the accelerate config (`--accelerate_config fsdp2`), in `fsdp_config` of the training arguments, or in the "
    "Axolotl config. See docs/distributed.md."
)
FSDP_OFFLOAD_MESSAGE = (
    "AGL does not support FSDP2 with parameter CPU offload (`fsdp_offload_params: true` in the accelerate config, "
    "`fsdp_config.offload_params: true` in Axolotl): the regulariser gathers the LoRA factors on the accelerator. "
    "Turn the offload off (FSDP2 + QLoRA keeps a 70B model's shards within 8 GPUs), or use DeepSpeed ZeRO-3 "
    "(`deepspeed: zero3.json` in Axolotl). See docs/distributed.md."
)
FORWARD_PENALTY_MESSAGE = (
    "The peer penalty {name} runs forwards of its own through the model inside the training step, which FSDP2 and "
    "DeepSpeed ZeRO-3 do not support there (FSDP2 keeps the last forward's parameters for its backward; ZeRO-3 with "
    "TRL's gradient checkpointing would reduce a LoRA gradient twice): train it with DDP or ZeRO-1/2. The penalties "
    "on the LoRA factors (EWC, L2-SP, AsFT, Lisa with `align_steps=0`) and AGL run under both (docs/distributed.md)."
)


def _fsdp_plugin(trainer: Any) -> Any:
    state = getattr(getattr(trainer, "accelerator", None), "state", None)
    return getattr(state, "fsdp_plugin", None)


def _runs_forward(penalty: Any) -> bool:
    """Whether a peer penalty runs forwards of its own through the model (its ``runs_forward``; default False)."""
    return bool(getattr(penalty, "runs_forward", False))


def check_parallelism(trainer: Any, penalty: Any = None) -> None:
    """Refuse the parallel set-ups the regulariser (or the peer ``penalty``) cannot run under; log the engine.

    Supported: DDP and ZeRO-1/2 (full parameters on every rank), FSDP2 (``fully_shard``: the factors are DTensor
    shards, all-gathered differentiably) and DeepSpeed ZeRO-3 (gathered for reading, gradients added inside each
    parameter's backward); see docs/distributed.md. Refused: FSDP1, whose ``summon_full_params`` cannot run inside
    forward/backward, FSDP2 with parameter CPU offload, and under FSDP2 or ZeRO-3 a peer penalty that runs forwards
    of its own in the training step (``penalty.runs_forward``).
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        plugin = _fsdp_plugin(trainer)
        version = int(getattr(plugin, "fsdp_version", 1) or 1)
        if version < 2:
            raise NotImplementedError(FSDP1_MESSAGE)
        offload = getattr(plugin, "cpu_offload", None)
        if offload is True or getattr(offload, "offload_params", False) or type(offload).__name__ == "CPUOffloadPolicy":
            raise NotImplementedError(FSDP_OFFLOAD_MESSAGE)
        if _runs_forward(penalty):
            raise NotImplementedError(FORWARD_PENALTY_MESSAGE.format(name=type(penalty).__name__))
        logger.info("AGL: FSDP2 (the LoRA factors are all-gathered for the regulariser, one collective per group)")
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "deepspeed_plugin", None)
        if getattr(plugin, "zero_stage", None) == 3:
            if _runs_forward(penalty):
                raise NotImplementedError(FORWARD_PENALTY_MESSAGE.format(name=type(penalty).__name__))
            logger.info("AGL: DeepSpeed ZeRO-3 (the LoRA factors are gathered for the regulariser each step)")


__all__ = ["FORWARD_PENALTY_MESSAGE", "FSDP1_MESSAGE", "FSDP_OFFLOAD_MESSAGE", "check_parallelism"]
