"""The drift budget: measure how far the tuned model has moved from the aligned one, and set lambda_align from it.

The KL meter (:func:`probe_kl`) measures KL(p_aligned || p_tuned) per response token on held-out probe sequences,
teacher-forced, with the LoRA adapters off (the aligned model) and on (the tuned one): two forwards, no backward.
:class:`DriftBudget` turns its readings into the alignment weight:

* **calibration.** The first reading with a measurable KL fixes ``calibration`` = measured / estimated, the factor
  that puts the regulariser's second-order estimate 0.5 vec(dW)^T F vec(dW) into measured nats for the directions
  this run actually takes (K-FAC drops cross-position and cross-module terms; docs/method.md, Units). It is measured
  once and frozen, so later readings' ratio (``kl_ratio``) is an honest check of the estimate, not a fit.
* **dual ascent.** With no fixed ``lambda_align``, lambda is the multiplier of the constraint KL <= budget, updated
  in log space at each reading: ``lambda <- lambda * (kl / budget) ** rate``, the step clipped to [1/2, 4] (fast up,
  slow down) and lambda to [LAMBDA_MIN, LAMBDA_MAX]; ``kl`` is the mean of the last two readings (two different
  mini-batches), which halves the meter's noise without lagging much.

A KL anchor step (opt-in, ``agl_kl_anchor_every``) adds lambda x :func:`anchor_kl`, the same KL with its gradient,
on the Fisher's own probe sequences (never the meter's): the function-space term for the KL that the K-FAC penalty
cannot see (docs/method.md, "KL anchor steps").

Pure Python state (JSON-serialisable, checkpointed with the regulariser); every rank measures the same sequences,
so every rank computes the same lambda without a collective.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

LAMBDA_INIT = 1.0  # one nat of (calibrated) estimated KL costs as much as one nat of task loss
LAMBDA_MIN, LAMBDA_MAX = 1e-3, 1e6
STEP_DOWN, STEP_UP = 0.5, 4.0  # per-reading clip of the multiplicative update
MEASURABLE_KL = 1e-6  # a reading below this (nats per token) cannot calibrate the estimate


@dataclass
class DriftBudget:
    """The KL meter's state and the adaptive alignment weight (see the module docstring)."""

    budget: float
    fixed_lambda: float | None = None  # a user's agl_lambda_align: never adapted
    rate: float = 1.0
    lam: float = LAMBDA_INIT
    calibration: float | None = None
    readings: list[float] = field(default_factory=list)  # measured KL, one per reading
    ratios: list[float] = field(default_factory=list)  # measured / calibrated estimate, one per reading

    @property
    def weight(self) -> float:
        """The alignment weight in use: the fixed one, else the adapted lambda."""
        return self.fixed_lambda if self.fixed_lambda is not None else self.lam

    @property
    def scale(self) -> float:
        """Estimated nats -> measured nats (1 until the first measurable reading)."""
        return self.calibration if self.calibration is not None else 1.0

    def observe(self, measured: float, estimate: float) -> dict[str, float]:
        """Take one reading: ``measured`` probe KL (nats/token) and the raw estimate 0.5 vec(dW)^T F vec(dW) of the
        same update. Returns the metrics of the reading (``kl_measured``, ``kl_ratio``, ``lambda``)."""
        if not (math.isfinite(measured) and math.isfinite(estimate)):
            raise FloatingPointError(
                f"AGL KL meter: non-finite reading (measured {measured}, estimate {estimate}); the LoRA weights have "
                "diverged (check the learning rate) or the probe sequences are empty."
            )
        if self.calibration is None and measured > MEASURABLE_KL and estimate > 0:
            self.calibration = measured / estimate
        calibrated = self.scale * estimate
        ratio = measured / calibrated if calibrated > 0 else float("nan")
        self.readings.append(float(measured))
        self.ratios.append(float(ratio))
        if self.fixed_lambda is None:
            recent = sum(self.readings[-2:]) / len(self.readings[-2:])
            step = (max(recent, 1e-12) / self.budget) ** self.rate
            self.lam = min(LAMBDA_MAX, max(LAMBDA_MIN, self.lam * min(STEP_UP, max(STEP_DOWN, step))))
        return {"kl_measured": float(measured), "kl_ratio": float(ratio), "lambda": float(self.weight)}

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("lam", "calibration", "readings", "ratios"):
            if name in state:
                setattr(self, name, state[name])


def _predicting(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    from agl_trl.fisher.probe import predicting_positions

    predicts = predicting_positions(batch["response_mask"])
    if not bool(predicts.any()):
        raise ValueError("AGL KL meter: the probe batch has no response tokens; check the probe records.")
    return predicts


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the causal LM under ``model``'s PEFT wrapper takes ``logits_to_keep`` (the trainers pass the model
    unwrapped from accelerate; any other wrapper just gets the whole logits)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def _log_probs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], aligned: bool, grad: bool = False
) -> torch.Tensor:
    """Log-probabilities at ``batch``'s response positions, (n_tokens, vocab) fp32. ``grad=False`` (the meter): no
    graph, eval mode; ``grad=True`` (an anchor step, tuned model only): differentiable, in the model's own mode, so
    its dropout and gradient checkpointing apply as in the task's forward."""
    from agl_trl.lora import adapters_disabled

    predicts = _predicting(batch)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    keep = None
    if _accepts_logits_to_keep(model):  # project onto the vocabulary only where some sequence predicts a response
        keep = predicts.any(0).nonzero().squeeze(-1)
        inputs["logits_to_keep"] = keep
    grad = grad and not aligned
    was_training = model.training
    if not grad:
        model.eval()
    try:
        with torch.set_grad_enabled(grad):
            if aligned:
                with adapters_disabled(model):
                    logits = model(**inputs).logits
            else:
                logits = model(**inputs).logits
    finally:
        model.train(was_training)
    selected = logits[predicts] if keep is None else logits[predicts[:, keep]]
    return torch.log_softmax(selected.float(), dim=-1)


def reference_log_probs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The aligned model's (adapters off) log-probabilities at ``batch``'s response positions, (n_tokens, vocab)
    fp32: fixed for a run, so the meter computes them once per batch and keeps them (on CPU)."""
    return _log_probs(model, batch, aligned=True)


def probe_kl(model: torch.nn.Module, batch: dict[str, torch.Tensor], reference: torch.Tensor | None = None) -> float:
    """KL(p_aligned || p_tuned) per response token of a teacher-forced probe ``batch`` (``input_ids``,
    ``attention_mask``, ``response_mask``: :func:`agl_trl.fisher.probe.collate`), adapters off vs on.
    ``reference``: the batch's :func:`reference_log_probs`, when already computed (one forward instead of two)."""
    if reference is None:
        reference = reference_log_probs(model, batch)
    tuned = _log_probs(model, batch, aligned=False)
    reference = reference.to(tuned.device)
    return float((reference.exp() * (reference - tuned)).sum(-1).mean())


def anchor_kl(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`probe_kl` with its gradient: KL(p_aligned || p_tuned) per response token of ``batch``, a
    differentiable fp32 scalar (the aligned side has no graph). What a KL anchor step adds, times lambda_align."""
    reference = reference_log_probs(model, batch)  # no graph: the aligned side is a constant
    tuned = _log_probs(model, batch, aligned=False, grad=True)
    return (reference.exp() * (reference - tuned)).sum(-1).mean()


__all__ = ["LAMBDA_INIT", "DriftBudget", "anchor_kl", "probe_kl", "reference_log_probs"]
