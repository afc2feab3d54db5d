"""The drift meter: how far training has moved the model from the aligned one, and what that costs the loss.

:class:`DriftMeter` owns the whole drift-budget loop of a training run:

* its **probe batches**: the meter's held-out probe sequences (the last ``agl_kl_sequences`` probe records after the
  ones the Fisher reads) and the KL anchor's (the Fisher's records less the meter's), records without a response
  answered by the aligned model; the same batches on every rank;
* the **reference**: the aligned model's log-probabilities on each meter batch, computed once (adapters off) and kept;
* the **schedule**: a reading every ``agl_kl_every`` optimizer steps, an anchor step every ``agl_kl_anchor_every``
  (resolved once by :func:`resolve_anchor_every`);
* the **reading**: KL(aligned || tuned) per response token (:func:`agl_trl.teacher_forcing.probe_kl`), fed to
* the **budget** (:class:`~agl_trl.regularizers.budget.DriftBudget`): calibration and the adaptive lambda_align,
  the weight the regulariser reads (it is built with the meter's budget) and the anchor term is scaled by;
* the **anchor term**: lambda_align x the same KL with its gradient on the next anchor batch
  (:func:`agl_trl.teacher_forcing.anchor_kl`), once per anchor step.

The trainer's callback asks for the readings after each optimizer step, its loss for the anchor term before the
task's forward; the budget's state is checkpointed with the regulariser that reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from agl_trl.regularizers.budget import DriftBudget
from agl_trl.settings import DEFAULT_KL_ANCHOR_EVERY, AGLSettings, AGLUserError, ArtifactSettings, FisherSettings

if TYPE_CHECKING:
    from agl_trl.fisher.answers import ProbeAnswers

logger = logging.getLogger(__name__)

METER_METRICS = ("kl_measured", "kl_ratio")  # logged at the meter's readings (every agl_kl_every steps)
# why the KL anchor steps are off where they were asked for (a set interval: refused; unset: off)
OFF_UNDER_ZERO3 = "zero3"
OFF_WITHOUT_PROBE = "no_probe"
OFF_WITHOUT_RECORDS = "no_records"


def resolve_anchor_every(
    requested: int | None, *, zero3: bool, has_probe: bool, own_records: int | None = None
) -> tuple[int, str | None]:
    """``agl_kl_anchor_every`` resolved: ``(interval, why_off)``, the interval in use (0: off) and, when the anchor
    steps were asked for (unset: the default interval) but cannot run, why: :data:`OFF_UNDER_ZERO3` (DeepSpeed
    ZeRO-3), :data:`OFF_WITHOUT_PROBE` (no ``agl_probe_dataset``) or :data:`OFF_WITHOUT_RECORDS` (``own_records``,
    the anchor's probe records, is 0; ``None``: not known yet). A set interval that cannot run is an error (the
    caller raises it with its context); unset, the default gives way (with a warning, except without probe data)."""
    if requested == 0:
        return 0, None
    if zero3:
        return 0, OFF_UNDER_ZERO3
    if not has_probe:
        return 0, OFF_WITHOUT_PROBE
    if own_records == 0:
        return 0, OFF_WITHOUT_RECORDS
    return (DEFAULT_KL_ANCHOR_EVERY if requested is None else requested), None


class DriftMeter:
    """The drift-budget loop of one training run (see the module docstring)."""

    def __init__(
        self,
        settings: AGLSettings,
        artifact: ArtifactSettings | None = None,
        fisher: FisherSettings | None = None,
    ):
        self.settings = settings
        self.artifact = artifact if artifact is not None else ArtifactSettings()
        self.fisher = fisher if fisher is not None else FisherSettings()
        self.budget = DriftBudget.from_settings(settings)
        self.zero3 = False
        self.anchor_every = 0  # the KL anchor's interval in use (0: off): resolve_anchor_every at train start
        self.meter_batches: list[dict[str, torch.Tensor]] = []
        self.reference: dict[int, torch.Tensor] = {}  # the meter batches' aligned log-probs (CPU), by index
        self.anchor_batches: list[dict[str, torch.Tensor]] = []
        self.meter_records: list[dict[str, Any]] = []  # chosen by select() at train start
        self.anchor_records: list[dict[str, Any]] = []
        self.last_read: int | None = None  # the optimizer step of the last reading
        self.anchored_step: int | None = None  # the optimizer step whose anchor term was last added (once per step)

    @property
    def weight(self) -> float:
        """lambda_align in use: the fixed one, else the budget's."""
        return self.budget.weight

    # ----------------------------------------------------------------------------------------------- set-up
    def start(self, zero3: bool) -> None:
        """At train start, before the Fisher artifact: the anchor interval, a set one refused under ZeRO-3 at once."""
        self.zero3 = zero3
        requested = self.settings.kl_anchor_every
        self.anchor_every, off = resolve_anchor_every(
            requested, zero3=zero3, has_probe=self.artifact.probe_dataset is not None
        )
        if off != OFF_UNDER_ZERO3:
            return
        if requested is not None:
            raise AGLUserError(
                f"`agl_kl_anchor_every`={requested} is not supported under DeepSpeed ZeRO-3 yet: with the gradient "
                "checkpointing TRL uses there, the anchor's second forward makes ZeRO-3 reduce a LoRA gradient "
                "twice. Set `agl_kl_anchor_every: 0`, or train with DDP or FSDP2 (docs/distributed.md)."
            )
        logger.warning(
            "AGL: KL anchor steps (on by default) are off under DeepSpeed ZeRO-3, which does not support them yet; "
            "the K-FAC penalty and the drift budget still apply (docs/distributed.md). Set "
            "`agl_kl_anchor_every: 0` to silence this."
        )

    def select(self) -> list[dict[str, Any]]:
        """At train start, before the artifact: choose the probe records of the meter (the last ``kl_sequences``
        after the ones the Fisher estimate reads, ``agl_fisher_max_samples``) and, with anchor steps, the anchor's
        (the Fisher's records less the meter's: :func:`~agl_trl.fisher.probe.anchor_records`). Returns them all, so
        that their prompts are answered in the same pass as the Fisher's."""
        from agl_trl.fisher.probe import anchor_records, load_probe_records, meter_records

        s, source, requested = self.settings, self.artifact.probe_dataset, self.settings.kl_anchor_every
        asked = bool(requested) and not self.zero3  # a set interval (under ZeRO-3 it was refused at start)
        if s.kl_every == 0 and self.anchor_every == 0 and not asked:
            return []
        if source is None:
            if s.adaptive or asked:
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
            return []
        records = load_probe_records(source, split=self.artifact.probe_split)
        used = self.fisher.max_samples
        if s.kl_every:
            self.meter_records, held_out = meter_records(records, used, s.kl_sequences)
            if held_out < s.kl_sequences:
                logger.warning(
                    "AGL: the probe data has %d records beyond the %d the Fisher reads (agl_fisher_max_samples); the "
                    "KL meter also uses records the Fisher saw.",
                    held_out,
                    used,
                )
        if self.anchor_every:
            chosen = anchor_records(records, used, s.kl_sequences if s.kl_every else 0)
            self.anchor_every, off = resolve_anchor_every(
                requested, zero3=False, has_probe=True, own_records=len(chosen)
            )
            if off == OFF_WITHOUT_RECORDS and requested is None:  # the default: off, said once
                logger.warning(
                    "AGL: KL anchor steps (on by default) are off: the %d records of agl_probe_dataset=%r are all the "
                    "KL meter's (agl_kl_sequences=%d); give more probe records to use them.",
                    len(records),
                    source,
                    s.kl_sequences,
                )
            elif off == OFF_WITHOUT_RECORDS:
                raise AGLUserError(
                    f"`agl_kl_anchor_every`={requested} needs probe records of its own, but the "
                    f"{len(records)} records of `agl_probe_dataset`={source!r} are all the KL meter's "
                    f"(`agl_kl_sequences`={s.kl_sequences}): give more probe records or lower `agl_kl_sequences`."
                )
            else:
                self.anchor_records = chosen
        return [*self.meter_records, *self.anchor_records]

    def describe(self) -> str:
        """The meter's part of the start-up plan: its probe sequences and schedule."""
        s, parts = self.settings, []
        if self.meter_records:
            parts.append(f"KL meter on {len(self.meter_records)} sequences every {s.kl_every} steps")
        if self.anchor_records:
            parts.append(f"KL anchor on {len(self.anchor_records)} sequences every {self.anchor_every} steps")
        return ", ".join(parts) or "no KL meter"

    def build(self, model: torch.nn.Module, tokenizer: Any, answers: ProbeAnswers | None = None) -> None:
        """The probe batches of the :meth:`select`-ed records, their missing responses taken from ``answers`` (the
        aligned model's, generated with the Fisher's; any still missing are generated here)."""
        if self.meter_records:
            self.meter_batches = self._probe_batches(model, tokenizer, self.meter_records, answers, "KL meter")
        if self.anchor_records:
            self.anchor_batches = self._probe_batches(
                model, tokenizer, self.anchor_records, answers, "KL anchor", self.settings.kl_anchor_tokens or None
            )

    def _probe_batches(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        records: list[dict[str, Any]],
        answers: ProbeAnswers | None,
        user: str,
        response_tokens: int | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """``records`` as teacher-forcing batches of ``agl_kl_batch_size`` (missing responses: the aligned model's),
        each sequence cut after ``response_tokens`` response tokens when given (``agl_kl_anchor_tokens``)."""
        from agl_trl.fisher.answers import ProbeAnswers
        from agl_trl.fisher.probe import build_sequences
        from agl_trl.lora import adapters_disabled
        from agl_trl.teacher_forcing import collate, first_response_tokens

        answers = answers if answers is not None else ProbeAnswers(self.fisher.max_new_tokens)
        if answers.missing(records):
            with adapters_disabled(model):
                answers.generate(model, tokenizer, records)
        sequences = build_sequences(tokenizer, answers.fill(records), self.fisher.max_length)
        if not sequences:
            raise AGLUserError(
                f"The {user}'s probe records from `agl_probe_dataset`={self.artifact.probe_dataset!r} have no "
                "response tokens within `agl_fisher_max_length`; give longer responses or a larger max length."
            )
        if response_tokens is not None:
            sequences = [first_response_tokens(seq, response_tokens) for seq in sequences]
        size = self.settings.kl_batch_size
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        device = next(p for p in model.parameters()).device
        return [collate(sequences[i : i + size], pad, device) for i in range(0, len(sequences), size)]

    # ----------------------------------------------------------------------------------------------- training
    def observe(self, measured: float, estimate: float) -> dict[str, float]:
        """Feed one reading (nats per probe response token) and the regulariser's raw estimate of the same update
        to the budget (calibration, dual ascent). Returns ``kl_measured`` and ``kl_ratio``."""
        reading = self.budget.observe(measured, estimate)
        return {k: reading[k] for k in METER_METRICS}

    def read(
        self,
        model: torch.nn.Module,
        step: int,
        estimate: Callable[[torch.nn.Module], float],
        final: bool = False,
    ) -> dict[str, float]:
        """One reading at optimizer step ``step`` when it is a multiple of ``agl_kl_every``, or the ``final`` step
        of training (so that every run ends with a reading, however short; else ``{}``; never twice at one step):
        the probe KL of the next meter batch, observed with ``estimate(model)`` (the regulariser's raw KL estimate)."""
        from agl_trl.teacher_forcing import probe_kl, reference_log_probs

        every = self.settings.kl_every
        if not self.meter_batches or every == 0 or step == self.last_read or (step % every and not final):
            return {}
        self.last_read = step
        index = (-(-step // every) - 1) % len(self.meter_batches)  # the batch after the last reading's
        batch = self.meter_batches[index]
        if index not in self.reference:  # the aligned model never changes: one adapter-off forward per batch
            self.reference[index] = reference_log_probs(model, batch).cpu()
        measured = probe_kl(model, batch, self.reference[index])
        return self.observe(measured, estimate(model))

    def summary(self) -> dict[str, Any]:
        """The drift at the last reading: measured KL vs the budget, lambda_align, the estimate's ratio."""
        b = self.budget
        last = b.readings[-1] if b.readings else None
        return {
            "step": self.last_read,
            "kl_measured": last,
            "kl_budget": b.budget,
            "kl_over_budget": None if last is None else last / b.budget,
            "lambda_align": b.weight,
            "lambda_adaptive": b.fixed_lambda is None,
            "kl_ratio": b.ratios[-1] if b.ratios else None,
            "calibration": b.calibration,
            "readings": len(b.readings),
        }

    def anchor(self, model: torch.nn.Module, step: int) -> tuple[torch.Tensor | None, dict[str, float]]:
        """A KL anchor step's term, ``lambda_align x KL(aligned || tuned)`` on the next anchor batch, at optimizer
        steps ``step > 0`` that are multiples of the anchor interval; once per step (the first micro-batch of an
        accumulation window: :func:`~agl_trl.trainers.mixin.scale_once_for_ga`). ``None`` on other calls."""
        from agl_trl.teacher_forcing import anchor_kl

        every = self.anchor_every
        if not self.anchor_batches or not every or step == 0 or step % every or step == self.anchored_step:
            return None, {}
        self.anchored_step = step
        batch = self.anchor_batches[(step // every - 1) % len(self.anchor_batches)]
        kl = anchor_kl(model, batch)
        return self.weight * kl, {"kl_anchor": float(kl.detach())}


__all__ = [
    "METER_METRICS",
    "OFF_UNDER_ZERO3",
    "OFF_WITHOUT_PROBE",
    "OFF_WITHOUT_RECORDS",
    "DriftMeter",
    "resolve_anchor_every",
]
