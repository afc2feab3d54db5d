"""``AGLLossMixin``: add the AGL regulariser (or a peer penalty) to any TRL or Axolotl trainer's loss.

Usage: put the mixin first in the MRO and call :func:`agl_trl.trainers.attach_agl` at the end of ``__init__``::

    class AGLSFTTrainer(AGLLossMixin, SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            attach_agl(self, self.args)

or patch an existing trainer object with :func:`agl_trl.trainers.enable_agl` (what the Axolotl plugin does).

* ``compute_loss`` adds the regulariser in training mode only, in fp32 outside autocast, scaled so that one optimizer
  step gets its gradient exactly once whatever the gradient accumulation (:func:`scale_for_ga`); never multiplied by
  the number of processes. A KL anchor step's term (``agl_kl_anchor_every``) is added on the first micro-batch of its
  step only (:func:`scale_once_for_ga`).
* ``log`` adds the means of the regulariser's metrics since the last log as ``agl/<name>`` to training logs.
* ``train`` remembers the checkpoint being resumed, whose ``agl_state.json`` restores the regulariser's state.
"""

from __future__ import annotations

from typing import Any

import torch

from agl_trl.trainers.runtime import AGLRuntime, unwrapped_model

# ---------------------------------------------------------------------------------------------------------------------
# Gradient-accumulation rule
# ---------------------------------------------------------------------------------------------------------------------


def trainer_divides_loss_by_ga(trainer: Any, num_items_in_batch: Any) -> bool:
    """Whether ``Trainer.training_step`` will divide the returned loss by the number of accumulated micro-batches.

    Mirrors transformers' ``training_step``: ``loss_is_scaled_for_ga`` (transformers >= 5.19, set per TRL trainer)
    decides when set; otherwise the loss counts as already scaled when the model takes ``num_items_in_batch`` (token
    normalisation over the whole accumulation window) or a ``compute_loss_func`` is set.
    """
    flag = getattr(trainer, "loss_is_scaled_for_ga", None)
    if flag is not None:
        return not flag
    scaled = (bool(getattr(trainer, "model_accepts_loss_kwargs", False)) and num_items_in_batch is not None) or (
        getattr(trainer, "compute_loss_func", None) is not None
    )
    return not scaled


def scale_for_ga(trainer: Any, term: torch.Tensor, num_items_in_batch: Any) -> torch.Tensor:
    """Scale a per-micro-batch term so that its gradient reaches each optimizer step exactly once.

    The regulariser does not depend on the micro-batch, so each of the ``k`` micro-batches of a step adds it once:
    when the trainer divides the loss by ``k`` the sum of the ``k`` gradients is the term's gradient; otherwise
    (loss already normalised over the window) the term is divided by ``k`` here.
    """
    if trainer_divides_loss_by_ga(trainer, num_items_in_batch):
        return term
    steps = int(getattr(trainer, "current_gradient_accumulation_steps", 1) or 1)
    return term / steps if steps > 1 else term


def scale_once_for_ga(trainer: Any, term: torch.Tensor, num_items_in_batch: Any) -> torch.Tensor:
    """Scale a term added on *one* micro-batch of each optimizer step (a KL anchor step) so that its gradient
    reaches the step exactly once: times ``k`` when the trainer divides the loss by the ``k`` micro-batches."""
    if not trainer_divides_loss_by_ga(trainer, num_items_in_batch):
        return term
    steps = int(getattr(trainer, "current_gradient_accumulation_steps", 1) or 1)
    return term * steps if steps > 1 else term


# ---------------------------------------------------------------------------------------------------------------------
# The mixin
# ---------------------------------------------------------------------------------------------------------------------


class AGLLossMixin:
    """Adds the AGL regulariser to ``compute_loss`` and its metrics to ``log``. Put it first in the MRO."""

    _agl: AGLRuntime | None = None

    @property
    def agl_regularizer(self) -> Any:
        """The bound :class:`~agl_trl.regularizers.AGLRegularizer` (``None`` until training starts)."""
        return self._agl.regularizer if self._agl is not None else None

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        if self._agl is not None:
            self._agl.resolve_resume(self, resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        rt = self._agl
        active = rt is not None and rt.enabled and model.training
        anchor, anchor_metrics = None, {}
        if active:
            rt.initialise(self)  # before the forward: DDP must not see the estimator's backward mid-step
            # a KL anchor step's forward comes before the task's: FSDP2 keeps the last forward's parameters for
            # its backward
            if rt.meter is not None:
                anchor, anchor_metrics = rt.meter.anchor(unwrapped_model(self), int(self.state.global_step))
        out = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch, **kwargs
        )
        if not active:
            return out
        loss, outputs = (out[0], out[1]) if return_outputs else (out, None)
        with torch.autocast(device_type=loss.device.type, enabled=False):  # the regulariser is computed in fp32
            reg, metrics = rt.regularizer(unwrapped_model(self), step=int(self.state.global_step))
        reg = scale_for_ga(self, reg, num_items_in_batch)
        loss = loss + reg.to(device=loss.device, dtype=loss.dtype)
        if anchor is not None:  # a KL anchor step: a forward in the trainer's own precision, once per step
            loss = loss + scale_once_for_ga(self, anchor, num_items_in_batch).to(device=loss.device, dtype=loss.dtype)
            metrics = {**metrics, **anchor_metrics}
        for key, value in metrics.items():
            rt.metrics[key].append(float(value))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> Any:
        rt = self._agl
        if rt is not None and not any(key.startswith("eval_") for key in logs):  # the terms exist in training only
            for key, values in rt.metrics.items():
                if values:
                    logs[f"agl/{key}"] = sum(values) / len(values)
            rt.metrics.clear()
        return super().log(logs, *args, **kwargs)


__all__ = ["AGLLossMixin", "scale_for_ga", "scale_once_for_ga", "trainer_divides_loss_by_ga"]
