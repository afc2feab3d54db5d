"""The drift budget: set lambda_align from the KL meter's readings of how far the tuned model has moved.

The drift meter (:class:`~agl_trl.regularizers.meter.DriftMeter`) measures KL(p_aligned || p_tuned) per response
token on held-out probe sequences, teacher-forced, with the LoRA adapters off (the aligned model) and on (the tuned
one): two forwards, no backward (:func:`agl_trl.teacher_forcing.probe_kl`). :class:`DriftBudget` turns its readings
into the alignment weight:

* **calibration.** The first reading with a measurable KL fixes ``calibration`` = measured / estimated, the factor
  that puts the regulariser's second-order estimate 0.5 vec(dW)^T F vec(dW) into measured nats for the directions
  this run actually takes (K-FAC drops cross-position and cross-module terms; docs/method.md, Units). It is measured
  once and frozen, so later readings' ratio (``kl_ratio``) is an honest check of the estimate, not a fit.
* **dual ascent.** With no fixed ``lambda_align``, lambda is the multiplier of the constraint KL <= budget, updated
  in log space at each reading: ``lambda <- lambda * (kl / budget) ** rate``, the step clipped to [1/2, 4] (fast up,
  slow down) and lambda to [max(LAMBDA_MIN, floor), LAMBDA_MAX] (``agl_lambda_floor``: when the anchor steps hold
  the meter under budget, the K-FAC penalty keeps at least that weight); ``kl`` is the mean of the last two readings (two different
  mini-batches), which halves the meter's noise without lagging much.

The meter's KL anchor steps (``agl_kl_anchor_every``: every 10th step unless set) add this weight x
:func:`agl_trl.teacher_forcing.anchor_kl`, the same KL with its gradient, on the Fisher's own probe sequences (never
the meter's): the function-space term for the KL that the K-FAC penalty cannot see (docs/method.md, "KL anchor
steps").

Pure Python state (JSON-serialisable, checkpointed with the regulariser that reads the weight); every rank measures
the same sequences, so every rank computes the same lambda without a collective.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from agl_trl.settings import AGLSettings

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
    floor: float = 0.0  # agl_lambda_floor: the adaptive lambda never goes below it
    lam: float = LAMBDA_INIT
    calibration: float | None = None
    readings: list[float] = field(default_factory=list)  # measured KL, one per reading
    ratios: list[float] = field(default_factory=list)  # measured / calibrated estimate, one per reading

    @classmethod
    def from_settings(cls, settings: AGLSettings) -> DriftBudget:
        """The budget of ``settings``: ``agl_kl_budget``, ``agl_lambda_floor``, and ``agl_lambda_align`` when fixed."""
        budget = cls(budget=settings.kl_budget, fixed_lambda=settings.lambda_align, floor=settings.floor)
        budget.lam = max(budget.lam, budget.floor)
        return budget

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
            lowest = max(LAMBDA_MIN, self.floor)
            self.lam = min(LAMBDA_MAX, max(lowest, self.lam * min(STEP_UP, max(STEP_DOWN, step))))
        return {"kl_measured": float(measured), "kl_ratio": float(ratio), "lambda": float(self.weight)}

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("lam", "calibration", "readings", "ratios"):
            if name in state:
                setattr(self, name, state[name])


__all__ = ["LAMBDA_INIT", "DriftBudget"]
