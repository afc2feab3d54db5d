"""AsFT-style anchoring (Yang et al., 2025, "AsFT: Anchoring Safety During LLM Fine-Tuning Within Narrow Safety
Basin"): penalise the part of the LoRA update that leaves the alignment direction, during training.

Per LoRA module, with V = W_aligned - W_unaligned (:mod:`agl_trl.baselines.alignment`) and M a matrix acting on the
output side of dW = s B A:

    penalty = lambda * sum_m ||(I - M_m) dW_m||_F^2

- ``matrix="projector"`` (default): M = U_k U_k^T, the orthogonal projector onto V's top-k left singular directions
  (k = the kept rank, optionally capped by ``rank``): the penalty is exactly the energy of dW orthogonal to the
  alignment subspace, ||dW||^2 - ||U_k^T dW||^2.
- ``matrix="paper"``: M = C = V V^T / ||V||_F, the matrix of Safe LoRA that the AsFT reference code reuses for its
  regulariser (it also rescales by V's singular values).

All in r x r / k x r work from the factors: with G = U^T B and M = U diag(w) U^T,
(I - M) B = B - U (w G), so ||(I - M) dW||^2 = s^2 tr([B^T B - 2 G^T diag(w) G + G^T diag(w^2) G] A A^T).
Summed over modules (like AGL's R_A and L2); zero, with zero gradient, at dW = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from agl_trl.baselines.alignment import AlignmentDirection
from agl_trl.baselines.common import check_lambda, graph_free_zero, trace_product
from agl_trl.lora import LoraGroup, LoraGroups

MATRICES = ("projector", "paper")


class AsFTPenalty:
    """``penalty(model, step) -> (lambda * sum ||(I - M) dW||^2, {"loss", "orthogonal_sq", "orthogonal_share"})``."""

    def __init__(
        self,
        directions: dict[str, AlignmentDirection],
        lambda_asft: float = 1.0,
        matrix: str = "projector",
        rank: int | None = None,
    ):
        if matrix not in MATRICES:
            raise ValueError(f"matrix must be one of {MATRICES}, got {matrix!r}")
        if rank is not None and int(rank) < 1:
            raise ValueError(f"rank must be >= 1 or None, got {rank!r}")
        self.directions = directions
        self.lambda_asft = check_lambda("lambda_asft", lambda_asft)
        self.matrix = matrix
        self.rank = None if rank is None else int(rank)
        self._lora = LoraGroups()
        self._stacked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._bound_to: tuple[int, ...] | None = None

    def _weights(self, direction: AlignmentDirection) -> tuple[torch.Tensor, torch.Tensor]:
        k = direction.u.shape[1] if self.rank is None else min(self.rank, direction.u.shape[1])
        u = direction.u[:, :k].float()
        if self.matrix == "projector":
            w = torch.ones(k)
        else:
            w = direction.s[:k].float().square() / max(direction.frobenius, 1e-30)
        return u, w

    def _bind(self, model: nn.Module) -> list[LoraGroup]:
        groups = self._lora.update(model)
        key = tuple(id(m.layer) for g in groups for m in g.modules)
        if key != self._bound_to:
            missing = [m.name for g in groups for m in g.modules if m.name not in self.directions]
            if missing:
                raise ValueError(
                    f"no alignment direction for {len(missing)} LoRA module(s), e.g. {missing[:3]}: compute them "
                    "for the same target modules (alignment_directions(aligned, unaligned, names=...))."
                )
            self._stacked = {}
            for index, group in enumerate(groups):
                pairs = [self._weights(self.directions[m.name]) for m in group.modules]
                k = max(u.shape[1] for u, _ in pairs)
                device = group.scale.device
                u = torch.stack([torch.nn.functional.pad(u, (0, k - u.shape[1])) for u, _ in pairs]).to(device)
                w = torch.stack([torch.nn.functional.pad(w, (0, k - w.shape[0])) for _, w in pairs]).to(device)
                self._stacked[index] = (u, w)  # zero-padded directions have w = 0: they contribute nothing
            self._bound_to = key
        return groups

    def __call__(self, model: nn.Module, step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        groups = self._bind(model)
        read = self._lora.read(grad=torch.is_grad_enabled())
        orthogonal = graph_free_zero(model)
        full = graph_free_zero(model)
        for index, (group, (B, A)) in enumerate(zip(groups, read.factors, strict=True)):  # noqa: N806
            scale = group.scale
            u, w = self._stacked[index]
            g = u.transpose(-1, -2) @ B  # (M, k, r)
            gram_b = B.transpose(-1, -2) @ B
            wg = w[:, :, None] * g
            kept = g.transpose(-1, -2) @ wg  # G^T diag(w) G
            kept_sq = wg.transpose(-1, -2) @ wg  # G^T diag(w^2) G
            gram_a = A @ A.transpose(-1, -2)
            s2 = scale.square()
            orthogonal = orthogonal + (s2 * trace_product(gram_b - 2.0 * kept + kept_sq, gram_a)).clamp_min(0).sum()
            full = full + (s2 * trace_product(gram_b, gram_a)).sum()
        value, total = float(orthogonal.detach()), float(full.detach())
        metrics = {"orthogonal_sq": value, "orthogonal_share": value / total if total > 0 else 0.0}
        if self.lambda_asft == 0:
            return graph_free_zero(model), {"loss": 0.0, **metrics}
        loss = self._lora.attach(self.lambda_asft * orthogonal, read)
        return loss, {"loss": float(loss.detach()), **metrics}
