"""Teacher forcing and KL(aligned || tuned): the one place where a sequence is scored token by token.

One sequence type, :class:`TokenSequence` (token ids and a response mask), collated into one batch type (a dict of
``input_ids``, ``attention_mask``, ``response_mask``, right-padded). Logits at position ``t`` predict token
``t + 1``, so a response's likelihood terms live at :func:`predicting_positions`. Every caller goes through here:
the Fisher's probe, the drift meter and its anchor steps (:mod:`agl_trl.regularizers.meter`), the judge-free KL drift
(:mod:`agl_trl.evaluation.kl`), the forgetting measure (:mod:`agl_trl.scaling.measure`) and the KL-to-reference peer
(:mod:`agl_trl.baselines.kl_reference`). Each caller keeps its own reduction of :func:`kl_per_token` (a mean over the
batch's tokens, or sums per sequence), so every number is the one it was before they shared this module.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TokenSequence:
    """Prompt + response token ids, with ``response_mask`` 1 on the response tokens (the ones scored)."""

    input_ids: list[int]
    response_mask: list[int]

    @classmethod
    def from_generation(cls, generation: Any) -> TokenSequence:
        """A generation-like object (``prompt_ids``, ``response_ids``: :class:`agl_trl.generation.Generation`)."""
        prompt, response = list(generation.prompt_ids), list(generation.response_ids)
        return cls(prompt + response, [0] * len(prompt) + [1] * len(response))


def first_response_tokens(sequence: TokenSequence, n: int) -> TokenSequence:
    """``sequence`` cut after its first ``n`` response tokens (the prompt kept whole)."""
    seen, end = 0, len(sequence.input_ids)
    for i, scored in enumerate(sequence.response_mask):
        seen += scored
        if seen == n:
            end = i + 1
            break
    return TokenSequence(sequence.input_ids[:end], sequence.response_mask[:end])


def longest_first_batches(sequences: Sequence[TokenSequence], batch_size: int) -> Iterator[list[int]]:
    """Indices of the sequences with response tokens, longest first, in batches of ``batch_size`` (little padding,
    and the same batches for every caller that scores the same sequences)."""
    order = sorted(
        (i for i, s in enumerate(sequences) if sum(s.response_mask) > 0),
        key=lambda i: -len(sequences[i].input_ids),
    )
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def collate(sequences: list[TokenSequence], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, response_mask (right padding keeps the default positions)."""
    width = max(len(s.input_ids) for s in sequences)

    def padded(values: list[int], fill: int) -> list[int]:
        return values + [fill] * (width - len(values))

    return {
        "input_ids": torch.tensor([padded(s.input_ids, pad_id) for s in sequences], device=device),
        "attention_mask": torch.tensor([padded([1] * len(s.input_ids), 0) for s in sequences], device=device),
        "response_mask": torch.tensor([padded(s.response_mask, 0) for s in sequences], device=device),
    }


def predicting_positions(response_mask: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, seq): the positions whose next token is a response token (position t predicts token t + 1),
    where a response's likelihood terms live."""
    predicts = torch.zeros_like(response_mask, dtype=torch.bool)
    predicts[:, :-1] = response_mask[:, 1:].bool()
    return predicts


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the causal LM under ``model``'s PEFT wrapper takes ``logits_to_keep`` (the trainers pass the model
    unwrapped from accelerate; any other wrapper just gets the whole logits)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def response_log_probs(model: Any, batch: dict[str, torch.Tensor], keep_logits: bool = False) -> torch.Tensor:
    """fp32 next-token log-probabilities of ``model`` at ``batch``'s predicting positions, (n_tokens, vocab), in the
    caller's mode, grad and adapter state. ``keep_logits``: project onto the vocabulary only where some sequence
    predicts a response token (``logits_to_keep``, where the model takes it)."""
    predicts = predicting_positions(batch["response_mask"])
    if not bool(predicts.any()):
        raise ValueError("AGL KL meter: the probe batch has no response tokens; check the probe records.")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    keep = None
    if keep_logits and accepts_logits_to_keep(model):
        keep = predicts.any(0).nonzero().squeeze(-1)
        inputs["logits_to_keep"] = keep
    logits = model(**inputs).logits
    selected = logits[predicts] if keep is None else logits[predicts[:, keep]]
    return torch.log_softmax(selected.float(), dim=-1)


def kl_per_token(reference: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """KL(p_reference || p) at each scored token, (n_tokens,), from both sides' log-probabilities (fp32)."""
    return (reference.exp() * (reference - log_probs)).sum(-1)


def adapter_log_probs(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    aligned: bool,
    grad: bool = False,
    keep_logits: bool = True,
    eval_without_grad: bool = True,
) -> torch.Tensor:
    """:func:`response_log_probs` of the aligned model (``aligned``: the adapters off, never a graph) or of the
    tuned one (adapters on). ``grad=False``: no graph, in eval mode (``eval_without_grad``, the meter's readings);
    ``grad=True`` (tuned only): differentiable, in the model's own mode, so its dropout and gradient checkpointing
    apply as in the task's forward. Never repacks bitsandbytes 4-bit weights for CPU inference
    (:func:`~agl_trl.lora.no_cpu_4bit_repacking`): a QLoRA run keeps training after a reading."""
    from agl_trl.lora import adapters_disabled, no_cpu_4bit_repacking

    grad = grad and not aligned
    was_training = model.training
    if not grad and eval_without_grad:
        model.eval()
    try:
        with torch.set_grad_enabled(grad), no_cpu_4bit_repacking(model):
            if aligned:
                with adapters_disabled(model):
                    return response_log_probs(model, batch, keep_logits)
            return response_log_probs(model, batch, keep_logits)
    finally:
        model.train(was_training)


def reference_log_probs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The aligned model's (adapters off) log-probabilities at ``batch``'s response positions, (n_tokens, vocab)
    fp32: fixed for a run, so the meter computes them once per batch and keeps them (on CPU)."""
    return adapter_log_probs(model, batch, aligned=True)


def probe_kl(model: torch.nn.Module, batch: dict[str, torch.Tensor], reference: torch.Tensor | None = None) -> float:
    """KL(p_aligned || p_tuned) per response token of a teacher-forced ``batch`` (:func:`collate`), adapters off vs
    on, no graph. ``reference``: the batch's :func:`reference_log_probs`, when already computed (one forward
    instead of two)."""
    if reference is None:
        reference = reference_log_probs(model, batch)
    tuned = adapter_log_probs(model, batch, aligned=False)
    return float(kl_per_token(reference.to(tuned.device), tuned).mean())


def anchor_kl(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`probe_kl` with its gradient: KL(p_aligned || p_tuned) per response token of ``batch``, a
    differentiable fp32 scalar (the aligned side has no graph). What a KL anchor step adds, times lambda_align."""
    reference = reference_log_probs(model, batch)  # no graph: the aligned side is a constant
    tuned = adapter_log_probs(model, batch, aligned=False, grad=True)
    return kl_per_token(reference, tuned).mean()


__all__ = [
    "longest_first_batches",
    "TokenSequence",
    "accepts_logits_to_keep",
    "adapter_log_probs",
    "anchor_kl",
    "collate",
    "first_response_tokens",
    "kl_per_token",
    "predicting_positions",
    "probe_kl",
    "reference_log_probs",
    "response_log_probs",
]
