"""Safe LoRA and the alignment matrices: explicit C = V V^T / ||V||_F, exact layer selection, untouched layers."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from agl_trl.baselines import (
    alignment_directions,
    load_directions,
    safe_lora_cosines,
    safe_lora_project,
    save_directions,
)
from agl_trl.lora import find_lora_modules
from tests.helpers.lora_models import directions_of, explicit_update, make_lora_model, random_deltas


def explicit_c(v: torch.Tensor) -> torch.Tensor:
    return v @ v.T / torch.linalg.norm(v)


def explicit_cosine(c: torch.Tensor, dw: torch.Tensor) -> float:
    cdw = c @ dw
    return float((cdw * dw).sum() / (cdw.norm() * dw.norm()))


def test_cosines_equal_the_explicit_definition() -> None:
    model, _ = make_lora_model()
    deltas = random_deltas(model, rank=3)
    cosines = safe_lora_cosines(model, directions_of(deltas))
    modules = find_lora_modules(model)
    assert list(cosines) == [m.name for m in modules]
    for m in modules:
        expected = explicit_cosine(explicit_c(deltas[m.name]), explicit_update(m))
        assert cosines[m.name] == pytest.approx(expected, abs=1e-5)
    assert len({round(c, 4) for c in cosines.values()}) > 1  # the selection tests below need distinct cosines


def test_threshold_projects_exactly_the_layers_at_or_below_it_and_leaves_the_others_untouched() -> None:
    model, _ = make_lora_model()
    deltas = random_deltas(model, rank=3)
    original = copy.deepcopy(model.state_dict())
    cosines = safe_lora_cosines(model, directions_of(deltas))
    threshold = sorted(cosines.values())[len(cosines) // 2]
    projected, report = safe_lora_project(model, directions_of(deltas), threshold=threshold)
    expected = {name for name, c in cosines.items() if c <= threshold}
    assert 0 < len(expected) < len(cosines)
    assert set(report.projected) == expected and report.threshold == threshold
    assert report.fraction_projected == pytest.approx(len(expected) / len(cosines))
    # inplace=False: the input model is unchanged
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())
    before = {m.name: m for m in find_lora_modules(model)}
    for m in find_lora_modules(projected):
        old = before[m.name]
        assert torch.equal(m.lora_A, old.lora_A), "Safe LoRA must leave A unchanged"
        if m.name in expected:
            target = explicit_c(deltas[m.name]) @ old.lora_B.detach()
            assert torch.allclose(m.lora_B, target, atol=1e-6, rtol=1e-4), m.name
            assert torch.allclose(explicit_update(m), explicit_c(deltas[m.name]) @ explicit_update(old), atol=1e-6)
        else:
            assert torch.equal(m.lora_B, old.lora_B), f"{m.name} is above the threshold and must not change"


def test_fraction_projects_the_lowest_cosines_and_inplace_modifies_the_model() -> None:
    model, _ = make_lora_model()
    directions = directions_of(random_deltas(model, rank=3))
    cosines = safe_lora_cosines(model, directions)
    ranked = sorted(cosines, key=cosines.get)
    result, report = safe_lora_project(model, directions, fraction=0.25, inplace=True)
    n = round(0.25 * len(cosines))
    assert result is model
    assert report.projected == ranked[:n]
    assert report.threshold == cosines[ranked[n - 1]]
    changed = {
        m.name for m in find_lora_modules(model) if safe_lora_cosines(model, directions)[m.name] != cosines[m.name]
    }
    assert changed <= set(ranked[:n]) and changed
    with pytest.raises(ValueError, match="exactly one"):
        safe_lora_project(model, directions)
    with pytest.raises(ValueError, match="exactly one"):
        safe_lora_project(model, directions, threshold=0.1, fraction=0.1)


def test_zero_update_is_never_projected() -> None:
    model, _ = make_lora_model(zero_b=True)
    directions = directions_of(random_deltas(model))
    cosines = safe_lora_cosines(model, directions)
    assert all(math.isnan(c) for c in cosines.values())
    _, report = safe_lora_project(model, directions, fraction=1.0)
    assert report.projected == []


def test_alignment_directions_from_an_aligned_and_an_unaligned_model(tmp_path) -> None:
    """aligned = unaligned + a merged low-rank delta: V and C are recovered exactly; save/load round-trips."""
    from agl_trl.models import tiny_llama

    unaligned, _ = tiny_llama(seed=0, initializer_range=0.2)
    aligned = copy.deepcopy(unaligned)
    peft_model, _ = make_lora_model(seed=0)  # same base weights (seed 0), used for the module names
    deltas = random_deltas(peft_model, rank=2, seed=11)
    with torch.no_grad():
        for name, v in deltas.items():
            aligned.get_submodule(name).weight.add_(v)
        for m in find_lora_modules(peft_model):  # the PEFT model's base becomes the aligned model
            m.layer.get_base_layer().weight.add_(deltas[m.name])
    from_plain = alignment_directions(aligned, unaligned, names=list(deltas), rank=8)
    from_peft = alignment_directions(peft_model, unaligned, rank=8)
    assert set(from_plain) == set(from_peft) == set(deltas)
    for name, v in deltas.items():
        for d in (from_plain[name], from_peft[name]):
            assert d.u.shape[1] == 2, "numerically-zero directions are dropped"
            assert d.explained == pytest.approx(1.0, abs=1e-5)
            c = d.u @ torch.diag(d.s.square()) @ d.u.T / d.frobenius
            assert torch.allclose(c, explicit_c(v), atol=1e-5)
    save_directions(from_plain, tmp_path)
    loaded = load_directions(tmp_path)
    for name, d in from_plain.items():
        assert torch.equal(loaded[name].u, d.u) and loaded[name].frobenius == d.frobenius
    with pytest.raises(ValueError, match="no linear weight"):
        alignment_directions(aligned, unaligned, names=["model.layers.0.nope"])
    with pytest.raises(FileNotFoundError):
        load_directions(tmp_path / "missing")


def test_large_alignment_matrix_uses_the_randomised_svd_and_stays_exact() -> None:
    """min(d_out, d_in) > 4 k + 16 takes the svd_lowrank path (SmolLM2's shapes): C is still exact for rank(V) <= k."""
    from agl_trl.baselines import direction_from_delta

    generator = torch.Generator().manual_seed(0)
    v = torch.randn(300, 5, generator=generator) @ torch.randn(5, 400, generator=generator)
    state = torch.random.get_rng_state()
    d = direction_from_delta(v, rank=32)
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG must be left untouched"
    assert d.u.shape == (300, 5) and d.explained == pytest.approx(1.0, abs=1e-5)
    c = d.u @ torch.diag(d.s.square()) @ d.u.T / d.frobenius
    assert torch.allclose(c, explicit_c(v), atol=1e-4 * float(explicit_c(v).abs().max()))
