"""Lisa as a loss-level penalty: alternating alignment / task phases with a proximal term to the last switch point.

Follows "Lazy Safety Alignment for Large Language Models against Harmful Fine-tuning" (Huang, Hu, Ilhan, Tekin,
Liu, NeurIPS 2024; arXiv 2405.18641). Lisa's Bi-State Optimization alternates optimizer steps on alignment data
(harmful prompts with refusals) and on the user's task data, and adds to each state's loss a proximal term
``rho/2 ||w - w_switch||^2`` towards the weights at the last switch between the states, so neither state drags the
model far from what the other state left ("lazy" alignment: the alignment state is revisited cheaply).

Here, keyed on the optimizer step: the schedule repeats ``align_steps`` alignment-phase steps followed by
``task_steps`` task-phase steps (alignment first; :meth:`LisaPenalty.phase_of`). The penalty is

- on alignment-phase steps: ``lambda_align_ce * CE_align + rho/2 * sum ||theta - theta_anchor||^2``, where CE_align
  is the token-mean cross-entropy of the model on the response tokens (the refusals) of a cycling batch of
  alignment examples (prompt + refusal, teacher-forced; prompt tokens carry no loss);
- on task-phase steps: ``rho/2 * sum ||theta - theta_anchor||^2`` only;

theta = the trainable LoRA parameters (every active ``lora_A`` / ``lora_B`` with ``requires_grad``), theta_anchor a
detached fp32 copy of them taken at the start of each phase (the switch point). Units: ``rho`` is per squared LoRA
parameter (summed over all of them, not averaged: a larger adapter is pulled harder at the same rho, as in the
paper), ``lambda_align_ce`` multiplies nats per refusal token.

How it differs from Lisa: the penalty is ADDED to the trainer's task loss, so the task loss is still present in
alignment-phase steps (Lisa's alignment state optimises the alignment loss alone) and the trainer's batch of task
data is consumed in every step (Lisa's task state sees the task data only in its own steps). One optimizer (and its
moments) serves both phases here. ``lambda_align_ce`` can weight the
alignment CE up to counter the task loss; set ``align_steps=0`` for the proximal term alone.

GA and resume: the phase, the alignment batch and the anchor are all keyed on the optimizer step, so the micro-
batches of one accumulation window see the same phase and batch, and the anchor is taken once per optimizer step
(at the first call of the step that opens a phase, before that step's update; the parameters do not change within
the window). A resumed run re-takes the anchor at its first call: resumed exactly at a switch point it continues
identically; resumed mid-phase the anchor is the resume-point weights (the phase-start weights are not checkpointed).

Cost: on alignment-phase steps one extra forward + backward of ``batch_size`` (default 8) alignment sequences (a
second training step of that size); on every step the proximal term (elementwise over the LoRA parameters,
negligible) and, at a switch, one copy of the LoRA parameters (memory: one fp32 copy of the adapter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from agl_trl.baselines.common import check_lambda, graph_free_zero, seeded_batches
from agl_trl.generation import Generation, Prompt, encode_prompt, model_device
from agl_trl.lora import LoraGroups
from agl_trl.teacher_forcing import TokenSequence, collate, predicting_positions


def as_generation(example: Any) -> Generation:
    """A Generation from a Generation-like object (``prompt_ids``, ``response_ids``) or a (prompt_ids, response_ids)."""
    if hasattr(example, "prompt_ids") and hasattr(example, "response_ids"):
        prompt, response = example.prompt_ids, example.response_ids
    elif isinstance(example, (tuple, list)) and len(example) == 2:
        prompt, response = example
    else:
        raise ValueError(
            f"alignment example {example!r} is neither a Generation-like object (prompt_ids, response_ids) nor a "
            "(prompt_ids, response_ids) pair; build the examples with LisaPenalty.from_rows(tokenizer, rows)."
        )
    return Generation(prompt_ids=[int(t) for t in prompt], response_ids=[int(t) for t in response], text="")


def response_cross_entropy(model: nn.Module, sequences: Sequence[Generation], pad_id: int) -> torch.Tensor:
    """Token-mean fp32 cross-entropy of ``model`` on the response tokens of ``sequences`` (differentiable)."""
    batch = collate([TokenSequence.from_generation(s) for s in sequences], pad_id, model_device(model))
    ids, target = batch["input_ids"], predicting_positions(batch["response_mask"])[:, :-1]
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"], use_cache=False).logits[:, :-1]
    return F.cross_entropy(logits[target].float(), ids[:, 1:][target])


class LisaPenalty:
    """``penalty(model, step) -> (lambda_align_ce * CE_align [alignment phase] + rho/2 ||theta - anchor||^2, metrics)``.

    Metrics: ``loss``, ``align_ce`` (0 on task-phase steps), ``proximal`` (``sum ||theta - anchor||^2``, unweighted).
    See the module doc for the schedule and how this differs from Lisa.
    """

    def __init__(
        self,
        sequences: Sequence[Any],
        rho: float = 1.0,
        align_steps: int = 10,
        task_steps: int = 90,
        lambda_align_ce: float = 1.0,
        batch_size: int = 8,
        pad_id: int = 0,
        seed: int = 0,
    ):
        self.rho = check_lambda("rho", rho)
        self.lambda_align_ce = check_lambda("lambda_align_ce", lambda_align_ce)
        for name, value, low in (
            ("align_steps", align_steps, 0),
            ("task_steps", task_steps, 0),
            ("batch_size", batch_size, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if align_steps + task_steps < 1:
            raise ValueError(
                f"align_steps + task_steps must be >= 1, got align_steps={align_steps} and task_steps={task_steps}."
            )
        self.align_steps, self.task_steps = int(align_steps), int(task_steps)
        usable = [g for g in (as_generation(s) for s in sequences) if g.prompt_ids and g.response_ids]
        if self.align_steps > 0 and self.lambda_align_ce > 0 and not usable:
            raise ValueError(
                "LisaPenalty needs alignment examples with a non-empty prompt and response (harmful prompts with "
                "refusals) for its alignment phase; pass them, build them with LisaPenalty.from_rows(tokenizer, rows), "
                "or set align_steps=0 (proximal term only)."
            )
        self.batches = seeded_batches(usable, batch_size, seed)
        self.pad_id = int(pad_id)
        self.anchor: list[torch.Tensor] | None = None
        self.anchor_phase: tuple[int, bool] | None = None  # (cycle, alignment?) the anchor was taken for
        self.anchors_taken = 0
        self._anchor_params: tuple[int, ...] = ()
        self._lora = LoraGroups()
        self._calls = 0

    @classmethod
    def from_rows(
        cls, tokenizer: Any, rows: Sequence[dict[str, Any]], system_prompt: str | None = None, **kwargs: Any
    ) -> LisaPenalty:
        """Build the alignment examples from ``{"prompt", "answer"}`` rows: chat-templated prompt + answer + eos."""
        sequences = []
        eos = tokenizer.eos_token_id
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or "prompt" not in row or "answer" not in row:
                raise ValueError(f"alignment row {i} must be a dict with 'prompt' and 'answer' keys, got {row!r}.")
            prompt: Prompt = row["prompt"]
            answer = list(tokenizer(str(row["answer"]), add_special_tokens=False)["input_ids"])
            sequences.append(
                (encode_prompt(tokenizer, prompt, system_prompt), answer + ([eos] if eos is not None else []))
            )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(sequences, pad_id=kwargs.pop("pad_id", pad_id), **kwargs)

    # ------------------------------------------------------------------------------------------------- schedule
    @property
    def cycle(self) -> int:
        return self.align_steps + self.task_steps

    def phase_of(self, step: int) -> tuple[int, bool]:
        """``(cycle index, is_alignment_phase)`` of optimizer step ``step``; the pair names one phase instance."""
        cycle, offset = divmod(int(step), self.cycle)
        return cycle, offset < self.align_steps

    def is_alignment_step(self, step: int) -> bool:
        return self.phase_of(step)[1]

    def batch_for_step(self, step: int) -> list[Generation]:
        """The alignment batch of an alignment-phase step: batches cycle over the alignment steps only."""
        cycle, offset = divmod(int(step), self.cycle)
        return self.batches[(cycle * self.align_steps + offset) % len(self.batches)]

    @property
    def runs_forward(self) -> bool:
        """Whether the alignment phase runs forwards of its own (refused under FSDP2 / ZeRO-3: agl_trl.parallel)."""
        return self.align_steps > 0 and self.lambda_align_ce > 0 and bool(self.batches)

    # --------------------------------------------------------------------------------------------------- anchor
    def take_anchor(
        self, whole: Sequence[torch.Tensor], params: Sequence[torch.Tensor], phase: tuple[int, bool] | None
    ) -> None:
        """Anchor at the whole factors ``whole`` (fp32) of the trainable LoRA parameters ``params``."""
        self.anchor = [w.detach().float().clone() for w in whole]
        self.anchor_phase = phase
        self._anchor_params = tuple(id(p) for p in params)
        self.anchors_taken += 1

    def proximal(self, model: nn.Module, step: int) -> torch.Tensor:
        """``sum ||theta - theta_anchor||^2`` (fp32, differentiable); re-anchors at the first call of a new phase.

        theta is read whole on every rank by the LoRA grouper (FSDP2, ZeRO-3: :class:`agl_trl.lora.LoraGroups`)."""
        groups = self._lora.update(model)
        read = self._lora.read(grad=torch.is_grad_enabled())
        whole = read.module_factors(groups)
        pairs = [
            (param, factor)
            for m in self._lora.found
            for param, factor in ((m.lora_A, whole[m.name][1]), (m.lora_B, whole[m.name][0]))
            if param.requires_grad
        ]
        if not pairs:
            raise ValueError(
                "LisaPenalty found no trainable LoRA parameters (lora_A/lora_B with requires_grad): its proximal "
                "term regularises a LoRA update. Pass a peft_config to the trainer (or apply get_peft_model) first."
            )
        params = [p for p, _ in pairs]
        phase = self.phase_of(step)
        if self.anchor is None or phase != self.anchor_phase or tuple(id(p) for p in params) != self._anchor_params:
            self.take_anchor([w for _, w in pairs], params, phase)
        assert self.anchor is not None
        total = graph_free_zero(model)
        for (_, w), a in zip(pairs, self.anchor, strict=True):
            total = total + (w - a.to(w.device)).square().sum()
        return self._lora.attach(total, read)

    # ----------------------------------------------------------------------------------------------------- call
    def __call__(self, model: nn.Module, step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        step = self._calls if step is None else int(step)
        self._calls += 1
        if self.rho > 0:
            prox = self.proximal(model, step)
        else:  # the metric only (keeps the anchor bookkeeping identical)
            with torch.no_grad():
                prox = self.proximal(model, step)
        align = self.is_alignment_step(step) and self.lambda_align_ce > 0 and bool(self.batches)
        ce = response_cross_entropy(model, self.batch_for_step(step), self.pad_id) if align else None
        if self.rho == 0 and ce is None:
            loss = graph_free_zero(model)
        else:
            loss = 0.5 * self.rho * prox if self.rho > 0 else graph_free_zero(model)
            if ce is not None:
                loss = loss + self.lambda_align_ce * ce
        return loss, {
            "loss": float(loss.detach()),
            "align_ce": float(ce.detach()) if ce is not None else 0.0,
            "proximal": float(prox.detach()),
        }
