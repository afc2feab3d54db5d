"""AGLRegularizer: the one AGL penalty, shared by every trainer, the Axolotl plugin and the benchmarks.

It binds a :class:`~agl_trl.fisher.FisherArtifact` to the active LoRA layers of a model (lazily, on first call, so
adapters that TRL creates inside DPO/KTO are found), groups modules of equal shape so each step runs a few batched
kernels, and returns the weighted sum

    lambda * c * 0.5 * sum_m R_A + lambda_task * sum_m R_T + lambda_collision * sum_m (mu * E_riem + (1-mu) * E_geo)

with per-term metrics. R_A = vec(dW)^T F vec(dW) over the whole K-FAC spectrum, so 0.5 * c * R_A is the estimated
KL(aligned || tuned) per probe response token in nats; ``c`` (the calibration) and ``lambda`` (the fixed
``lambda_align`` or the adapted one) come from the budget it is given, the drift meter's in training
(:mod:`agl_trl.regularizers.meter`). R_T, E_riem and E_geo are quadratic in dW and in nats too, so every gradient
vanishes as dW -> 0 (docs/method.md).

Sharded engines (docs/distributed.md): the factors are read whole on every rank by the LoRA grouper
(:class:`agl_trl.lora.LoraGroups`: one all-gather per group under FSDP2, gathered copies and a gradient relay under
DeepSpeed ZeRO-3), so every rank computes the same penalty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from agl_trl.fisher.artifact import FisherArtifact, FisherArtifactError, ModuleFisher
from agl_trl.lora import LoraGroup, LoraGroups, LoraModule, find_lora_modules
from agl_trl.regularizers import functional as F
from agl_trl.regularizers.budget import DriftBudget
from agl_trl.settings import AGLSettings

logger = logging.getLogger(__name__)

METRIC_NAMES = ("loss", "r_align", "r_task", "e_riem", "e_geo", "leakage", "tau", "kl_estimate", "lambda")
# "e_riem" and "tau" are in the metrics only with the opt-in collision terms (lambda_collision > 0)


@dataclass
class _Group:
    """Modules of one shape, with their Fisher tensors stacked on the adapters' device (fp32)."""

    modules: list[LoraModule]
    scale: torch.Tensor
    q_out: torch.Tensor | None = None
    eig_out: torch.Tensor | None = None
    q_in: torch.Tensor | None = None
    eig_in: torch.Tensor | None = None
    tail_out: torch.Tensor | None = None
    tail_in: torch.Tensor | None = None
    mean_curvature: torch.Tensor | None = None
    diag: torch.Tensor | None = None
    tau: torch.Tensor | None = None
    curvature: torch.Tensor | None = None
    gate: torch.Tensor | None = None
    pending: torch.Tensor | None = None
    pending_step: int | None = None


def _pad_columns(tensors: list[torch.Tensor], width: int) -> torch.Tensor:
    return torch.stack([torch.nn.functional.pad(t, (0, width - t.shape[-1])) for t in tensors])


class AGLRegularizer:
    """Callable ``reg(model, step) -> (loss, metrics)``; see the module docstring for the objective."""

    def __init__(
        self,
        artifact: FisherArtifact,
        settings: AGLSettings | None = None,
        seed: int = 0,
        budget: DriftBudget | None = None,
    ):
        self.artifact = artifact
        self.settings = settings if settings is not None else AGLSettings()  # validated when built
        self.seed = seed
        self._groups: list[_Group] = []
        self._lora = LoraGroups()  # the modules grouped by shape, read whole on every rank (FSDP2, ZeRO-3)
        self._tau_state: dict[str, float] = {}
        self._calls = 0
        # where lambda_align and the calibration come from: the drift meter's budget in training
        # (:class:`~agl_trl.regularizers.meter.DriftMeter`), else a budget of these settings that no reading moves
        self.budget = budget if budget is not None else DriftBudget.from_settings(self.settings)

    # ----------------------------------------------------------------------------------------------- binding
    def bind(self, model: nn.Module) -> list[LoraModule]:
        """Find the model's LoRA modules, verify the artifact against them, and stack the Fisher tensors."""
        modules = find_lora_modules(model)
        self.artifact.verify(model, modules)
        is_diagonal = self.artifact.estimator == "diagonal"
        self._groups = [self._make_group(group, is_diagonal) for group in self._lora.bind(modules)]
        if self.settings.gate == "hard" and self.settings.lambda_collision > 0 and self.settings.mu < 1:
            logger.warning(
                "AGL gate='hard': dW_A is an exact projection, so <dW_A, dW_T> = 0 and E_geo is identically 0 "
                "(documented degeneracy). Use gate='soft' for an informative geodesic term."
            )
        return modules

    def _make_group(self, lora: LoraGroup, is_diagonal: bool) -> _Group:
        modules = lora.modules
        device = modules[0].lora_B.device
        fishers: list[ModuleFisher] = [self.artifact.modules[m.name] for m in modules]

        def vec(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        group = _Group(modules=modules, scale=lora.scale)
        if is_diagonal:
            if any(f.diag is None for f in fishers):
                raise FisherArtifactError("A diagonal Fisher artifact is missing the 'diag' tensor of some module.")
            group.diag = torch.stack([f.diag for f in fishers]).to(device, torch.float32)
            return group
        if any(f.q_out is None or f.q_in is None for f in fishers):
            raise FisherArtifactError(
                "A K-FAC Fisher artifact is missing eigenvectors for some module; re-estimate it."
            )
        k_out = max(f.k_out for f in fishers)
        k_in = max(f.k_in for f in fishers)
        group.q_out = _pad_columns([f.q_out for f in fishers], k_out).to(device, torch.float32)
        group.eig_out = _pad_columns([f.eig_out[None] for f in fishers], k_out)[:, 0].to(device, torch.float32)
        group.q_in = _pad_columns([f.q_in for f in fishers], k_in).to(device, torch.float32)
        group.eig_in = _pad_columns([f.eig_in[None] for f in fishers], k_in)[:, 0].to(device, torch.float32)
        group.tail_out = vec([f.tail_out for f in fishers])
        group.tail_in = vec([f.tail_in for f in fishers])
        group.mean_curvature = vec([f.mean_curvature for f in fishers])
        group.tau = vec([self._tau_state.get(m.name, 0.0) for m in modules])
        # the gate depends only on the artifact and the settings: compute it once, not every step
        group.curvature = F.coordinate_curvature(group.eig_out, group.eig_in)
        group.gate = F.spectral_gate(group.curvature, self.settings.gate_damping, hard=self.settings.gate == "hard")
        return group

    def _ensure_bound(self, model: nn.Module) -> None:
        bound = self._lora.bound_to
        if bound is None:
            self.bind(model)
            return
        current = tuple(id(m.layer) for m in find_lora_modules(model)) if self._calls % 1000 == 0 else bound
        if current != bound:
            self.bind(model)

    @property
    def modules(self) -> list[LoraModule]:
        return [m for g in self._groups for m in g.modules]

    # ---------------------------------------------------------------------------------------------- the loss
    def __call__(self, model: nn.Module, step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted AGL penalty (fp32 scalar, differentiable w.r.t. the LoRA factors) and its metrics.

        ``step`` is the optimizer step: E_riem's random sub-block and the adaptive tau are keyed on it, so every
        micro-batch of one accumulation window sees the same penalty (GA-invariant) and a resumed run continues
        identically. Defaults to a call counter.
        """
        self._ensure_bound(model)
        step = self._calls if step is None else int(step)
        self._calls += 1
        s = self.settings
        # lambda per nat of calibrated estimated KL; agl_align_penalty=False: R_A measured, not added
        weight = self.budget.weight * self.budget.scale * 0.5 if s.align_penalty else 0.0
        device = self._groups[0].scale.device
        zero = torch.zeros((), device=device)
        total = zero
        collision = s.lambda_collision > 0  # E_riem and tau exist only for the opt-in collision terms
        sums = dict.fromkeys(
            ("r_align", "r_task", "e_riem", "e_geo") if collision else ("r_align", "r_task", "e_geo"), zero
        )
        means = dict.fromkeys(("leakage", "tau") if collision else ("leakage",), zero)
        n_modules = sum(len(g.modules) for g in self._groups)
        read = self._lora.read(grad=torch.is_grad_enabled())
        for index, (group, (B, A)) in enumerate(zip(self._groups, read.factors, strict=True)):  # noqa: N806
            if group.diag is not None:
                r_align = self._r_align(group, B, A)
                if weight > 0:
                    total = total + weight * r_align.sum()
                sums["r_align"] = sums["r_align"] + r_align.detach().sum()
                continue
            rotated = F.rotate(B, A, group.scale, group.q_out, group.q_in)
            gate, curvature = group.gate, group.curvature
            r_align = self._r_align(group, B, A, rotated)
            parts = F.decompose(rotated.coords, gate, curvature, rotated.norm_sq)
            r_task = F.task_trust_region(parts, group.mean_curvature)
            e_geo = F.fisher_overlap(parts)
            if weight > 0:
                total = total + weight * r_align.sum()
            if s.lambda_task > 0:
                total = total + s.lambda_task * r_task.sum()
            if collision:
                self._apply_pending_tau(group, step)
                rows, cols = self._sample_block(group, step, index)
                e_riem, magnitudes = F.riemannian_overlap(
                    B, A, group.scale, group.q_out, group.q_in, gate * rotated.coords, rows, cols, group.tau, s.beta
                )
                e_riem = group.mean_curvature * e_riem  # |dW_A| |dW_T| entries -> nats, like R_T
                self._record_tau(group, magnitudes, step)
                total = total + s.lambda_collision * (s.mu * e_riem.sum() + (1 - s.mu) * e_geo.sum())
                sums["e_riem"] = sums["e_riem"] + e_riem.detach().sum()
            with torch.no_grad():
                sums["r_align"] = sums["r_align"] + r_align.detach().sum()
                sums["r_task"] = sums["r_task"] + r_task.detach().sum()
                sums["e_geo"] = sums["e_geo"] + e_geo.detach().sum()
                leak = torch.sqrt(parts.norm_align_sq / (parts.norm_sq + F.EPS))
                means["leakage"] = means["leakage"] + leak.sum()
                if collision:
                    means["tau"] = means["tau"] + group.tau.sum()
        total = self._lora.attach(total, read)  # ZeRO-3: the gradient reaches the parameters through their hooks
        values = torch.stack([total.detach(), *sums.values(), *(v / max(n_modules, 1) for v in means.values())])
        numbers = values.tolist()
        metrics = dict(zip(("loss", *sums.keys(), *means.keys()), numbers, strict=True))
        metrics["kl_estimate"] = self.budget.scale * 0.5 * metrics["r_align"]  # calibrated, nats per probe token
        metrics["lambda"] = self.budget.weight
        bad = [k for k, v in metrics.items() if not (v == v and abs(v) != float("inf"))]
        if bad:
            raise FloatingPointError(
                f"AGL regulariser produced non-finite values ({', '.join(bad)}) at step {step}. The LoRA weights "
                "have diverged (check the learning rate and the task loss) or the Fisher artifact is corrupted."
            )
        return total, metrics

    @torch.no_grad()
    def raw_kl_estimate(self, model: nn.Module) -> float:
        """0.5 vec(dW)^T F vec(dW) summed over modules at the current weights (uncalibrated nats; no side effects)."""
        self._ensure_bound(model)
        total = 0.0
        for group, (B, A) in zip(self._groups, self._lora.read(grad=False).factors, strict=True):  # noqa: N806
            total += float(self._r_align(group, B, A).sum())
        return 0.5 * total

    @staticmethod
    def _r_align(group: _Group, B: torch.Tensor, A: torch.Tensor, rotated: Any = None) -> torch.Tensor:  # noqa: N803
        """R_A per module: vec(dW)^T F vec(dW), the diagonal form for a diagonal artifact, else the whole K-FAC
        quadratic form (the discarded spectrum through the factors' tail means, so no direction of dW is free:
        docs/method.md, "No way around it")."""
        if group.diag is not None:
            return F.diagonal_quadratic_form(B, A, group.scale, group.diag)
        return F.kfac_quadratic_form(
            B, A, group.scale, group.q_out, group.eig_out, group.q_in, group.eig_in, group.tail_out, group.tail_in,
            rotated=rotated,
        )  # fmt: skip

    def _sample_block(self, group: _Group, step: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh row/column indices per optimizer step (same on every rank and every micro-batch)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + index)
        m = len(group.modules)
        d_out, d_in = group.modules[0].d_out, group.modules[0].d_in
        n_r, n_c = min(self.settings.riem_block, d_out), min(self.settings.riem_block, d_in)

        # with replacement (no sort of d indices per module); a block as large as the matrix takes every index
        def draw(dim: int, size: int) -> torch.Tensor:
            if size >= dim:
                return torch.arange(dim).expand(m, dim)
            return torch.randint(0, dim, (m, size), generator=generator)

        rows, cols = draw(d_out, n_r), draw(d_in, n_c)
        device = group.scale.device
        return rows.to(device), cols.to(device)

    def _ema(self, tau: torch.Tensor, quantile: torch.Tensor) -> torch.Tensor:
        momentum = self.settings.tau_momentum
        return torch.where(tau > 0, momentum * tau + (1 - momentum) * quantile, quantile)

    def _record_tau(self, group: _Group, magnitudes: torch.Tensor, step: int) -> None:
        """Remember this step's quantile of |dW| (first micro-batch only); it is folded into tau next step."""
        if group.pending_step != step:
            # quantile of at most 512 entries of the (already random) block; the EMA over steps smooths it
            sample = magnitudes[:, :512]
            k = max(1, min(sample.shape[1], round(self.settings.tau_quantile * sample.shape[1])))
            group.pending = torch.kthvalue(sample, k, dim=1).values
            group.pending_step = step

    def _apply_pending_tau(self, group: _Group, step: int) -> None:
        """tau <- EMA of the quantiles of earlier steps; every micro-batch of a step therefore sees the same tau."""
        if group.pending is not None and group.pending_step != step:
            group.tau = self._ema(group.tau, group.pending)
            group.pending, group.pending_step = None, None

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (adaptive tau per module, call counter) for checkpoints."""
        tau = dict(self._tau_state)
        for group in self._groups:
            if group.tau is not None:
                current = group.tau if group.pending is None else self._ema(group.tau, group.pending)
                tau.update(zip((m.name for m in group.modules), current.tolist(), strict=True))
        return {"tau": tau, "calls": self._calls, "seed": self.seed, "budget": self.budget.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._tau_state = {k: float(v) for k, v in state.get("tau", {}).items()}
        self._calls = int(state.get("calls", 0))
        self.seed = int(state.get("seed", self.seed))
        if "budget" in state:
            self.budget.load_state_dict(state["budget"])
        for group in self._groups:
            if group.tau is not None:
                group.tau = torch.tensor(
                    [self._tau_state.get(m.name, 0.0) for m in group.modules], device=group.tau.device
                )
                group.pending, group.pending_step = None, None
