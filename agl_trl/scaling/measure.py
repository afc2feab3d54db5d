"""Measure forgetting for the scaling law: the per-token NLL increase of a fine-tuned model over the aligned model.

Two metrics (the ``metric`` column of a run log):

- ``responses``: held-out prompts teacher-forced with the **aligned model's own responses** (greedy, generated once
  and reused for every checkpoint); only response tokens count. This is what fine-tuning erodes first.
- ``general``: general held-out text (every token after the first).

``increase = mean NLL_model - mean NLL_aligned`` in nats/token, token-weighted over all sequences. It is 0 for the
aligned model itself; on the aligned model's greedy responses it is > 0 for any model that moved away from it.
Teacher forcing is that of :mod:`agl_trl.teacher_forcing`; the aligned/PEFT-adapter switching that of
:mod:`agl_trl.evaluation.kl`.

Typical use inside a budget sweep::

    gens = reference_generations(aligned, tok, prompts, reference=aligned, progress=False)   # once
    for budget in budgets:
        model = fine_tune(..., budget)
        result = measure_forgetting(model, tok, responses=gens, general_texts=texts, aligned=aligned)
        write_run_log("runs.jsonl", forgetting_records(result, method="agl", budget=budget, seed=seed))
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..evaluation.kl import ContextFactory, as_reference, reference_generations
from ..generation import Generation, Prompt, encode_prompt, eval_mode, model_device
from ..teacher_forcing import TokenSequence, collate, longest_first_batches, predicting_positions, response_log_probs
from .io import RunRecord

RESPONSES = "responses"
GENERAL = "general"


@dataclass
class ForgettingLoss:
    """Mean per-token NLL (nats) of the model and of the aligned model on the same tokens, and the increase."""

    metric: str
    increase: float
    model_nll: float
    aligned_nll: float
    n_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def response_sequences(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    system_prompt: str | None = None,
    add_eos: bool = True,
) -> list[Generation]:
    """Chat-formatted prompts with given response texts (``+ eos``, as a greedy generation ends) as sequences."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one response per prompt")
    eos = tokenizer.eos_token_id
    out = []
    for prompt, text in zip(prompts, responses, strict=True):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if add_eos and eos is not None:
            ids.append(int(eos))
        out.append(Generation(prompt_ids=encode_prompt(tokenizer, prompt, system_prompt), response_ids=ids, text=text))
    return out


def text_sequences(tokenizer: Any, texts: Sequence[str], max_length: int = 256) -> list[Generation]:
    """General text as sequences: the first token is context, every later token (up to ``max_length``) is scored."""
    out = []
    for text in texts:
        ids = list(tokenizer(text)["input_ids"])[:max_length]
        if len(ids) >= 2:
            out.append(Generation(prompt_ids=ids[:1], response_ids=ids[1:], text=text))
    if texts and not out:
        raise ValueError("every general text is shorter than 2 tokens; give longer held-out texts")
    return out


def _token_nll(module: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    device = model_device(module)
    batch = {k: v.to(device) for k, v in batch.items()}
    logprobs = response_log_probs(module, batch)
    next_ids = batch["input_ids"][:, 1:][predicting_positions(batch["response_mask"])[:, :-1]]
    return -logprobs.gather(-1, next_ids[:, None]).squeeze(-1)


@torch.inference_mode()
def nll_between(
    reference: ContextFactory,
    model: ContextFactory,
    sequences: Sequence[Generation],
    batch_size: int = 8,
    pad_id: int = 0,
) -> tuple[float, float, int]:
    """Token-weighted mean NLL of ``model`` and of ``reference`` on the response tokens: (model, reference, n)."""
    tokens = [TokenSequence.from_generation(s) for s in sequences]
    sums = [0.0, 0.0]
    n_tokens = 0
    for idx in longest_first_batches(tokens, batch_size):
        batch = collate([tokens[i] for i in idx], pad_id, torch.device("cpu"))
        for k, factory in enumerate((model, reference)):
            with factory() as module, eval_mode(module):
                sums[k] += float(_token_nll(module, batch).double().sum())
        n_tokens += int(predicting_positions(batch["response_mask"]).sum())
    if n_tokens == 0:
        raise ValueError("no tokens to score; give non-empty responses / texts")
    return sums[0] / n_tokens, sums[1] / n_tokens, n_tokens


def measure_forgetting(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt] | None = None,
    responses: Sequence[str] | Sequence[Generation] | None = None,
    general_texts: Sequence[str] | None = None,
    aligned: Any | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    max_length: int = 256,
    system_prompt: str | None = None,
) -> dict[str, ForgettingLoss]:
    """Forgetting of ``model`` relative to ``aligned``: ``{"responses": ..., "general": ...}`` (those with data).

    ``aligned=None``: ``model`` is a PEFT model and the aligned model is ``model`` with its adapter disabled.
    ``responses``: the aligned model's responses to ``prompts`` as texts, or :class:`Generation` objects from
    :func:`agl_trl.evaluation.kl.reference_generations` (then ``prompts`` is not needed); ``None`` with ``prompts``:
    generated here, greedily, by the aligned model (generate once and pass them in when measuring many models).
    """
    sequences: dict[str, list[Generation]] = {}
    if responses is not None and len(responses) and isinstance(responses[0], Generation):
        sequences[RESPONSES] = list(responses)  # type: ignore[arg-type]
    elif responses is not None:
        if prompts is None:
            raise ValueError("response texts need their prompts; pass prompts=[...] (same order)")
        sequences[RESPONSES] = response_sequences(tokenizer, prompts, responses, system_prompt)  # type: ignore[arg-type]
    elif prompts:
        sequences[RESPONSES] = reference_generations(
            model, tokenizer, prompts, aligned, max_new_tokens, batch_size, system_prompt, progress=False
        )
    if general_texts:
        sequences[GENERAL] = text_sequences(tokenizer, general_texts, max_length)
    if not sequences:
        raise ValueError("nothing to measure; pass prompts (and/or responses) and/or general_texts")

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    result = {}
    for metric, seqs in sequences.items():
        model_nll, aligned_nll, n = nll_between(
            lambda: as_reference(model, aligned), lambda: contextlib.nullcontext(model), seqs, batch_size, pad_id
        )
        result[metric] = ForgettingLoss(metric, model_nll - aligned_nll, model_nll, aligned_nll, n)
    return result


def forgetting_records(
    result: dict[str, ForgettingLoss],
    method: str,
    budget: float,
    rank: int | None = None,
    seed: int | str | None = None,
) -> list[RunRecord]:
    """Run-log rows (one per metric) for :func:`agl_trl.scaling.io.write_run_log`."""
    return [RunRecord(method, float(budget), r.increase, metric, rank, seed) for metric, r in result.items()]
