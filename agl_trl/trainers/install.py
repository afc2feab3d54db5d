"""Installing AGL (or a peer penalty) on a trainer: one path for both.

:func:`attach_agl` / :func:`attach_penalty` configure a trainer whose class has
:class:`~agl_trl.trainers.mixin.AGLLossMixin` first in its MRO; :func:`enable_agl` / :func:`enable_penalty` first turn
any trainer object into one (what the Axolotl plugin does). Either way :func:`install` checks the set-up (LoRA layers
present, no FSDP1), stores the :class:`~agl_trl.trainers.runtime.AGLRuntime` as ``trainer._agl`` and
registers :class:`AGLCallback`, which initialises it at train start and saves ``agl_state.json`` with every checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from agl_trl.config import AGLArgs
from agl_trl.logs import say, show_info_lines
from agl_trl.parallel import check_parallelism
from agl_trl.parallel.ranks import is_main_process
from agl_trl.settings import AGLTrainingSettings, AGLUserError
from agl_trl.trainers.mixin import AGLLossMixin
from agl_trl.trainers.runtime import AGLRuntime, unwrapped_model
from agl_trl.trainers.state import save_agl_state

logger = logging.getLogger(__name__)


SUMMARY_FILE = "agl_summary.json"
"""The end-of-run summary AGL writes into ``output_dir`` (also said in one log line)."""


class AGLCallback(TrainerCallback):
    """Initialises AGL at ``on_train_begin`` (before the trainer's own callbacks, so its start-up comes before the
    step bar), takes the KL meter's readings at ``on_step_end`` (every ``agl_kl_every`` optimizer steps and at the
    last step), saves ``agl_state.json`` into every checkpoint and, at ``on_train_end``, writes the end-of-run
    summary."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        initialise_agl(self.trainer)

    def on_step_end(self, args, state, control, **kwargs):
        step = int(state.global_step)
        self._read(final=bool(state.max_steps) and step >= state.max_steps)

    def _read(self, final: bool) -> None:
        """A meter reading (after the optimizer step: the update just taken), into the metrics the next log shows."""
        rt = getattr(self.trainer, "_agl", None)
        if rt is not None and rt.enabled and rt.meter is not None:
            model, step = unwrapped_model(self.trainer), int(self.trainer.state.global_step)
            for key, value in rt.meter.read(model, step, rt.regularizer.raw_kl_estimate, final=final).items():
                rt.metrics[key].append(float(value))

    def on_save(self, args, state, control, **kwargs):
        if not is_main_process(self.trainer):
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            save_agl_state(self.trainer, checkpoint)

    def on_train_end(self, args, state, control, **kwargs):
        rt = getattr(self.trainer, "_agl", None)
        if rt is None or not rt.enabled or rt.meter is None:
            return
        self._read(final=True)  # a run stopped early (another callback): its last step's reading
        if is_main_process(self.trainer):
            write_summary(rt.summary(self.trainer), Path(args.output_dir))


def write_summary(summary: dict[str, Any], output_dir: Path) -> Path:
    """Say the end-of-run summary in one log line and write it to ``<output_dir>/agl_summary.json`` (atomically)."""
    kl, budget = summary.get("kl_measured"), summary.get("kl_budget")
    drift = (
        "no KL reading"
        if kl is None
        else f"measured KL {kl:.4g} nats/token at step {summary.get('step')} vs budget {budget:.4g} "
        f"({100 * kl / budget:.0f}%)"
    )
    ratio = summary.get("kl_ratio")
    artifact = summary.get("artifact") or {}
    path = output_dir / SUMMARY_FILE
    say(
        "AGL summary: %s; lambda_align %.4g (%s); estimate ratio %s; KL readings: %d; Fisher artifact %s (%s); "
        "written to %s",
        drift,
        summary.get("lambda_align"),
        "adaptive" if summary.get("lambda_adaptive") else "fixed",
        "n/a" if ratio is None else f"{ratio:.3g}",
        summary.get("readings") or 0,
        artifact.get("directory") or "(not saved)",
        artifact.get("source"),
        path,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


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
    from agl_trl.lora import find_lora_modules, no_lora_message, trainable_outside_lora

    if not isinstance(trainer, AGLLossMixin):
        raise TypeError(
            f"AGL needs a trainer with AGLLossMixin in its MRO, got {type(trainer).__name__}. Use an AGL trainer "
            "class (AGLSFTTrainer, ...) or `agl_trl.trainers.enable_agl(trainer, cfg)` / `enable_penalty`."
        )
    trainer._agl = runtime
    warn_if_slow_bf16(getattr(trainer, "args", None))
    if not runtime.enabled:
        return runtime
    show_info_lines()
    check_parallelism(trainer, penalty=runtime.regularizer)  # a ready-made regulariser: a peer penalty
    if not find_lora_modules(unwrapped_model(trainer)):
        raise AGLUserError(no_lora_message(unwrapped_model(trainer)))
    outside = trainable_outside_lora(unwrapped_model(trainer))
    if outside and runtime.regularizer is None:  # AGL's own regulariser (a peer penalty says what it covers itself)
        logger.warning(
            "AGL: %d trainable parameter tensor(s) outside the LoRA factors (%s): the K-FAC penalty covers the LoRA "
            "update only, so it does not regularise them; the KL meter and the anchor steps still measure their effect "
            "on the outputs. Freeze them (e.g. drop `modules_to_save` / `lora_modules_to_save`) to keep the whole "
            "update under the penalty.",
            len(outside),
            ", ".join(outside[:4]) + (", ..." if len(outside) > 4 else ""),
        )
    if not any(isinstance(cb, AGLCallback) for cb in trainer.callback_handler.callbacks):
        # first: AGL's start-up (and its progress) comes before the trainer's step bar appears
        trainer.callback_handler.callbacks.insert(0, AGLCallback(trainer))
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
    "SUMMARY_FILE",
    "AGLCallback",
    "as_agl_trainer",
    "attach_agl",
    "attach_penalty",
    "enable_agl",
    "enable_penalty",
    "initialise_agl",
    "install",
    "settings_of",
    "write_summary",
]
