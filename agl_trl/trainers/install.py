"""Installing AGL (or a peer penalty) on a trainer: one path for both.

:func:`attach_agl` / :func:`attach_penalty` configure a trainer whose class has
:class:`~agl_trl.trainers.mixin.AGLLossMixin` first in its MRO; :func:`enable_agl` / :func:`enable_penalty` first turn
any trainer object into one (what the Axolotl plugin does). Either way :func:`install` checks the set-up (LoRA layers
present, no FSDP1), stores the :class:`~agl_trl.trainers.runtime.AGLRuntime` as ``trainer._agl`` and
registers :class:`AGLCallback`, which initialises it at train start and saves ``agl_state.json`` with every checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from agl_trl.config import AGLArgs
from agl_trl.settings import AGLTrainingSettings, AGLUserError
from agl_trl.trainers.mixin import AGLLossMixin
from agl_trl.trainers.runtime import AGLRuntime, is_main_process, unwrapped_model
from agl_trl.trainers.state import save_agl_state

logger = logging.getLogger(__name__)

FSDP1_MESSAGE = (
    "AGL does not support FSDP1 (FullyShardedDataParallel): its parameters can only be gathered outside forward "
    "and backward (summon_full_params), which gives the regulariser no gradient. Use FSDP2: `fsdp_version: 2` in "
    "the accelerate config (`--accelerate_config fsdp2`), in `fsdp_config` of the training arguments, or in the "
    "Axolotl config. See docs/distributed.md."
)
FSDP_OFFLOAD_MESSAGE = (
    "AGL does not support FSDP2 with parameter CPU offload (`fsdp_offload_params: true`): the regulariser gathers "
    "the LoRA factors on the accelerator. Turn the offload off (QLoRA keeps a 70B model's shards within 8 GPUs), or "
    "use DeepSpeed ZeRO-3. See docs/distributed.md."
)


def _fsdp_plugin(trainer: Any) -> Any:
    state = getattr(getattr(trainer, "accelerator", None), "state", None)
    return getattr(state, "fsdp_plugin", None)


PENALTY_SHARDED_MESSAGE = (
    "Peer penalties (agl_trl.baselines, attach_penalty) read the LoRA factors directly, which FSDP2 and ZeRO-3 shard "
    "(under ZeRO-3 they are empty there, so a penalty would silently be 0): run them with DDP or ZeRO-1/2. The AGL "
    "regulariser itself runs under both (docs/distributed.md)."
)


def check_parallelism(trainer: Any, penalty: bool = False) -> None:
    """Refuse the parallel set-ups the regulariser cannot run under; log the sharded engine otherwise.

    Supported: DDP and ZeRO-1/2 (full parameters on every rank), FSDP2 (``fully_shard``: the factors are DTensor
    shards, all-gathered differentiably) and DeepSpeed ZeRO-3 (gathered for reading, gradients added inside each
    parameter's backward); see docs/distributed.md. Refused: FSDP1, whose ``summon_full_params`` cannot run inside
    forward/backward, FSDP2 with parameter CPU offload, and a custom ``penalty`` under FSDP2 or ZeRO-3.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        plugin = _fsdp_plugin(trainer)
        version = int(getattr(plugin, "fsdp_version", 1) or 1)
        if version < 2:
            raise NotImplementedError(FSDP1_MESSAGE)
        offload = getattr(plugin, "cpu_offload", None)
        if offload is True or getattr(offload, "offload_params", False) or type(offload).__name__ == "CPUOffloadPolicy":
            raise NotImplementedError(FSDP_OFFLOAD_MESSAGE)
        if penalty:
            raise NotImplementedError(PENALTY_SHARDED_MESSAGE)
        logger.info("AGL: FSDP2 (the LoRA factors are all-gathered for the regulariser, one collective per group)")
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "deepspeed_plugin", None)
        if getattr(plugin, "zero_stage", None) == 3:
            if penalty:
                raise NotImplementedError(PENALTY_SHARDED_MESSAGE)
            logger.info("AGL: DeepSpeed ZeRO-3 (the LoRA factors are gathered for the regulariser each step)")


class AGLCallback(TrainerCallback):
    """Initialises AGL at ``on_train_begin``, takes the KL meter's readings at ``on_step_end`` (every
    ``agl_kl_every`` optimizer steps) and saves ``agl_state.json`` into every checkpoint."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        initialise_agl(self.trainer)

    def on_step_end(self, args, state, control, **kwargs):
        rt = getattr(self.trainer, "_agl", None)
        if rt is not None and rt.enabled and rt.regularizer is not None:
            rt.measure(self.trainer, int(state.global_step))  # after the optimizer step: the update just taken

    def on_save(self, args, state, control, **kwargs):
        if not is_main_process(self.trainer):
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            save_agl_state(self.trainer, checkpoint)


def initialise_agl(trainer: Any) -> AGLRuntime | None:
    """Obtain the artifact, build the regulariser and restore its state (once; see ``AGLRuntime.initialise``)."""
    rt: AGLRuntime | None = getattr(trainer, "_agl", None)
    return rt.initialise(trainer) if rt is not None else None


def warn_if_slow_bf16(args: Any) -> None:
    """One warning when a trainer built elsewhere (Axolotl, a user's script) trains in bf16 on a CPU without fast
    bf16 (:func:`agl_trl.precision.resolve_bf16`; AGL's own configs resolve an unset ``bf16`` themselves)."""
    import torch

    from agl_trl.precision import resolve_bf16

    if getattr(args, "bf16", False) is True:
        resolve_bf16(True, on_cpu=bool(getattr(args, "use_cpu", False)) or not torch.cuda.is_available())


def install(trainer: Any, runtime: AGLRuntime) -> AGLRuntime:
    """Check the set-up, store ``runtime`` as ``trainer._agl`` and register :class:`AGLCallback` (once)."""
    from agl_trl.lora import find_lora_modules, no_lora_message

    if not isinstance(trainer, AGLLossMixin):
        raise TypeError(
            f"AGL needs a trainer with AGLLossMixin in its MRO, got {type(trainer).__name__}. Use an AGL trainer "
            "class (AGLSFTTrainer, ...) or `agl_trl.trainers.enable_agl(trainer, cfg)` / `enable_penalty`."
        )
    trainer._agl = runtime
    warn_if_slow_bf16(getattr(trainer, "args", None))
    if not runtime.enabled:
        return runtime
    check_parallelism(trainer, penalty=runtime.regularizer is not None)  # a ready-made regulariser: a peer penalty
    if not find_lora_modules(unwrapped_model(trainer)):
        raise AGLUserError(no_lora_message(unwrapped_model(trainer)))
    if not any(isinstance(cb, AGLCallback) for cb in trainer.callback_handler.callbacks):
        trainer.add_callback(AGLCallback(trainer))
    return runtime


def settings_of(source: Any) -> AGLTrainingSettings:
    """The validated settings of ``source``: settings objects, an AGL config, an Axolotl cfg or a dict."""
    if isinstance(source, AGLTrainingSettings):
        return source
    if isinstance(source, AGLArgs):  # an AGL config: every key is a field, and None is a value (no probe)
        return AGLTrainingSettings.from_prefixed(source, none_is_default=False)
    if not isinstance(source, dict) and not hasattr(source, "agl_enabled"):
        logger.warning(
            "AGL: %s has no agl_* fields; using the defaults. Use an AGL config (e.g. AGLSFTConfig) to set them.",
            type(source).__name__,
        )
    return AGLTrainingSettings.from_prefixed(source, none_is_default=True)


def attach_agl(trainer: Any, settings_source: Any = None) -> AGLRuntime:
    """Configure AGL on a constructed trainer whose class has :class:`AGLLossMixin` first in its MRO.

    ``settings_source``: :class:`~agl_trl.settings.AGLTrainingSettings`, or anything with ``agl_*`` attributes or
    keys (an AGL config, an Axolotl cfg, a dict); defaults to ``trainer.args``. Missing fields take their defaults.
    Cheap: the Fisher is obtained when training starts.
    """
    return install(
        trainer, AGLRuntime(config=settings_of(trainer.args if settings_source is None else settings_source))
    )


def attach_penalty(trainer: Any, penalty: Any) -> AGLRuntime:
    """Install ``penalty`` (``penalty(model, step) -> (fp32 scalar loss, metrics)``) as the trainer's regulariser.

    The penalty replaces the AGL regulariser (no Fisher artifact is obtained) and goes through the same
    ``compute_loss`` path: added in training mode only, evaluated in fp32 outside autocast, scaled by the
    gradient-accumulation rule, metrics logged as ``agl/<name>``; ``state_dict``/``load_state_dict`` are used when
    the penalty has them.
    """
    if not callable(penalty):
        raise TypeError(f"penalty must be callable as penalty(model, step) -> (loss, metrics), got {penalty!r}")
    return install(trainer, AGLRuntime(config=AGLTrainingSettings(enabled=True), regularizer=penalty))


def as_agl_trainer(trainer: Any) -> Any:
    """Turn ``trainer`` into an instance of ``AGL<Name>(AGLLossMixin, type(trainer))`` in place (keeps every other
    override of its class)."""
    base = type(trainer)
    if not isinstance(trainer, AGLLossMixin):
        trainer.__class__ = type(f"AGL{base.__name__}", (AGLLossMixin, base), {"__module__": base.__module__})
    return trainer


def enable_agl(trainer: Any, settings_source: Any = None) -> Any:
    """Turn an existing trainer object into an AGL trainer in place and attach AGL (used by the Axolotl plugin)."""
    attach_agl(as_agl_trainer(trainer), settings_source)
    return trainer


def enable_penalty(trainer: Any, penalty: Any) -> Any:
    """Like :func:`enable_agl`, with a custom penalty instead of the AGL regulariser (see :func:`attach_penalty`)."""
    attach_penalty(as_agl_trainer(trainer), penalty)
    return trainer


__all__ = [
    "AGLCallback",
    "FSDP1_MESSAGE",
    "FSDP_OFFLOAD_MESSAGE",
    "PENALTY_SHARDED_MESSAGE",
    "as_agl_trainer",
    "attach_agl",
    "attach_penalty",
    "check_parallelism",
    "enable_agl",
    "enable_penalty",
    "initialise_agl",
    "install",
    "settings_of",
]
