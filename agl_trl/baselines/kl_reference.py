"""KL to the aligned model on probe prompts: ``lambda * mean_t KL(p_aligned(.|x_<t) || p_current(.|x_<t))``.

The classic "stay close to the reference policy" anchor (the KL term of RLHF/PPO, used as a forgetting control in
e.g. "Language Model Alignment with Elastic Reset" and the LwF line): on every regularised step a batch of probe
sequences (prompt + the aligned model's own greedy answer, :class:`~agl_trl.generation.Generation`) is run
twice through the *same* PEFT model, once with the adapters disabled (= the aligned model W0, no grad) and once with
them enabled, and the KL between the next-token distributions is averaged over the response tokens (the positions
whose next token is a response token, as in the judge-free drift metric :mod:`agl_trl.evaluation.kl`).

Cost: per regularised step, one extra forward + backward of a probe batch of ``batch_size`` sequences (roughly a
second training step of that batch size), plus, the first time each batch comes round, a no-grad forward for the
aligned side, which is then kept on the CPU (the aligned model never changes; AGL's KL meter keeps its own the same
way). Memory for that: probe sequences x response tokens x vocabulary x 4 bytes (64 prompts x 32 tokens on
SmolLM2's 49,152-token vocabulary: about 400 MB); ``every=k`` regularises every k-th
optimizer step only (the weight is not rescaled: lambda applies on those steps). Probe batches cycle in a fixed
order shuffled by ``seed``, keyed on the optimizer step, so every micro-batch of one accumulation window sees the
same batch (GA-invariant, like AGL's random sub-block) and a resumed run continues identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from agl_trl.baselines.common import check_lambda, graph_free_zero, seeded_batches
from agl_trl.generation import Generation, generate
from agl_trl.lora import adapters_disabled
from agl_trl.teacher_forcing import TokenSequence, adapter_log_probs, collate, kl_per_token


class KLToReferencePenalty:
    """``penalty(model, step) -> (lambda * KL, {"loss", "kl_ref"})`` on a cycling probe batch; see the module doc."""

    runs_forward = True  # forwards of its own in the training step: refused under FSDP2 / ZeRO-3 (agl_trl.parallel)

    def __init__(
        self,
        sequences: Sequence[Generation],
        lambda_kl: float = 1.0,
        batch_size: int = 8,
        every: int = 1,
        pad_id: int = 0,
        seed: int = 0,
    ):
        self.lambda_kl = check_lambda("lambda_kl", lambda_kl)
        if int(batch_size) < 1 or int(every) < 1:
            raise ValueError(f"batch_size and every must be integers >= 1, got {batch_size!r} and {every!r}.")
        usable = [s for s in sequences if len(s.response_ids) > 0 and len(s.prompt_ids) > 0]
        if not usable:
            raise ValueError(
                "KLToReferencePenalty needs probe sequences with a non-empty prompt and response (the aligned "
                "model's answers); build them with KLToReferencePenalty.from_prompts(...)."
            )
        self.batches = seeded_batches(usable, batch_size, seed)
        self.every = int(every)
        self.pad_id = int(pad_id)
        self._calls = 0
        self._reference: dict[int, torch.Tensor] = {}  # the aligned side of each batch (CPU), by batch index

    @classmethod
    def from_prompts(
        cls,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Any],
        max_new_tokens: int = 32,
        generation_batch_size: int = 16,
        progress: bool = False,
        **kwargs: Any,
    ) -> KLToReferencePenalty:
        """Generate the reference's greedy answers to ``prompts`` and build the penalty on them.

        ``model``: the aligned model, or a PEFT model whose adapters are disabled for the generation (the reference).
        """
        with adapters_disabled(model):
            sequences = generate(
                model, tokenizer, list(prompts), max_new_tokens, generation_batch_size, progress=progress,
                desc="kl-reference",
            )  # fmt: skip
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(sequences, pad_id=kwargs.pop("pad_id", pad_id), **kwargs)

    def batch_index(self, step: int) -> int:
        return (step // self.every) % len(self.batches)

    def batch_for_step(self, step: int) -> list[Generation]:
        return self.batches[self.batch_index(step)]

    def kl(self, model: nn.Module, sequences: Sequence[Generation], index: int | None = None) -> torch.Tensor:
        """Mean KL(p_adapters_off || p_adapters_on) over the response tokens of ``sequences`` (differentiable).
        ``index``: the batch's index in :attr:`batches`, whose aligned side is then computed once and kept."""
        device = next(p.device for p in model.parameters())
        batch = collate([TokenSequence.from_generation(s) for s in sequences], self.pad_id, device)
        reference = self._reference.get(index) if index is not None else None
        if reference is None:  # both forwards in the model's own mode, over the whole logits (the peer as benchmarked)
            reference = adapter_log_probs(model, batch, aligned=True, keep_logits=False, eval_without_grad=False)
            if index is not None:
                self._reference[index] = reference.cpu()
        tuned = adapter_log_probs(model, batch, aligned=False, grad=True, keep_logits=False)
        return kl_per_token(reference.to(tuned.device), tuned).mean()

    def __call__(self, model: nn.Module, step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        step = self._calls if step is None else int(step)
        self._calls += 1
        if self.lambda_kl == 0 or step % self.every != 0:
            return graph_free_zero(model), {}
        kl = self.kl(model, self.batch_for_step(step), self.batch_index(step))
        loss = self.lambda_kl * kl
        return loss, {"loss": float(loss.detach()), "kl_ref": float(kl.detach())}
