"""Judge-free drift: mean per-token KL(p_aligned || p_finetuned) on the aligned model's own responses.

The aligned (reference) model answers each evaluation prompt greedily once; both models are then teacher-forced on
``prompt + that response`` and the KL between their next-token distributions is averaged over the *response* tokens
only (prompt tokens are not what alignment shaped). No generation by the fine-tuned model and no judge are needed,
so the number is cheap and very stable.

To avoid loading two copies, the reference can be the same PEFT model with its adapter disabled
(``reference=None`` with a ``peft.PeftModel`` or a transformers model with a loaded adapter).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from agl_trl.generation import Generation, Prompt, eval_mode, generate, model_device
from agl_trl.lora import adapters_disabled
from agl_trl.teacher_forcing import (
    TokenSequence,
    collate,
    kl_per_token,
    longest_first_batches,
    predicting_positions,
    response_log_probs,
)


@dataclass
class KLResult:
    """``mean``: token-weighted mean KL in nats/token; ``per_prompt``: mean KL per prompt (nan without tokens)."""

    mean: float
    n_tokens: int
    per_prompt: list[float]
    per_prompt_tokens: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "n_tokens": self.n_tokens}


@contextlib.contextmanager
def as_reference(model: Any, reference: Any | None) -> Iterator[Any]:
    """Yield the module that computes the reference distribution: ``reference``, or ``model`` without adapter."""
    if reference is not None:
        yield reference
    else:
        with adapters_disabled(model, require_adapter=True):
            yield model


def reference_generations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    reference: Any | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    system_prompt: str | None = None,
    progress: bool = True,
) -> list[Generation]:
    """Greedy responses of the reference (``reference`` or ``model`` with its adapter disabled)."""
    with as_reference(model, reference) as ref:
        return generate(ref, tokenizer, prompts, max_new_tokens, batch_size, system_prompt, True, progress, "reference")


ContextFactory = Callable[[], contextlib.AbstractContextManager[Any]]


@torch.inference_mode()
def kl_between(
    reference: ContextFactory,
    model: ContextFactory,
    sequences: Sequence[Generation],
    batch_size: int = 8,
    pad_id: int = 0,
    progress: bool = True,
) -> KLResult:
    """Mean per-token KL(p_reference || p_model) over the response tokens of ``sequences`` (teacher-forced).

    ``reference`` / ``model`` are zero-argument callables returning a context manager that yields the module to
    run (e.g. switching PEFT adapters), so one PEFT model can serve as both sides.
    """
    per_sum = [0.0] * len(sequences)
    per_tok = [len(s.response_ids) for s in sequences]
    tokens = [TokenSequence.from_generation(s) for s in sequences]
    for idx in tqdm(list(longest_first_batches(tokens, batch_size)), desc="kl", disable=not progress, leave=False):
        with reference() as ref, eval_mode(ref):
            batch = collate([tokens[i] for i in idx], pad_id, model_device(ref))
            ref_lp = response_log_probs(ref, batch)
        with model() as mod, eval_mode(mod):
            device = model_device(mod)
            lp = response_log_probs(mod, {k: v.to(device) for k, v in batch.items()})
        kl = kl_per_token(ref_lp, lp.to(ref_lp.device)).clamp_min(0.0)
        for row, chunk in zip(
            idx, torch.split(kl, predicting_positions(batch["response_mask"]).sum(-1).tolist()), strict=True
        ):
            per_sum[row] = float(chunk.sum())
    n_tokens = sum(per_tok)
    mean = sum(per_sum) / n_tokens if n_tokens else math.nan
    per_prompt = [s / n if n else math.nan for s, n in zip(per_sum, per_tok, strict=True)]
    return KLResult(mean=mean, n_tokens=n_tokens, per_prompt=per_prompt, per_prompt_tokens=per_tok)


def kl_on_generations(
    model: Any,
    sequences: Sequence[Generation],
    reference: Any | None = None,
    batch_size: int = 8,
    pad_id: int = 0,
    progress: bool = True,
) -> KLResult:
    """KL(p_reference || p_model) on ``sequences``; reference=None: ``model`` with its adapter disabled."""
    return kl_between(
        lambda: as_reference(model, reference),
        lambda: contextlib.nullcontext(model),
        sequences,
        batch_size,
        pad_id,
        progress,
    )


def kl_drift(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    reference: Any | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    system_prompt: str | None = None,
    progress: bool = True,
) -> KLResult:
    """Generate the reference's greedy responses to ``prompts``, then the KL of ``model`` from it on them.

    reference=None: ``model`` is a PEFT model and the reference is the same model with its adapter disabled.
    """
    gens = reference_generations(
        model, tokenizer, prompts, reference, max_new_tokens, batch_size, system_prompt, progress
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return kl_on_generations(model, gens, reference, batch_size, pad_id, progress)
