"""The exact Fisher quadratic form by Monte Carlo: the reference that K-FAC's approximation is audited against.

For teacher-forced probe sequences, the second-order KL(p_aligned || p_tuned) per response token is
0.5 vec(dW)^T F vec(dW) with F the Fisher of the response tokens' log-likelihood. With targets y_t sampled from the
aligned model independently at every response position, the per-sequence weight gradient
G_m = d/dW_m sum_t log p(y_t) is an unbiased rank-one sample of F: E[<G, dW>^2] = vec(dW)^T F vec(dW), with every
term K-FAC drops (cross-position, and cross-module through <G, dW> = sum_m <G_m, dW_m>). Keeping the per-module
dots apart gives the block-diagonal part (no cross-module terms) of the same sample, so one pass says which terms a
given update's KL lives in. With ``eigenbases`` (each module's K-FAC eigenvectors Q_out, Q_in) it also gives the
eigenvalue-corrected K-FAC form (EKFAC): the same samples' second moments in that basis, diagonal there, in place of
K-FAC's eigenvalue products (memory: one weight-sized matrix per module).

A diagnostic, not a regulariser: it needs a full-precision base weight per module (4-bit bases have no gradient)
and one backward per sequence and sample. ``benchmarks/fisher_terms.py`` runs it on trained adapters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from agl_trl.lora import LoraModule, adapters_disabled
from agl_trl.teacher_forcing import TokenSequence, collate, predicting_positions


@dataclass(frozen=True)
class FisherForms:
    """0.5 vec(dW)^T F vec(dW) per response token (nats) for one update, estimated from sampled gradients."""

    exact: float  # every term: sum over modules inside the square
    within_module: float  # block-diagonal: each module's own term, no cross-module products
    samples: int  # sequences x samples per sequence behind the estimate
    eigenbasis_diagonal: float | None = None  # EKFAC: diagonal in the given eigenbases (when given)


def update_of(modules: Sequence[LoraModule]) -> list[torch.Tensor]:
    """The current LoRA update dW_m = s B_m A_m of every module (fp32, detached)."""
    return [(m.scaling * m.lora_B.detach().float() @ m.lora_A.detach().float()) for m in modules]


def sampled_fisher_forms(
    model: torch.nn.Module,
    modules: Sequence[LoraModule],
    sequences: Sequence[TokenSequence],
    updates: Mapping[str, Sequence[torch.Tensor]],
    pad_id: int,
    samples: int = 4,
    seed: int = 0,
    eigenbases: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, FisherForms]:
    """The exact and block-diagonal Fisher forms of each named update (``updates[name][i]`` is dW of
    ``modules[i]``) at the aligned weights (adapters off), from ``samples`` sampled-target gradients per sequence;
    with ``eigenbases`` (``(Q_out, Q_in)`` per module) also the EKFAC form in them."""
    weights = [m.layer.base_layer.weight for m in modules]
    if any(not w.is_floating_point() or w.element_size() < 2 for w in weights):
        raise ValueError("sampled_fisher_forms needs full-precision base weights (a 4-bit base has no gradient).")
    for name, update in updates.items():
        if len(update) != len(modules):
            raise ValueError(f"update {name!r} has {len(update)} tensors for {len(modules)} LoRA modules.")
    if eigenbases is not None and len(eigenbases) != len(modules):
        raise ValueError(f"eigenbases has {len(eigenbases)} pairs for {len(modules)} LoRA modules.")
    moments = [torch.zeros(q.shape[1], p.shape[1]) for q, p in eigenbases] if eigenbases is not None else None
    generator = torch.Generator().manual_seed(seed)
    device = weights[0].device
    flags = [w.requires_grad for w in weights]
    squares = {name: [0.0, 0.0] for name in updates}  # [exact, within-module]
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for w in weights:
            w.requires_grad_(True)
        for sequence in sequences:
            batch = collate([sequence], pad_id, device)
            predicts = predicting_positions(batch["response_mask"])
            with adapters_disabled(model):  # one forward per sequence; each sample backpropagates through it
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
                ).logits
            log_probs = torch.log_softmax(logits[predicts].float(), dim=-1)
            probs = log_probs.detach().exp().cpu()
            for index in range(samples):
                targets = torch.multinomial(probs, 1, generator=generator).to(device)
                grads = torch.autograd.grad(
                    log_probs.gather(1, targets).sum(), weights, retain_graph=index < samples - 1
                )
                tokens += int(predicts.sum())
                if moments is not None:
                    for moment, g, (q_out, q_in) in zip(moments, grads, eigenbases, strict=True):
                        moment += (q_out.T @ g.detach().float().cpu() @ q_in).square()
                for name, update in updates.items():
                    dots = torch.stack([(g.float() * d.to(g.device)).sum() for g, d in zip(grads, update, strict=True)])
                    squares[name][0] += float(dots.sum()) ** 2
                    squares[name][1] += float(dots.square().sum())
    finally:
        for w, flag in zip(weights, flags, strict=True):
            w.requires_grad_(flag)
        model.train(was_training)
    # tokens: response tokens summed over every (sequence, sample), so each form is a mean per response token
    forms = {}
    for name, (e, w) in squares.items():
        ekfac = None
        if moments is not None:
            ekfac = 0.5 * sum(
                float((moment * (q_out.T @ d.float().cpu() @ q_in).square()).sum())
                for moment, d, (q_out, q_in) in zip(moments, updates[name], eigenbases, strict=True)
            )
            ekfac /= tokens
        forms[name] = FisherForms(0.5 * e / tokens, 0.5 * w / tokens, len(sequences) * samples, ekfac)
    return forms


__all__ = ["FisherForms", "sampled_fisher_forms", "update_of"]
