"""The during-training baselines (L2, AsFT, EWC, KL to reference) against explicit computations on tiny models."""

from __future__ import annotations

import pytest
import torch

from agl_trl.baselines import AsFTPenalty, KLToReferencePenalty, L2UpdatePenalty, ewc_fisher_settings, ewc_penalty
from agl_trl.lora import adapters_disabled, find_lora_modules
from tests.helpers.lora_models import (
    assert_nonzero_grads,
    directions_of,
    explicit_update,
    lora_grads,
    make_lora_model,
    random_deltas,
)


def assert_zero_at_init(penalty) -> None:
    model, _ = make_lora_model(zero_b=True)
    loss, _ = penalty(model, 0)
    assert float(loss.detach()) == 0.0
    if loss.requires_grad:
        assert all(float(g.abs().max()) == 0.0 for g in lora_grads(model, loss).values())


# --------------------------------------------------------------------------------------------------------------- L2
def test_l2_equals_explicit_sum_of_squared_update_norms() -> None:
    model, _ = make_lora_model()
    penalty = L2UpdatePenalty(lambda_l2=0.3)
    loss, metrics = penalty(model, 0)
    expected = sum(float(explicit_update(m).square().sum()) for m in find_lora_modules(model))
    assert expected > 0
    assert float(loss.detach()) == pytest.approx(0.3 * expected, rel=1e-5)
    assert metrics["update_norm_sq"] == pytest.approx(expected, rel=1e-5)
    assert_nonzero_grads(model, loss)
    assert_zero_at_init(L2UpdatePenalty(lambda_l2=0.3))


def test_l2_lambda_zero_leaves_no_graph_and_bad_lambda_is_refused() -> None:
    model, _ = make_lora_model()
    loss, metrics = L2UpdatePenalty(lambda_l2=0.0)(model, 0)
    assert float(loss) == 0.0 and not loss.requires_grad and metrics["update_norm_sq"] > 0
    with pytest.raises(ValueError, match="lambda_l2"):
        L2UpdatePenalty(lambda_l2=-1.0)


# ------------------------------------------------------------------------------------------------------------- AsFT
@pytest.mark.parametrize("matrix", ["projector", "paper"])
def test_asft_equals_explicit_orthogonal_energy(matrix: str) -> None:
    model, _ = make_lora_model()
    deltas = random_deltas(model, rank=3)
    penalty = AsFTPenalty(directions_of(deltas), lambda_asft=2.0, matrix=matrix)
    loss, metrics = penalty(model, 0)
    expected = 0.0
    for m in find_lora_modules(model):
        v = deltas[m.name]
        if matrix == "projector":
            u = torch.linalg.svd(v, full_matrices=False)[0][:, :3]
            mat = u @ u.T
        else:
            mat = v @ v.T / torch.linalg.norm(v)
        dw = explicit_update(m)
        expected += float((dw - mat @ dw).square().sum())
    assert expected > 0
    assert float(loss.detach()) == pytest.approx(2.0 * expected, rel=1e-4)
    assert metrics["orthogonal_sq"] == pytest.approx(expected, rel=1e-4)
    assert 0 < metrics["orthogonal_share"] <= 1.0 + 1e-6 or matrix == "paper"
    assert_nonzero_grads(model, loss)
    assert_zero_at_init(AsFTPenalty(directions_of(deltas), lambda_asft=2.0, matrix=matrix))


def test_asft_projector_vanishes_for_an_update_inside_the_alignment_subspace() -> None:
    model, _ = make_lora_model()
    deltas = random_deltas(model, rank=3)
    directions = directions_of(deltas)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in find_lora_modules(model):  # B = U R: dW's columns lie in span(U)
            m.lora_B.copy_(directions[m.name].u[:, :3] @ torch.randn(3, m.rank, generator=generator))
    loss, metrics = AsFTPenalty(directions, lambda_asft=1.0)(model, 0)
    assert metrics["orthogonal_share"] < 1e-5
    full = sum(float(explicit_update(m).square().sum()) for m in find_lora_modules(model))
    assert float(loss.detach()) < 1e-5 * full


def test_asft_refuses_missing_directions_and_unknown_matrix() -> None:
    model, _ = make_lora_model()
    directions = directions_of(random_deltas(model))
    directions.pop(next(iter(directions)))
    with pytest.raises(ValueError, match="no alignment direction"):
        AsFTPenalty(directions)(model, 0)
    with pytest.raises(ValueError, match="matrix"):
        AsFTPenalty(directions, matrix="other")


# -------------------------------------------------------------------------------------------------------------- EWC
def test_ewc_is_the_diagonal_fisher_quadratic_form(tmp_path) -> None:
    from agl_trl.fisher import FisherSettings, estimate_fisher

    model, tokenizer = make_lora_model()
    probe = [{"prompt": f"question {i} about the sea", "response": f"the sea is blue {i}"} for i in range(4)]
    settings = ewc_fisher_settings(FisherSettings(targets="empirical", batch_size=4, max_length=32, max_samples=4))
    assert settings.estimator == "diagonal"
    artifact = estimate_fisher(model, tokenizer, probe, settings, False)
    penalty = ewc_penalty(artifact, lambda_ewc=3.0)
    loss, metrics = penalty(model, 0)
    expected = sum(
        float((artifact.modules[m.name].diag * explicit_update(m).square()).sum()) for m in find_lora_modules(model)
    )
    assert expected > 0
    assert float(loss.detach()) == pytest.approx(3.0 * 0.5 * expected, rel=1e-4)  # EWC's lambda / 2
    assert metrics["r_align"] == pytest.approx(expected, rel=1e-4)
    assert_nonzero_grads(model, loss)
    assert_zero_at_init(ewc_penalty(artifact, lambda_ewc=3.0))  # same base weights: the artifact verifies
    kfac = estimate_fisher(
        model, tokenizer, probe, FisherSettings(targets="empirical", max_length=32, max_rank=4), False
    )
    with pytest.raises(ValueError, match="diagonal Fisher"):
        ewc_penalty(kfac)


# ------------------------------------------------------------------------------------------------ KL to reference
def kl_penalty(model, tokenizer, **kwargs) -> KLToReferencePenalty:
    prompts = ["Write a poem about the sea.", "What is two plus two?", "Name a colour.", "Tell me a story."]
    return KLToReferencePenalty.from_prompts(model, tokenizer, prompts, max_new_tokens=6, **kwargs)


def test_kl_to_reference_is_zero_at_init_and_positive_after_perturbation(monkeypatch) -> None:
    from agl_trl.baselines import kl_reference

    model, tokenizer = make_lora_model(zero_b=True)
    penalty = kl_penalty(model, tokenizer, lambda_kl=1.0, batch_size=4)
    aligned_forwards = []
    real = kl_reference.adapter_log_probs
    monkeypatch.setattr(
        kl_reference,
        "adapter_log_probs",
        lambda m, b, aligned, **k: aligned_forwards.append(aligned) or real(m, b, aligned, **k),
    )
    loss, metrics = penalty(model, 0)
    assert abs(float(loss.detach())) < 1e-6 and metrics["kl_ref"] == pytest.approx(0.0, abs=1e-6)
    from tests.helpers.lora_models import randomise_lora_b

    randomise_lora_b(model, seed=5, std=0.2)
    loss, metrics = penalty(model, 0)
    assert float(loss.detach()) > 1e-4
    assert_nonzero_grads(model, loss)
    assert aligned_forwards == [True, False, False]  # the aligned side of a batch is computed once and kept


def test_kl_to_reference_equals_an_explicit_two_model_computation() -> None:
    model, tokenizer = make_lora_model()
    penalty = kl_penalty(model, tokenizer, lambda_kl=0.5, batch_size=2)
    loss, metrics = penalty(model, 4)  # step 4 -> batch (4 // 1) % 2 = 0
    sequences = penalty.batch_for_step(4)
    per_token = []
    for seq in sequences:  # one unpadded sequence at a time, reference = adapters disabled
        ids = torch.tensor([list(seq.prompt_ids) + list(seq.response_ids)])
        with torch.no_grad():
            with adapters_disabled(model):
                ref = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            cur = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        start = len(seq.prompt_ids) - 1
        per_token.append((ref.exp() * (ref - cur)).sum(-1)[start:])
    expected = float(torch.cat(per_token).mean())
    assert expected > 0
    assert metrics["kl_ref"] == pytest.approx(expected, rel=1e-4)
    assert float(loss.detach()) == pytest.approx(0.5 * expected, rel=1e-4)


def test_kl_to_reference_every_k_steps_and_same_batch_within_a_step() -> None:
    model, tokenizer = make_lora_model()
    penalty = kl_penalty(model, tokenizer, lambda_kl=1.0, batch_size=2, every=2)
    skipped, metrics = penalty(model, 1)
    assert float(skipped) == 0.0 and not skipped.requires_grad and metrics == {}
    first, again, other = (float(penalty(model, step)[0].detach()) for step in (2, 2, 4))  # 2, 2: two micro-batches
    assert first == again > 0
    assert other != first
    with pytest.raises(ValueError, match="non-empty"):
        KLToReferencePenalty([], lambda_kl=1.0)
