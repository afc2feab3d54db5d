"""The AGL maths against brute force: materialised Kronecker Fisher, explicit dW, explicit projections."""

from __future__ import annotations

import pytest
import torch

from agl_trl.regularizers import functional as F

D_OUT, D_IN, RANK = 7, 5, 3


def _psd(dim: int, generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    return x @ x.T / dim + 0.05 * torch.eye(dim, dtype=torch.float64)


def _eig_desc(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors.flip(1)[:, :k], values.flip(0)[:k]


@pytest.fixture
def layer():
    """A random LoRA layer (B, A, s) and Kronecker factors, in float64 for exact comparisons."""
    g = torch.Generator().manual_seed(0)
    B = torch.randn(D_OUT, RANK, generator=g, dtype=torch.float64)  # noqa: N806
    A = torch.randn(RANK, D_IN, generator=g, dtype=torch.float64)  # noqa: N806
    return B, A, 0.7, _psd(D_OUT, g), _psd(D_IN, g)


def _batched(B, A, s, s_out, s_in, k_out, k_in):  # noqa: N803
    q_out, eig_out = _eig_desc(s_out, k_out)
    q_in, eig_in = _eig_desc(s_in, k_in)
    return (
        B[None],
        A[None],
        torch.tensor([s], dtype=torch.float64),
        q_out[None],
        eig_out[None],
        q_in[None],
        eig_in[None],
    )


def _explicit_parts(B, A, s, q_out, eig_out, q_in, eig_in, damping=0.1, hard=False):  # noqa: N803
    dw = s * B @ A
    coords = q_out.T @ dw @ q_in
    lam = eig_out[:, None] * eig_in[None, :]
    gate = (lam > 0).double() if hard else lam / (lam + damping * lam.max())
    dw_align = q_out @ (gate * coords) @ q_in.T
    return dw, dw_align, dw - dw_align


@pytest.mark.parametrize(("k_out", "k_in"), [(D_OUT, D_IN), (3, 2)])
def test_r_align_equals_materialised_kronecker_quadratic_form(layer, k_out, k_in):
    B, A, s, s_out, s_in = layer  # noqa: N806
    Bb, Ab, sb, q_out, eig_out, q_in, eig_in = _batched(B, A, s, s_out, s_in, k_out, k_in)  # noqa: N806
    coords = F.lora_coordinates(Bb, Ab, sb, q_out, q_in)
    curvature = F.coordinate_curvature(eig_out, eig_in)
    gate = F.spectral_gate(curvature, 0.1)
    parts = F.decompose(coords, gate, curvature, F.update_norm_sq(Bb, Ab, sb))
    _, dw_align, _ = _explicit_parts(B, A, s, q_out[0], eig_out[0], q_in[0], eig_in[0])
    fisher = torch.kron(s_out, s_in)  # row-major vec: vec(dW)^T (S_out (x) S_in) vec(dW) = tr(S_out dW S_in dW^T)
    brute = dw_align.flatten() @ fisher @ dw_align.flatten()
    torch.testing.assert_close(parts.r_align[0], brute, rtol=1e-10, atol=1e-12)


def test_decomposition_identity_norms_and_inner_product(layer):
    B, A, s, s_out, s_in = layer  # noqa: N806
    Bb, Ab, sb, q_out, eig_out, q_in, eig_in = _batched(B, A, s, s_out, s_in, 4, 3)  # noqa: N806
    coords = F.lora_coordinates(Bb, Ab, sb, q_out, q_in)
    curvature = F.coordinate_curvature(eig_out, eig_in)
    parts = F.decompose(coords, F.spectral_gate(curvature, 0.1), curvature, F.update_norm_sq(Bb, Ab, sb))
    dw, dw_align, dw_task = _explicit_parts(B, A, s, q_out[0], eig_out[0], q_in[0], eig_in[0])
    torch.testing.assert_close(dw_align + dw_task, dw)
    torch.testing.assert_close(parts.norm_sq[0], dw.square().sum())
    torch.testing.assert_close(parts.norm_align_sq[0], dw_align.square().sum())
    torch.testing.assert_close(parts.norm_task_sq[0], dw_task.square().sum())
    torch.testing.assert_close(parts.inner_align_task[0], (dw_align * dw_task).sum())
    cos_sq = (dw_align * dw_task).sum() ** 2 / (dw_align.square().sum() * dw_task.square().sum())
    torch.testing.assert_close(F.geodesic_separation(parts)[0], cos_sq)
    assert F.geodesic_separation(parts)[0] > 1e-6  # soft gate: the two parts are not orthogonal
    # E_geo: the parts' inner product in the kept block's Fisher, tr(S_out,k dW_A S_in,k dW_T^T)
    kept_out = q_out[0] @ torch.diag(eig_out[0]) @ q_out[0].T
    kept_in = q_in[0] @ torch.diag(eig_in[0]) @ q_in[0].T
    torch.testing.assert_close(F.fisher_overlap(parts)[0], torch.trace(kept_out @ dw_align @ kept_in @ dw_task.T))
    assert F.fisher_overlap(parts)[0] > 0


def test_hard_gate_is_an_idempotent_projector_and_makes_e_geo_vanish(layer):
    B, A, s, s_out, s_in = layer  # noqa: N806
    Bb, Ab, sb, q_out, eig_out, q_in, eig_in = _batched(B, A, s, s_out, s_in, 4, 3)  # noqa: N806
    _, dw_align, dw_task = _explicit_parts(B, A, s, q_out[0], eig_out[0], q_in[0], eig_in[0], hard=True)
    project = q_out[0] @ q_out[0].T @ dw_align @ q_in[0] @ q_in[0].T
    torch.testing.assert_close(project, dw_align)  # P(P dW) = P dW
    coords = F.lora_coordinates(Bb, Ab, sb, q_out, q_in)
    curvature = F.coordinate_curvature(eig_out, eig_in)
    gate = F.spectral_gate(curvature, 0.1, hard=True)
    parts = F.decompose(coords, gate, curvature, F.update_norm_sq(Bb, Ab, sb))
    assert abs(float(parts.inner_align_task[0])) < 1e-12
    assert float(F.geodesic_separation(parts)[0]) < 1e-20
    assert abs(float((dw_align * dw_task).sum())) < 1e-12


@pytest.mark.parametrize(("k_out", "k_in"), [(D_OUT, D_IN), (3, 2), (1, 4)])
def test_kfac_quadratic_form_with_mean_tail(layer, k_out, k_in):
    B, A, s, s_out, s_in = layer  # noqa: N806
    Bb, Ab, sb, q_out, eig_out, q_in, eig_in = _batched(B, A, s, s_out, s_in, k_out, k_in)  # noqa: N806

    def with_tail(matrix, q, values):
        rest = matrix.shape[0] - values.numel()
        tail = (torch.trace(matrix) - values.sum()) / rest if rest else torch.tensor(0.0, dtype=torch.float64)
        approx = q @ torch.diag(values) @ q.T + tail * (torch.eye(matrix.shape[0], dtype=torch.float64) - q @ q.T)
        return approx, tail

    approx_out, tail_out = with_tail(s_out, q_out[0], eig_out[0])
    approx_in, tail_in = with_tail(s_in, q_in[0], eig_in[0])
    dw = s * B @ A
    expected = torch.trace(approx_out @ dw @ approx_in @ dw.T)
    got = F.kfac_quadratic_form(Bb, Ab, sb, q_out, eig_out, q_in, eig_in, tail_out[None], tail_in[None])
    torch.testing.assert_close(got[0], expected)
    if k_out == D_OUT and k_in == D_IN:  # every direction kept: the exact K-FAC form
        torch.testing.assert_close(got[0], torch.trace(s_out @ dw @ s_in @ dw.T))


def test_riemannian_overlap_matches_explicit_sub_block(layer):
    B, A, s, s_out, s_in = layer  # noqa: N806
    Bb, Ab, sb, q_out, eig_out, q_in, eig_in = _batched(B, A, s, s_out, s_in, 4, 3)  # noqa: N806
    coords = F.lora_coordinates(Bb, Ab, sb, q_out, q_in)
    gate = F.spectral_gate(F.coordinate_curvature(eig_out, eig_in), 0.1)
    rows, cols = torch.tensor([[0, 3, 5]]), torch.tensor([[1, 4]])
    tau = torch.tensor([0.5], dtype=torch.float64)
    value, magnitudes = F.riemannian_overlap(Bb, Ab, sb, q_out, q_in, gate * coords, rows, cols, tau, beta=4.0)
    dw, dw_align, dw_task = _explicit_parts(B, A, s, q_out[0], eig_out[0], q_in[0], eig_in[0])
    a, t, w = (m[rows[0]][:, cols[0]] for m in (dw_align, dw_task, dw))
    eta = 1 + 4.0 * torch.sigmoid((w.abs() - 0.5) / 0.25)
    area = (D_OUT * D_IN) / (3 * 2)  # the sampled block's sum, scaled to an estimate of the whole matrix's
    expected = area * (eta * (a * t).abs()).sum()
    torch.testing.assert_close(value[0], expected)
    torch.testing.assert_close(magnitudes[0], w.abs().flatten())
    assert float(value[0]) > 0


def _all_terms(B, A, s, q_out, eig_out, q_in, eig_in, hard=False):  # noqa: N803
    coords = F.lora_coordinates(B, A, s, q_out, q_in)
    curvature = F.coordinate_curvature(eig_out, eig_in)
    gate = F.spectral_gate(curvature, 0.1, hard=hard)
    parts = F.decompose(coords, gate, curvature, F.update_norm_sq(B, A, s))
    rows, cols = torch.arange(D_OUT)[None], torch.arange(D_IN)[None]
    e_riem, _ = F.riemannian_overlap(B, A, s, q_out, q_in, gate * coords, rows, cols, torch.tensor([0.1]), 4.0)
    return {
        "r_align": parts.r_align.sum(),
        "r_task": F.task_trust_region(parts, torch.tensor([1.3])).sum(),
        "e_geo": F.fisher_overlap(parts).sum(),
        "e_riem": e_riem.sum(),
    }


def test_every_term_is_nonzero_with_nonzero_gradient_in_soft_mode(layer):
    B, A, s, s_out, s_in = layer  # noqa: N806
    _, _, sb, q_out, eig_out, q_in, eig_in = (t.float() for t in _batched(B, A, s, s_out, s_in, 4, 3))
    for name in ("r_align", "r_task", "e_geo", "e_riem"):
        b = B.float()[None].clone().requires_grad_(True)
        a = A.float()[None].clone().requires_grad_(True)
        value = _all_terms(b, a, sb, q_out, eig_out, q_in, eig_in)[name]
        value.backward()
        assert float(value.detach()) > 1e-6, name
        assert float(b.grad.norm()) > 1e-6 and float(a.grad.norm()) > 1e-6, name


def test_zero_update_gives_zero_terms_and_finite_zero_gradients(layer):
    _, A, s, s_out, s_in = layer  # noqa: N806
    B0 = torch.zeros(D_OUT, RANK, dtype=torch.float64)  # noqa: N806  (LoRA init: B = 0)
    _, _, sb, q_out, eig_out, q_in, eig_in = (t.float() for t in _batched(B0, A, s, s_out, s_in, 4, 3))
    b = B0.float()[None].clone().requires_grad_(True)
    a = A.float()[None].clone().requires_grad_(True)
    terms = _all_terms(b, a, sb, q_out, eig_out, q_in, eig_in)
    torch.stack(list(terms.values())).sum().backward()
    for name, value in terms.items():
        assert float(value) == 0.0, name
    assert torch.isfinite(b.grad).all() and torch.isfinite(a.grad).all()
    assert float(b.grad.abs().max()) == 0.0 and float(a.grad.abs().max()) == 0.0


def test_update_norm_and_diagonal_form_match_explicit(layer):
    B, A, s, _, _ = layer  # noqa: N806
    sb = torch.tensor([s], dtype=torch.float64)
    dw = s * B @ A
    torch.testing.assert_close(F.update_norm_sq(B[None], A[None], sb)[0], dw.square().sum())
    diag = torch.rand(D_OUT, D_IN, dtype=torch.float64)
    torch.testing.assert_close(F.diagonal_quadratic_form(B[None], A[None], sb, diag[None])[0], (diag * dw**2).sum())
