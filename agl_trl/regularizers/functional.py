"""The AGL maths on LoRA factors, as pure tensor functions (see docs/method.md for the derivations).

Every function works on a *group* of M modules of the same shape at once (a leading batch dimension), so the
regulariser issues a handful of batched kernels per step instead of dozens per module. Shapes:

- ``B``: (M, d_out, r), ``A``: (M, r, d_in), ``scale``: (M,) -- the LoRA update is dW = scale * B @ A.
- ``q_out``: (M, d_out, k_o) and ``eig_out``: (M, k_o); ``q_in``: (M, d_in, k_i) and ``eig_in``: (M, k_i):
  the kept eigenvectors/eigenvalues of the Kronecker factors S_out and S_in. Groups whose modules keep different k
  are zero-padded; a padded direction has eigenvalue 0, so it contributes nothing.

Nothing here forms dW except :func:`riemannian_overlap`, which forms a small random sub-block of it.
All maths is fp32: callers pass fp32 tensors (``LoraModule.factors`` casts bf16 adapters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-30  # only guards 0/0; every ratio below is scale-free, so EPS must be far below any real value


def _batched_trace_product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """tr(X @ Y) for batches of square matrices, without forming the product."""
    return (x * y.transpose(-1, -2)).sum(dim=(-1, -2))


@dataclass
class RotatedUpdate:
    """The LoRA factors and the small products every term reuses, computed once per step.

    ``b_rot = Q_o^T B`` (M, k_o, r), ``a_rot = A Q_i`` (M, r, k_i), ``gram_b = B^T B`` and ``gram_a = A A^T``
    (M, r, r), ``coords`` = C = s * b_rot @ a_rot (M, k_o, k_i), ``norm_sq`` = ||dW||^2 (M,).
    """

    B: torch.Tensor  # noqa: N815
    A: torch.Tensor  # noqa: N815
    scale: torch.Tensor
    b_rot: torch.Tensor
    a_rot: torch.Tensor
    gram_b: torch.Tensor
    gram_a: torch.Tensor
    coords: torch.Tensor
    norm_sq: torch.Tensor


def rotate(
    B: torch.Tensor, A: torch.Tensor, scale: torch.Tensor, q_out: torch.Tensor, q_in: torch.Tensor
) -> RotatedUpdate:  # noqa: N803
    """Project the update onto the kept eigenbases in O(r k (d_in + d_out)) per module; dW is never formed."""
    b_rot = q_out.transpose(-1, -2) @ B
    a_rot = A @ q_in
    gram_b = B.transpose(-1, -2) @ B
    gram_a = A @ A.transpose(-1, -2)
    return RotatedUpdate(
        B=B,
        A=A,
        scale=scale,
        b_rot=b_rot,
        a_rot=a_rot,
        gram_b=gram_b,
        gram_a=gram_a,
        coords=scale[:, None, None] * (b_rot @ a_rot),
        norm_sq=scale**2 * _batched_trace_product(gram_b, gram_a),
    )


def lora_coordinates(
    B: torch.Tensor, A: torch.Tensor, scale: torch.Tensor, q_out: torch.Tensor, q_in: torch.Tensor
) -> torch.Tensor:  # noqa: N803
    """C = Q_o^T dW Q_i = s (Q_o^T B)(A Q_i): the update in the kept eigenbasis, (M, k_o, k_i)."""
    return scale[:, None, None] * ((q_out.transpose(-1, -2) @ B) @ (A @ q_in))


def coordinate_curvature(eig_out: torch.Tensor, eig_in: torch.Tensor) -> torch.Tensor:
    """lam_pq = b_p * a_q, the Fisher eigenvalue of coordinate (p, q) under F = S_out (x) S_in: (M, k_o, k_i)."""
    return eig_out[:, :, None] * eig_in[:, None, :]


def spectral_gate(curvature: torch.Tensor, damping: float, hard: bool = False) -> torch.Tensor:
    """G_pq = lam_pq / (lam_pq + gamma), gamma = damping * max(lam) per module.

    The soft gate makes the alignment part dW_A a *non-orthogonal* weighting of dW, which is what keeps the
    collision terms informative. ``hard=True`` gives the exact projector onto the kept block (G = 1 where lam > 0);
    then <dW_A, dW_T> = 0 identically and E_geo carries no signal (documented degeneracy).
    """
    if hard:
        return (curvature > 0).to(curvature.dtype)
    gamma = damping * curvature.amax(dim=(-1, -2), keepdim=True)
    return curvature / (curvature + gamma + EPS)


def update_norm_sq(B: torch.Tensor, A: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """||dW||_F^2 = s^2 tr((B^T B)(A A^T)) with r x r work: (M,)."""
    gram_b = B.transpose(-1, -2) @ B
    gram_a = A @ A.transpose(-1, -2)
    return scale**2 * _batched_trace_product(gram_b, gram_a)


@dataclass
class Decomposition:
    """Per-module quantities of dW = dW_A + dW_T, all of shape (M,)."""

    r_align: torch.Tensor  # vec(dW_A)^T F vec(dW_A) = sum lam (G C)^2
    norm_sq: torch.Tensor  # ||dW||^2
    norm_align_sq: torch.Tensor  # ||dW_A||^2 = sum (G C)^2
    norm_task_sq: torch.Tensor  # ||dW_T||^2
    inner_align_task: torch.Tensor  # <dW_A, dW_T> = sum G (1 - G) C^2
    fisher_inner: torch.Tensor  # <dW_A, dW_T>_F = vec(dW_A)^T F vec(dW_T) = sum lam G (1 - G) C^2


def decompose(
    coords: torch.Tensor, gate: torch.Tensor, curvature: torch.Tensor, norm_sq: torch.Tensor
) -> Decomposition:
    """Norms and inner products of the two parts of dW from its coordinates, in k x k work."""
    gated = gate * coords
    c_sq = coords.square()
    norm_align_sq = gated.square().sum(dim=(-1, -2))
    inner_full_align = (gate * c_sq).sum(dim=(-1, -2))  # <dW, dW_A>
    norm_task_sq = (norm_sq - 2.0 * inner_full_align + norm_align_sq).clamp_min(0.0)
    return Decomposition(
        r_align=(curvature * gated.square()).sum(dim=(-1, -2)),
        norm_sq=norm_sq,
        norm_align_sq=norm_align_sq,
        norm_task_sq=norm_task_sq,
        inner_align_task=inner_full_align - norm_align_sq,
        fisher_inner=(curvature * gate * (1.0 - gate) * c_sq).sum(dim=(-1, -2)),
    )


def geodesic_separation(parts: Decomposition) -> torch.Tensor:
    """cos^2 angle(dW_A, dW_T) = <dW_A, dW_T>^2 / (||dW_A||^2 ||dW_T||^2): (M,), in [0, 1]. A diagnostic only: it is
    scale-free, so its gradient is orthogonal to dW and grows as 1 / ||dW|| near dW = 0 (:func:`fisher_overlap` is
    the penalised term)."""
    return parts.inner_align_task.square() / (parts.norm_align_sq * parts.norm_task_sq + EPS)


def fisher_overlap(parts: Decomposition) -> torch.Tensor:
    """E_geo = <dW_A, dW_T>_F = vec(dW_A)^T F vec(dW_T) = sum lam G (1 - G) C^2 >= 0: (M,), in nats.

    The two parts' overlap in Fisher units: it is large where one coordinate of dW is shared by both parts (soft
    gate values between 0 and 1) on a curved direction, and zero for the hard gate (exact projection). Quadratic
    in dW: its gradient is bounded by 2 max(lam) ||dW|| and vanishes at dW = 0, unlike the scale-free cosine.
    """
    return parts.fisher_inner


def task_trust_region(parts: Decomposition, curvature_scale: torch.Tensor) -> torch.Tensor:
    """R_T = h ||dW_T||^2 with h = tr(S_out) tr(S_in) / (d_out d_in), the mean curvature: (M,), in nats."""
    return curvature_scale * parts.norm_task_sq


def kfac_quadratic_form(
    B: torch.Tensor,  # noqa: N803
    A: torch.Tensor,  # noqa: N803
    scale: torch.Tensor,
    q_out: torch.Tensor,
    eig_out: torch.Tensor,
    q_in: torch.Tensor,
    eig_in: torch.Tensor,
    tail_out: torch.Tensor,
    tail_in: torch.Tensor,
    rotated: RotatedUpdate | None = None,
) -> torch.Tensor:
    """vec(dW)^T (S_out (x) S_in) vec(dW) = tr(S_out dW S_in dW^T) with the factors' discarded spectrum
    replaced by its mean (``tail_out``/``tail_in``: (M,), the average eigenvalue outside the kept directions).

    With every direction kept (tails 0) this is the exact K-FAC quadratic form, so ``0.5 *`` it is the
    second-order estimate of KL(p_aligned || p_finetuned) per response token, in nats. r x r and r x k work only.
    """
    u = rotated if rotated is not None else rotate(B, A, scale, q_out, q_in)
    c_sq = u.coords.square()
    s2 = (u.scale**2)[:, None]
    # squared row norms of Q_o^T dW (k_o,) and squared column norms of dW Q_i (k_i,)
    rows_sq = s2 * ((u.b_rot @ u.gram_a) * u.b_rot).sum(-1)
    cols_sq = s2 * ((u.gram_b @ u.a_rot) * u.a_rot).sum(-2)
    kept = (coordinate_curvature(eig_out, eig_in) * c_sq).sum(dim=(-1, -2))
    out_kept_in_tail = (eig_out * (rows_sq - c_sq.sum(-1))).sum(-1)
    in_kept_out_tail = (eig_in * (cols_sq - c_sq.sum(-2))).sum(-1)
    both_tail = u.norm_sq - rows_sq.sum(-1) - cols_sq.sum(-1) + c_sq.sum(dim=(-1, -2))
    return kept + tail_in * out_kept_in_tail + tail_out * in_kept_out_tail + tail_out * tail_in * both_tail


def riemannian_overlap(
    B: torch.Tensor,  # noqa: N803
    A: torch.Tensor,  # noqa: N803
    scale: torch.Tensor,
    q_out: torch.Tensor,
    q_in: torch.Tensor,
    gated_coords: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    tau: torch.Tensor,
    beta: float,
    temperature_ratio: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E_riem (before the curvature scale): sum over dW of eta |a t|, estimated from a sampled sub-block, (M,).

    ``rows`` (M, n_r) and ``cols`` (M, n_c) index the sub-block (drawn uniformly, so d_out d_in / (n_r n_c) times its
    sum is an unbiased estimate of the whole matrix's); ``a`` = dW_A, ``t`` = dW_T restricted to it. The metric
    eta = 1 + beta * sigmoid((|dW| - tau) / T), T = temperature_ratio * tau, weights large entries more; it is a
    metric, so it is treated as a constant (detached). Coordinate-wise interference, quadratic in dW (the caller
    multiplies by the mean curvature h to put it in nats, like R_T): the gradient vanishes at dW = 0. Returns
    (E_riem (M,), |dW| sub-block entries (M, n_r * n_c), detached, for the adaptive tau).
    """
    batch = torch.arange(B.shape[0], device=B.device)[:, None]
    b_rows = B[batch, rows]  # (M, n_r, r)
    a_cols = A.transpose(-1, -2)[batch, cols].transpose(-1, -2)  # (M, r, n_c)
    dw = scale[:, None, None] * (b_rows @ a_cols)  # (M, n_r, n_c)
    q_rows = q_out[batch, rows]  # (M, n_r, k_o)
    q_cols = q_in[batch, cols]  # (M, n_c, k_i)
    dw_align = q_rows @ gated_coords @ q_cols.transpose(-1, -2)
    dw_task = dw - dw_align
    magnitude = dw.detach().abs()
    temperature = (temperature_ratio * tau).clamp_min(torch.finfo(tau.dtype).tiny)[:, None, None]
    eta = 1.0 + beta * torch.sigmoid((magnitude - tau[:, None, None]) / temperature)
    area = (B.shape[1] * A.shape[2]) / (rows.shape[1] * cols.shape[1])
    return area * (eta * (dw_align * dw_task).abs()).sum(dim=(-1, -2)), magnitude.flatten(1)


def diagonal_quadratic_form(
    B: torch.Tensor, A: torch.Tensor, scale: torch.Tensor, fisher_diag: torch.Tensor
) -> torch.Tensor:  # noqa: N803
    """sum F_diag * dW^2 (EWC on the LoRA update; forms dW). ``fisher_diag``: (M, d_out, d_in). Returns (M,)."""
    dw = scale[:, None, None] * (B @ A)
    return (fisher_diag * dw.square()).sum(dim=(-1, -2))
