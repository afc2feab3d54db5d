"""L2-SP on the LoRA update: ``lambda * sum_m ||dW_m||_F^2`` with dW = s B A.

Follows "Explicit inductive bias for transfer learning with convolutional networks" (Li, Grandvalet, Davoine,
ICML 2018): weight decay towards the starting (here: aligned) weights instead of towards 0. With LoRA the starting
point is dW = 0, so the penalty is the squared Frobenius norm of the update, computed in r x r work as
``s^2 tr((B^T B)(A A^T))`` (:func:`agl_trl.regularizers.functional.update_norm_sq`); dW is never formed. Summed over
modules, like AGL's R_A; an isotropic (curvature-blind) version of EWC.
"""

from __future__ import annotations

import torch
from torch import nn

from agl_trl.baselines.common import check_lambda, graph_free_zero
from agl_trl.lora import LoraGroups
from agl_trl.regularizers.functional import update_norm_sq


class L2UpdatePenalty:
    """``penalty(model, step) -> (lambda * sum ||s B A||^2, {"loss", "update_norm_sq"})``."""

    def __init__(self, lambda_l2: float = 0.06):
        self.lambda_l2 = check_lambda("lambda_l2", lambda_l2)
        self._lora = LoraGroups()

    def __call__(self, model: nn.Module, step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        groups = self._lora.update(model)
        read = self._lora.read(grad=torch.is_grad_enabled())
        total = graph_free_zero(model)
        for group, (B, A) in zip(groups, read.factors, strict=True):  # noqa: N806
            total = total + update_norm_sq(B, A, group.scale).sum()
        value = float(total.detach())
        if self.lambda_l2 == 0:
            return graph_free_zero(model), {"loss": 0.0, "update_norm_sq": value}
        loss = self._lora.attach(self.lambda_l2 * total, read)
        return loss, {"loss": float(loss.detach()), "update_norm_sq": value}
