"""``AGLRuntime``: the per-trainer AGL state (``trainer._agl``) and its lazy initialisation at train start.

Nothing expensive happens when AGL is attached. At ``on_train_begin`` (or, failing that, the first training
``compute_loss``, always *before* the forward so DDP is not disturbed) :meth:`AGLRuntime.initialise` obtains the
Fisher artifact through :func:`agl_trl.fisher.resolve_artifact` (every rank takes part; the estimator shards and
all-reduces), builds the regulariser, and restores its state from the checkpoint being resumed. Under FSDP2 and
ZeRO-3 every rank runs the same forwards (the estimator's passes, the KL meter's readings), as their parameter
gathers are collective.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agl_trl.parallel.ranks import is_main_process
from agl_trl.settings import DEFAULT_KL_ANCHOR_EVERY, AGLSettings, AGLTrainingSettings, AGLUserError, FisherSettings
from agl_trl.trainers.state import checkpoint_state

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
    meter_batches: list[dict[str, torch.Tensor]] = field(default_factory=list)  # the KL meter's probe batches
    meter_reference: dict[int, torch.Tensor] = field(default_factory=dict)  # their aligned log-probs (CPU), by index
    anchor_batches: list[dict[str, torch.Tensor]] = field(default_factory=list)  # the KL anchor's probe batches
    anchored_step: int | None = None  # the optimizer step whose anchor term was last added (once per step)
    anchor_every: int = (
        0  # the KL anchor's interval in use (0: off), resolved from ``agl_kl_anchor_every`` at train start
    )

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
        from agl_trl.lora import find_lora_modules, lora_factors, no_lora_message
        from agl_trl.parallel.sharding import sharding_engine
        from agl_trl.regularizers import AGLRegularizer

        model = unwrapped_model(trainer)
        if not find_lora_modules(model):
            raise AGLUserError(no_lora_message(model))
        zero3 = sharding_engine(lora_factors(model)) == "zero3"
        self.anchor_every = self._anchor_interval(zero3)
        source = self.config.artifact
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
        )
        self.artifact, self.fisher_dir, self.fisher_source = resolved.artifact, resolved.directory, resolved.source
        self.regularizer = AGLRegularizer(self.artifact, self.settings)
        if zero3:  # bind now, so its forward hooks see the first step's forward
            self.regularizer.bind(model)
        self._build_meter(trainer, model)

    def _anchor_interval(self, zero3: bool) -> int:
        """``agl_kl_anchor_every`` resolved: a user's number as given (refused under ZeRO-3), unset the default
        interval, off under ZeRO-3 or without probe data (the records check is in :meth:`_build_meter`)."""
        every = self.settings.kl_anchor_every
        if every is not None:
            if every and zero3:
                raise AGLUserError(
                    f"`agl_kl_anchor_every`={every} is not supported under DeepSpeed ZeRO-3 yet: with the gradient "
                    "checkpointing TRL uses there, the anchor's second forward makes ZeRO-3 reduce a LoRA gradient "
                    "twice. Set `agl_kl_anchor_every: 0`, or train with DDP or FSDP2 (docs/distributed.md)."
                )
            return every
        if zero3:
            logger.warning(
                "AGL: KL anchor steps (on by default) are off under DeepSpeed ZeRO-3, which does not support them yet; "
                "the K-FAC penalty and the drift budget still apply (docs/distributed.md). Set "
                "`agl_kl_anchor_every: 0` to silence this."
            )
            return 0
        return 0 if self.config.artifact.probe_dataset is None else DEFAULT_KL_ANCHOR_EVERY

    def _build_meter(self, trainer: Any, model: torch.nn.Module) -> None:
        """The KL meter's held-out probe sequences: the last ``kl_sequences`` probe records after the ones the
        Fisher estimate reads (``agl_fisher_max_samples``); with ``agl_kl_anchor_every``, also the anchor's: the
        Fisher's records less the meter's (:func:`~agl_trl.fisher.probe.anchor_records`). Records with no response
        are answered by the aligned model (adapters off); the same batches on every rank."""
        from agl_trl.fisher.probe import anchor_records, load_probe_records, meter_records

        s, source = self.settings, self.config.artifact.probe_dataset
        if s.kl_every == 0 and self.anchor_every == 0:
            return
        if source is None:
            if s.adaptive or self.anchor_every:
                needs, fix = (
                    ("The adaptive lambda_align (the default)", "fix the weight with `agl_lambda_align`")
                    if s.adaptive
                    else ("`agl_kl_anchor_every`", "set `agl_kl_anchor_every` to 0")
                )
                raise AGLUserError(
                    f"{needs} measures the KL on probe sequences, but `agl_probe_dataset` is unset: set it (e.g. "
                    f"'driftcaps'), or {fix}."
                )
            logger.warning("AGL: no agl_probe_dataset, so the KL meter is off (kl_measured is not logged).")
            return
        records = load_probe_records(source, split=self.config.artifact.probe_split)
        used = self.fisher_settings.max_samples
        if s.kl_every:
            chosen, held_out = meter_records(records, used, s.kl_sequences)
            if held_out < s.kl_sequences:
                logger.warning(
                    "AGL: the probe data has %d records beyond the %d the Fisher reads (agl_fisher_max_samples); the "
                    "KL meter also uses records the Fisher saw.",
                    held_out,
                    used,
                )
            self.meter_batches = self._probe_batches(trainer, model, chosen, "KL meter")
        if self.anchor_every:
            chosen = anchor_records(records, used, s.kl_sequences if s.kl_every else 0)
            if not chosen and s.kl_anchor_every is None:  # the default: off, said once
                logger.warning(
                    "AGL: KL anchor steps (on by default) are off: the %d records of agl_probe_dataset=%r are all the "
                    "KL meter's (agl_kl_sequences=%d); give more probe records to use them.",
                    len(records),
                    source,
                    s.kl_sequences,
                )
                self.anchor_every = 0
                return
            if not chosen:
                raise AGLUserError(
                    f"`agl_kl_anchor_every`={self.anchor_every} needs probe records of its own, but the "
                    f"{len(records)} records of `agl_probe_dataset`={source!r} are all the KL meter's "
                    f"(`agl_kl_sequences`={s.kl_sequences}): give more probe records or lower `agl_kl_sequences`."
                )
            self.anchor_batches = self._probe_batches(trainer, model, chosen, "KL anchor")

    def _probe_batches(
        self, trainer: Any, model: torch.nn.Module, records: list[dict[str, Any]], user: str
    ) -> list[dict[str, torch.Tensor]]:
        """``records`` as teacher-forcing batches of ``agl_kl_batch_size`` (missing responses: the aligned model's)."""
        from agl_trl.fisher.probe import build_sequences, collate, fill_missing_responses
        from agl_trl.lora import adapters_disabled
        from agl_trl.parallel.sharding import enable_fsdp_generate

        s, tokenizer = self.settings, tokenizer_of(trainer)
        enable_fsdp_generate(model)  # FSDP2: generate() must run the root's all-gather
        with adapters_disabled(model):
            records = fill_missing_responses(
                model, tokenizer, records, self.fisher_settings.max_new_tokens, s.kl_batch_size, False
            )
        sequences = build_sequences(tokenizer, records, self.fisher_settings.max_length)
        if not sequences:
            raise AGLUserError(
                f"The {user}'s probe records from `agl_probe_dataset`={self.config.artifact.probe_dataset!r} have no "
                "response tokens within `agl_fisher_max_length`; give longer responses or a larger max length."
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        device = next(p for p in model.parameters()).device
        size = s.kl_batch_size
        return [collate(sequences[i : i + size], pad, device) for i in range(0, len(sequences), size)]

    def anchor(self, model: torch.nn.Module, step: int) -> tuple[torch.Tensor | None, dict[str, float]]:
        """A KL anchor step's term, ``lambda_align x KL(aligned || tuned)`` on the next anchor batch, at optimizer
        steps ``step > 0`` that are multiples of ``agl_kl_anchor_every``; once per step (the first micro-batch of
        an accumulation window: :func:`~agl_trl.trainers.mixin.scale_once_for_ga`). ``None`` on other calls."""
        from agl_trl.regularizers.budget import anchor_kl

        every = self.anchor_every
        if not self.anchor_batches or not every or step == 0 or step % every or step == self.anchored_step:
            return None, {}
        self.anchored_step = step
        batch = self.anchor_batches[(step // every - 1) % len(self.anchor_batches)]
        kl = anchor_kl(model, batch)
        return self.regularizer.budget.weight * kl, {"kl_anchor": float(kl.detach())}

    def measure(self, trainer: Any, step: int) -> None:
        """One KL meter reading, at optimizer step ``step`` when it is a multiple of ``agl_kl_every``: the measured
        probe KL goes to the regulariser (calibration, dual ascent) and its metrics to the training logs."""
        from agl_trl.regularizers.budget import probe_kl, reference_log_probs

        every = self.settings.kl_every
        if not self.meter_batches or every == 0 or step % every or not hasattr(self.regularizer, "observe_kl"):
            return
        index = (step // every - 1) % len(self.meter_batches)
        batch, model = self.meter_batches[index], unwrapped_model(trainer)
        if index not in self.meter_reference:  # the aligned model never changes: one adapter-off forward per batch
            self.meter_reference[index] = reference_log_probs(model, batch).cpu()
        reading = self.regularizer.observe_kl(probe_kl(model, batch, self.meter_reference[index]), model)
        for key, value in reading.items():
            self.metrics[key].append(float(value))

    def _restore(self, trainer: Any) -> None:
        checkpoint, state = checkpoint_state(trainer, self.resume_dir)
        if state is not None and hasattr(self.regularizer, "load_state_dict"):
            self.regularizer.load_state_dict(state["regularizer"])
            self.restored_from = checkpoint
            logger.info("AGL: restored the regulariser state from %s", checkpoint)
        elif checkpoint is not None and int(getattr(trainer.state, "global_step", 0) or 0) > 0:
            logger.warning(
                "AGL: resuming from %s, which has no agl_state.json (saved without AGL?): the regulariser starts "
                "fresh.",
                checkpoint,
            )

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
