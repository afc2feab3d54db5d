"""``AGLRuntime``: the per-trainer AGL state (``trainer._agl``) and its lazy initialisation at train start.

Nothing expensive happens when AGL is attached. At ``on_train_begin`` (or, failing that, the first training
``compute_loss``, always *before* the forward so DDP is not disturbed) :meth:`AGLRuntime.initialise` obtains the
Fisher artifact through :func:`agl_trl.fisher.resolve_artifact` (every rank takes part; the estimator shards and
all-reduces), builds the regulariser, and restores its state from the checkpoint being resumed. Under FSDP2 and
ZeRO-3 every rank runs the same forwards (the estimator's passes, the drift meter's readings), as their parameter
gathers are collective. The drift meter (:class:`~agl_trl.regularizers.meter.DriftMeter`) is built with the
regulariser, which reads its weight from the meter's budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agl_trl.logs import say
from agl_trl.parallel.ranks import is_main_process
from agl_trl.settings import AGLSettings, AGLTrainingSettings, AGLUserError, FisherSettings
from agl_trl.trainers.state import checkpoint_state

if TYPE_CHECKING:
    from agl_trl.regularizers.meter import DriftMeter

logger = logging.getLogger(__name__)


def unwrapped_model(trainer: Any) -> torch.nn.Module:
    """The trainer's model without its accelerate/DDP wrapper."""
    model = trainer.model
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None:
        with contextlib.suppress(Exception):
            model = accelerator.unwrap_model(model)
    return model


def tokenizer_of(trainer: Any) -> Any:
    """The trainer's tokenizer (the processor's tokenizer for multimodal processors), or ``None``."""
    processor = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    return None if processor is None else getattr(processor, "tokenizer", None) or processor


@dataclass
class AGLRuntime:
    """Per-trainer AGL state, stored as ``trainer._agl``.

    ``regularizer`` is any ``penalty(model, step) -> (loss, metrics)``: the AGL regulariser (built by
    :meth:`initialise`) or a peer penalty installed ready-made (:func:`agl_trl.trainers.attach_penalty`).
    """

    config: AGLTrainingSettings
    regularizer: Any = None
    artifact: Any = None
    fisher_dir: str | None = None  # where the artifact in use lives on disk (None: not saved)
    fisher_source: str | None = None  # "path" | "checkpoint" | "output_dir" | "estimated"
    resume_dir: str | None = None  # checkpoint given to train(), resolved
    restore_pending: bool = True
    restored_from: str | None = None
    metrics: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    meter: DriftMeter | None = None  # the AGL regulariser's drift meter (none for a peer penalty): at train start

    @property
    def enabled(self) -> bool:
        return bool(self.config.enabled)

    @property
    def settings(self) -> AGLSettings:
        return self.config.regularizer

    @property
    def fisher_settings(self) -> FisherSettings:
        return self.config.fisher

    def initialise(self, trainer: Any) -> AGLRuntime:
        """Build the regulariser (once) and restore its state when resuming. Safe to call repeatedly."""
        if not self.enabled:
            return self
        if self.regularizer is None:
            self._build_regularizer(trainer)
        if self.restore_pending:
            self.restore_pending = False
            self._restore(trainer)
        return self

    def _build_regularizer(self, trainer: Any) -> None:
        from agl_trl.fisher import FISHER_SUBDIR, resolve_artifact
        from agl_trl.fisher.resolve import StartupPlan
        from agl_trl.lora import find_lora_modules, lora_factors, no_lora_message
        from agl_trl.parallel.sharding import sharding_engine
        from agl_trl.regularizers import AGLRegularizer
        from agl_trl.regularizers.meter import DriftMeter

        model = unwrapped_model(trainer)
        if not find_lora_modules(model):
            raise AGLUserError(no_lora_message(model))
        zero3 = sharding_engine(lora_factors(model)) == "zero3"
        meter = DriftMeter(self.settings, self.config.artifact, self.fisher_settings)
        meter.start(zero3)  # a refused anchor interval: before the artifact
        source = self.config.artifact
        probe_records = meter.select()  # answered with the Fisher's, in one pass
        plan = StartupPlan([f"probe {source.probe_dataset!r}" if source.probe_dataset else "no probe data"])
        plan.add(meter.describe())
        candidates: list[tuple[str, str]] = []
        _, state = checkpoint_state(trainer, self.resume_dir)
        if (state or {}).get("fisher_dir"):
            candidates.append((state["fisher_dir"], "checkpoint"))
        output_fisher = Path(trainer.args.output_dir) / FISHER_SUBDIR
        candidates.append((str(output_fisher), "output_dir"))
        resolved = resolve_artifact(
            model,
            tokenizer_of(trainer),
            self.fisher_settings,
            fisher_path=source.fisher_path,
            probe=source.probe_dataset,
            probe_split=source.probe_split,
            candidates=candidates,
            save_to=output_fisher if source.save_fisher else None,
            is_main=is_main_process(trainer),
            also_answer=probe_records,
            plan=plan,
        )
        self.artifact, self.fisher_dir, self.fisher_source = resolved.artifact, resolved.directory, resolved.source
        self.regularizer = AGLRegularizer(self.artifact, self.settings, budget=meter.budget)  # its weight
        if zero3:  # bind now, so its forward hooks see the first step's forward
            self.regularizer.bind(model)
        meter.build(model, tokenizer_of(trainer), resolved.answers)
        self.meter = meter

    def _restore(self, trainer: Any) -> None:
        checkpoint, state = checkpoint_state(trainer, self.resume_dir)
        if state is not None and hasattr(self.regularizer, "load_state_dict"):
            self.regularizer.load_state_dict(state["regularizer"])
            self.restored_from = checkpoint
            if is_main_process(trainer):
                say("AGL: resumed from %s: %s", checkpoint, self.restored_summary(state))
        elif checkpoint is not None and int(getattr(trainer.state, "global_step", 0) or 0) > 0:
            logger.warning(
                "AGL: resuming from %s, which has no agl_state.json (saved without AGL?): the regulariser starts "
                "fresh.",
                checkpoint,
            )

    def restored_summary(self, state: dict[str, Any]) -> str:
        """What a resumed run restored: the regulariser's state at the checkpoint's step and the artifact in use."""
        parts = [f"the regulariser state of step {state.get('global_step')}"]
        if self.meter is not None:
            budget = self.meter.budget
            calibration = "none yet" if budget.calibration is None else f"{budget.calibration:.3g}"
            parts.append(
                f"lambda_align {budget.weight:.4g}, {len(budget.readings)} KL readings, calibration {calibration}"
            )
        parts.append(f"the Fisher artifact {self.fisher_dir or '(not saved)'} ({self.fisher_source})")
        return "; ".join(parts)

    def summary(self, trainer: Any) -> dict[str, Any]:
        """The end-of-run summary: the drift at the last reading vs the budget, the weight, the artifact used."""
        out: dict[str, Any] = {"global_step": int(getattr(trainer.state, "global_step", 0) or 0)}
        if self.meter is not None:
            out.update(self.meter.summary())
        metadata = getattr(self.artifact, "metadata", None) or {}
        out["artifact"] = {
            "directory": os.path.abspath(self.fisher_dir) if self.fisher_dir else None,
            "source": self.fisher_source,
            "estimator": metadata.get("estimator"),
            "probe_records": metadata.get("probe_records"),
        }
        out["resumed_from"] = self.restored_from
        return out

    def resolve_resume(self, trainer: Any, resume_from_checkpoint: str | bool | None) -> None:
        """Remember which checkpoint ``train(resume_from_checkpoint=...)`` resumes from (``True``: the last one)."""
        self.restore_pending = True
        resolved = resume_from_checkpoint
        if isinstance(resolved, bool):
            resolved = None
            if resume_from_checkpoint and os.path.isdir(trainer.args.output_dir):
                from transformers.trainer_utils import get_last_checkpoint

                resolved = get_last_checkpoint(trainer.args.output_dir)
        self.resume_dir = str(resolved) if resolved else None


__all__ = ["AGLRuntime", "tokenizer_of", "unwrapped_model"]
