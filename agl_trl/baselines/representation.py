"""Representation anchor on unsafe probe prompts: ``lambda_rep * mean_prompts MSE(h_current, h_aligned)``.

The representation-anchor term of SBR ("Safety Anchor", ICML 2026): keep the model's internal state on harmful
requests where the aligned model had it, so that the refusal the aligned model computes from that state survives
fine-tuning. ``h`` is the final-layer hidden state (``output_hidden_states=True``, last element; for Llama-style
models that is after the final norm, i.e. the input of the LM head) at the LAST token of each chat-templated probe
prompt (the assistant generation prompt, from which the answer is decoded). Prompts only, no answers: nothing is
generated. This module is that term alone; any other component of SBR is not included.

The MSE is size-normalised: the squared difference is averaged over the hidden dimension (and then over the
prompts), so ``lambda_rep`` is in units of "squared hidden-state activation per coordinate" and is comparable across
models of different width (a sum over coordinates would grow with the hidden size; each model's activation scale
still enters).

``h_aligned`` is computed once, lazily at the first call, with the adapters disabled (the aligned model is the LoRA
model with its adapters off, :func:`agl_trl.lora.adapters_disabled`), in eval mode, without gradients, in fp32, for
every probe batch, and cached on the model's device (``n_prompts x hidden`` floats); it is never recomputed. Each
reference batch has the same composition (and padding) as the training batch it is compared with, so a model whose
adapters are still zero (B = 0) gives exactly 0.

Cost: per regularised step one extra forward + backward of ``batch_size`` (default 8) probe prompts (prompts only,
short), once ``n_prompts / batch_size`` no-grad forwards for the cache. ``every=k`` regularises every k-th optimizer
step only (lambda is not rescaled). Probe batches cycle in a fixed order shuffled by ``seed``, keyed on the optimizer
step (as in :mod:`agl_trl.baselines.kl_reference`), so every micro-batch of one accumulation window sees the same
batch and a resumed run continues identically (the cache is rebuilt from the unchanged adapter-free model).

Batches are RIGHT-padded and the hidden state is gathered at each prompt's last real token: under causal attention
the padding after it cannot change it, and the default position ids stay correct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from agl_trl.baselines.common import check_lambda, graph_free_zero, seeded_batches
from agl_trl.generation import Prompt, encode_prompt, eval_mode, model_device
from agl_trl.lora import adapters_disabled


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded ``(input_ids, attention_mask, last)`` of prompt ids; ``last[b]`` is row b's last real position."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), int(pad_id), dtype=torch.long)
    attn = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
        attn[row, : len(prompt)] = 1
    last = torch.tensor([len(p) - 1 for p in prompts], dtype=torch.long)
    return ids.to(device), attn.to(device), last.to(device)


class RepresentationAnchorPenalty:
    """``penalty(model, step) -> (lambda_rep * MSE(h, h_aligned), {"loss", "rep_mse"})``; see the module doc."""

    runs_forward = True  # forwards of its own in the training step: refused under FSDP2 / ZeRO-3 (agl_trl.parallel)

    def __init__(
        self,
        prompt_ids: Sequence[Sequence[int]],
        lambda_rep: float = 1.0,
        batch_size: int = 8,
        every: int = 1,
        pad_id: int = 0,
        seed: int = 0,
    ):
        self.lambda_rep = check_lambda("lambda_rep", lambda_rep)
        if int(batch_size) < 1 or int(every) < 1:
            raise ValueError(
                f"batch_size and every must be integers >= 1, got batch_size={batch_size!r} and every={every!r}."
            )
        usable = [list(p) for p in prompt_ids if len(p) > 0]
        if not usable:
            raise ValueError(
                "RepresentationAnchorPenalty needs at least one non-empty probe prompt (token ids of a chat-templated "
                "unsafe request); build it with RepresentationAnchorPenalty.from_prompts(tokenizer, prompts)."
            )
        self.batches = seeded_batches(usable, batch_size, seed)
        self.every = int(every)
        self.pad_id = int(pad_id)
        self.reference: list[torch.Tensor] | None = None  # h_aligned per batch, (batch, hidden) fp32, built lazily
        self.reference_forwards = 0  # no-grad forwards spent on the cache (n_batches, once)
        self._calls = 0

    @classmethod
    def from_prompts(
        cls, tokenizer: Any, prompts: Sequence[Prompt], system_prompt: str | None = None, **kwargs: Any
    ) -> RepresentationAnchorPenalty:
        """Chat-template ``prompts`` (strings or message lists, ending in the generation prompt) and build the penalty.

        ``pad_id`` defaults to the tokenizer's pad token (any id works: padded positions are never read).
        """
        ids = [encode_prompt(tokenizer, p, system_prompt) for p in prompts]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(ids, pad_id=kwargs.pop("pad_id", pad_id), **kwargs)

    def batch_index(self, step: int) -> int:
        return (step // self.every) % len(self.batches)

    def batch_for_step(self, step: int) -> list[list[int]]:
        return self.batches[self.batch_index(step)]

    def last_hidden(self, model: nn.Module, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """fp32 final-layer hidden state at each prompt's last token: (n_prompts, hidden), differentiable."""
        ids, attn, last = pad_prompts(prompts, self.pad_id, model_device(model))
        out = model(input_ids=ids, attention_mask=attn, use_cache=False, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        return hidden[torch.arange(len(prompts), device=hidden.device), last].float()

    def build_reference(self, model: nn.Module) -> list[torch.Tensor]:
        """h_aligned for every probe batch (adapters off, eval mode, no grad, fp32); cached, built at most once."""
        if self.reference is None:
            reference = []
            with torch.no_grad(), eval_mode(model), adapters_disabled(model):
                for batch in self.batches:
                    reference.append(self.last_hidden(model, batch).detach())
                    self.reference_forwards += 1
            self.reference = reference
        return self.reference

    def mse(self, model: nn.Module, step: int) -> torch.Tensor:
        """Mean over the step's probe prompts (and hidden coordinates) of (h_current - h_aligned)^2, differentiable."""
        reference = self.build_reference(model)[self.batch_index(step)]
        current = self.last_hidden(model, self.batch_for_step(step))
        return (current - reference.to(current.device)).square().mean()

    def __call__(self, model: nn.Module, step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        step = self._calls if step is None else int(step)
        self._calls += 1
        if self.lambda_rep == 0 or step % self.every != 0:
            return graph_free_zero(model), {}
        mse = self.mse(model, step)
        loss = self.lambda_rep * mse
        return loss, {"loss": float(loss.detach()), "rep_mse": float(mse.detach())}
