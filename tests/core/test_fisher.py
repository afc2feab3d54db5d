"""Fisher estimation: the KL meaning of the K-FAC form, estimators, sketches, determinism, QLoRA."""

from __future__ import annotations

import pytest
import torch

from agl_trl.fisher import FisherSettings, estimate_fisher
from agl_trl.fisher.probe import anchor_records, build_sequences, meter_records
from agl_trl.lora import adapters_disabled, find_lora_modules
from agl_trl.teacher_forcing import collate
from tests.helpers.fisher import measured_kl, predicted_kl, task_direction
from tests.helpers.lora_models import make_lora_model


def _set_random_update(modules, seed: int, scale: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    for m in modules:
        m.layer.lora_A[m.adapter].weight.data = torch.randn(m.rank, m.d_in, generator=generator)
        m.layer.lora_B[m.adapter].weight.data = torch.randn(m.d_out, m.rank, generator=generator)
        m.layer.scaling[m.adapter] = scale


# positions="response" (the estimator before agl_fisher_positions existed), recorded from that code at commit 28a1da3
# on make_lora_model(), PROBE[:6], batch_size=4: per module [trace_out, trace_in, *eig_out, *eig_in] (K-FAC) or
# [sum, max] of the diagonal. The option must reproduce it exactly (up to float round-off across BLAS builds).
# fmt: off
_RESPONSE_GOLDEN = {
    "kfac": {
        "model.layers.0.self_attn.q_proj": [
            2.1303496, 31.999197, 0.42076537, 0.29284865, 0.1805753, 0.1559234, 0.13718665, 0.10657332, 0.10179938,
            0.085111, 5.7525859, 4.2506242, 3.4668028, 2.8385139, 2.1038392, 2.0246751, 1.8683749, 1.6958312
        ],
        "model.layers.1.mlp.down_proj": [
            0.30931572, 47.120781, 0.026745941, 0.023220686, 0.021403737, 0.018375212, 0.016805559, 0.014908793,
            0.013332765, 0.012571958, 9.4571762, 6.4371457, 5.0096521, 3.8133492, 2.9922488, 2.7437701, 2.4926212,
            1.7434014
        ],
    },
    "diagonal": {
        "model.layers.0.self_attn.q_proj": [
            68.169442, 0.556912
        ],
        "model.layers.1.mlp.down_proj": [
            13.523108, 0.080952339
        ],
    },
    "nystrom": {
        "model.layers.0.self_attn.q_proj": [
            2.1303496, 31.999197, 0.42076537, 0.29284865, 0.1805753, 0.1559234, 5.7525859, 4.2506242, 3.4668028,
            2.8385139
        ],
        "model.layers.1.mlp.down_proj": [
            0.30931572, 47.120781, 0.026745941, 0.023220686, 0.021403737, 0.018375212, 9.4451723, 6.4263844,
            5.0034652, 3.7957904
        ],
    },
}
# fmt: on


@pytest.mark.parametrize("case", sorted(_RESPONSE_GOLDEN))
def test_response_positions_reproduce_the_estimator_before_the_positions_option(probe_records, case):
    model, tokenizer = make_lora_model()
    options = {
        "kfac": dict(max_rank=8),
        "diagonal": dict(estimator="diagonal"),
        "nystrom": dict(max_rank=4, sketch="nystrom"),
    }
    settings = FisherSettings(positions="response", batch_size=4, **options[case])
    artifact = estimate_fisher(model, tokenizer, probe_records[:6], settings, show_progress=False)
    assert artifact.metadata["tokens"] == 142
    for name, expected in _RESPONSE_GOLDEN[case].items():
        m = artifact.modules[name]
        if m.diag is not None:
            got = [float(m.diag.double().sum()), float(m.diag.double().abs().max())]
        else:
            got = [m.trace_out, m.trace_in, *m.eig_out.tolist(), *m.eig_in.tolist()]
        assert got == pytest.approx(expected, rel=2e-5, abs=1e-8), name


def test_kfac_form_is_the_kl_per_token_in_nats_where_kfac_is_exact():
    """One module feeding the logits directly and one response token, positions="response": K-FAC drops nothing,
    so 0.5 vec(dW)^T F vec(dW) must equal the measured KL up to Monte Carlo error of the sampled targets.

    (positions="all" is not exact here: g_t = 0 at every position but one, while S_in averages x x^T over all the
    prompt's positions; measured prediction/KL ~1.9. Its gain is on real stacks, where prompt outputs move the
    response through attention: test_all_positions_predict_the_kl_better_than_response_positions.)"""
    model, tokenizer = make_lora_model(targets=["model.layers.1.mlp.down_proj"])
    records = [{"prompt": "tell me about the sea", "response": ""}]  # the only response token is EOS
    settings = FisherSettings(
        positions="response", max_rank=64, explained_variance=1.0, max_samples=10**6, batch_size=250
    )
    artifact = estimate_fisher(model, tokenizer, records * 2500, settings, show_progress=False)
    assert artifact.metadata["tokens"] == 2500
    modules = find_lora_modules(model)
    for seed in range(3):
        _set_random_update(modules, seed, scale=1e-3)
        measured, predicted = measured_kl(model, tokenizer, records), predicted_kl(artifact, modules)
        assert measured > 0
        assert predicted / measured == pytest.approx(1.0, abs=0.10), (seed, measured, predicted)


@pytest.mark.parametrize(("positions", "low", "high"), [("all", 0.7, 1.4), ("response", 0.4, 0.7)])
def test_kfac_form_predicts_kl_on_all_linear_within_the_stated_tolerance(probe_records, positions, low, high):
    """All layers, many positions: K-FAC drops cross-position and cross-module terms. Measured on this model for a
    random update, prediction / KL is 0.78-0.94 with positions="all" (the default) and 0.51-0.56 with "response";
    the tolerances are those figures with a margin, in the quadratic regime (ratio constant in eps)."""
    model, tokenizer = make_lora_model()
    settings = FisherSettings(
        positions=positions, max_rank=64, explained_variance=1.0, max_samples=10**6, batch_size=16
    )
    artifact = estimate_fisher(model, tokenizer, probe_records * 8, settings, show_progress=False)
    modules = find_lora_modules(model)
    for seed in range(2):
        ratios = []
        for eps in (1e-3, 3e-3):
            _set_random_update(modules, seed, scale=eps)
            ratios.append(predicted_kl(artifact, modules) / measured_kl(model, tokenizer, probe_records))
        print(positions, seed, ratios)
        assert all(low <= r <= high for r in ratios), ratios
        assert ratios[0] == pytest.approx(ratios[1], rel=0.1)  # quadratic regime: both scale as eps^2


def _geomean(values: list[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).log().mean().exp())


def test_all_positions_predict_the_kl_better_than_response_positions(probe_records):
    """measured KL / predicted 0.5 vec(dW)^T F vec(dW) (every direction kept), both position sets, same model.

    Task-like updates (lora_B = -eps * grad of an SFT loss on other sequences): K-FAC underestimates, as the update
    is coherent across positions and modules (terms K-FAC drops). Measured here, per direction (A seeds 0-3):
    "all" 2.4-4.6 (geometric mean 3.4), "response" 5.8-6.7 (6.3); on model seeds 1 and 2, "all" 1.0-1.7 and
    3.1-4.2, "response" 2.4-3.6 and 5.9-7.1. Random updates: "all" 0.88-1.29 (1.07), "response" 1.35-1.97 (1.68).
    Bounds: the geometric mean within a factor 5 of 1 (task-like) and 1.25 (random), which "response" fails."""
    model, tokenizer = make_lora_model(zero_b=True)
    model.eval()
    modules = find_lora_modules(model)
    common = dict(max_rank=64, explained_variance=1.0, max_samples=10**6, batch_size=16)
    artifacts = {
        p: estimate_fisher(model, tokenizer, probe_records * 8, FisherSettings(positions=p, **common), False)
        for p in ("all", "response")
    }
    assert artifacts["all"].metadata["tokens"] == artifacts["response"].metadata["tokens"]
    assert artifacts["all"].metadata["tokens_all"] > artifacts["all"].metadata["tokens"]

    def ratios() -> dict[str, float]:
        measured = measured_kl(model, tokenizer, probe_records)
        return {p: measured / predicted_kl(a, modules) for p, a in artifacts.items()}

    task: dict[str, list[float]] = {"all": [], "response": []}
    for seed in range(4):
        direction = task_direction(model, tokenizer, modules, seed)
        by_eps = []
        for eps in (0.01, 0.03):
            for m, g in zip(modules, direction, strict=True):
                m.layer.lora_B[m.adapter].weight.data = -eps * g
            by_eps.append(ratios())
        print("task-like", seed, by_eps)
        for p in task:
            assert by_eps[0][p] == pytest.approx(by_eps[1][p], rel=0.03)  # second-order regime
            task[p].append(by_eps[0][p])
        assert by_eps[0]["all"] < by_eps[0]["response"]
    random: dict[str, list[float]] = {"all": [], "response": []}
    for seed in range(3):
        _set_random_update(modules, seed, scale=1e-3)
        got = ratios()
        print("random", seed, got)
        for p in random:
            random[p].append(got[p])
    print(
        "geometric means: task-like",
        {p: _geomean(v) for p, v in task.items()},
        "random",
        {p: _geomean(v) for p, v in random.items()},
    )
    assert 1 / 5 <= _geomean(task["all"]) <= 5 and all(0.5 <= r <= 5 for r in task["all"]), task
    assert not 1 / 5 <= _geomean(task["response"]) <= 5, task  # the bound can fail: "response" does
    assert 1 / 1.25 <= _geomean(random["all"]) <= 1.25 and all(0.75 <= r <= 1.4 for r in random["all"]), random
    assert not 1 / 1.25 <= _geomean(random["response"]) <= 1.25, random


def test_artifacts_without_the_positions_setting_still_load_and_verify(lora_model, probe_records, tmp_path):
    """Artifacts saved before agl_fisher_positions (no "positions" in their settings, no "tokens_all")."""
    import json

    from agl_trl.fisher import FisherArtifact

    model, tokenizer = lora_model
    settings = FisherSettings(positions="response", max_rank=4)
    artifact = estimate_fisher(model, tokenizer, probe_records[:4], settings, show_progress=False)
    assert artifact.metadata["settings"]["positions"] == "response"
    assert artifact.metadata["tokens_all"] == artifact.metadata["tokens"]
    artifact.save(tmp_path / "old")
    meta_path = tmp_path / "old" / "fisher.json"
    meta = json.loads(meta_path.read_text())
    del meta["settings"]["positions"], meta["tokens_all"]
    meta_path.write_text(json.dumps(meta))
    loaded = FisherArtifact.load(tmp_path / "old")
    loaded.verify(model)
    for name, module in artifact.modules.items():
        for key, tensor in module.tensors().items():
            torch.testing.assert_close(loaded.modules[name].tensors()[key], tensor)


def test_estimation_is_deterministic_and_shares_inputs(lora_model, probe_records):
    model, tokenizer = lora_model
    settings = FisherSettings(max_rank=8, batch_size=4)
    first = estimate_fisher(model, tokenizer, probe_records, settings, show_progress=False)
    second = estimate_fisher(model, tokenizer, probe_records, settings, show_progress=False)
    for name, module in first.modules.items():
        for key, tensor in module.tensors().items():
            torch.testing.assert_close(tensor, second.modules[name].tensors()[key], msg=f"{name}::{key}")
    q = first.modules["model.layers.0.self_attn.q_proj"]
    k = first.modules["model.layers.0.self_attn.k_proj"]
    torch.testing.assert_close(q.q_in, k.q_in)  # q/k/v read the same input: one shared S_in
    assert q.trace_in == k.trace_in
    assert not torch.equal(q.eig_out[:2], k.eig_out[:2])
    for module in first.modules.values():
        assert 1 <= module.k_out <= 8 and 1 <= module.k_in <= 8
        assert module.trace_out > 0 and module.trace_in > 0
        assert float(module.eig_out.sum()) <= module.trace_out * (1 + 1e-4)
        assert bool((module.eig_out[:-1] >= module.eig_out[1:] - 1e-6).all())  # sorted descending


def test_estimation_leaves_model_state_and_gradients_untouched(lora_model, probe_records):
    model, tokenizer = lora_model
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    estimate_fisher(model, tokenizer, probe_records, FisherSettings(max_rank=4), show_progress=False)
    assert model.training
    for name, param in model.named_parameters():
        assert param.grad is None, name
        assert torch.equal(param, before[name]), name
    assert not any(layer._disable_adapters for layer in (m.layer for m in find_lora_modules(model)))


def test_explained_variance_and_cap_choose_k(lora_model, probe_records):
    model, tokenizer = lora_model
    low = estimate_fisher(model, tokenizer, probe_records, FisherSettings(explained_variance=0.5), show_progress=False)
    high = estimate_fisher(
        model, tokenizer, probe_records, FisherSettings(explained_variance=0.99), show_progress=False
    )
    capped = estimate_fisher(model, tokenizer, probe_records, FisherSettings(max_rank=2), show_progress=False)
    assert sum(m.k_in for m in low.modules.values()) < sum(m.k_in for m in high.modules.values())
    assert max(max(m.k_in, m.k_out) for m in capped.modules.values()) == 2
    for module in low.modules.values():
        assert float(module.eig_in.sum()) >= 0.5 * module.trace_in - 1e-6


def test_nystrom_sketch_matches_exact_top_eigenpairs(probe_records):
    model, tokenizer = make_lora_model(hidden_size=64, intermediate_size=128)
    common = dict(max_rank=4, explained_variance=1.0, targets="empirical")
    exact = estimate_fisher(model, tokenizer, probe_records, FisherSettings(sketch="exact", **common), False)
    sketch = estimate_fisher(model, tokenizer, probe_records, FisherSettings(sketch="nystrom", **common), False)
    assert exact.metadata["sketch"] == "exact" and sketch.metadata["sketch"] == "nystrom"
    for name, module in exact.modules.items():
        other = sketch.modules[name]
        # random tiny models have flat spectra (the sketch's worst case): loose end-to-end bounds here,
        # tight ones on a decaying spectrum in test_nystrom_factor_on_decaying_spectrum
        for kept, reference in ((other.eig_in, module.eig_in), (other.eig_out, module.eig_out)):
            torch.testing.assert_close(kept[:2], reference[:2], rtol=0.15, atol=1e-7)
        overlap = (other.q_in[:, 0] @ module.q_in[:, 0]).abs()
        assert overlap > 0.9, (name, float(overlap))
        assert other.trace_in == pytest.approx(module.trace_in, rel=1e-5)


def test_nystrom_factor_on_decaying_spectrum():
    from agl_trl.fisher.estimate import _Factor

    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(3000, 256, generator=generator) * torch.logspace(0, -3, 256)
    width = 4 * 16 + 32  # the default sketch width for max_rank=16
    exact, sketch = _Factor(256, None, 0, torch.device("cpu")), _Factor(256, width, 0, torch.device("cpu"))
    for chunk in rows.split(500):
        exact.add(chunk)
        sketch.add(chunk)
    q_exact, e_exact, t_exact = exact.top_eigenpairs(3000, 16, 1.0)
    q_sketch, e_sketch, t_sketch = sketch.top_eigenpairs(3000, 16, 1.0)
    torch.testing.assert_close(e_sketch[:8], e_exact[:8], rtol=0.03, atol=0)
    assert t_sketch == pytest.approx(t_exact, rel=1e-6)
    assert bool(((q_sketch[:, :4] * q_exact[:, :4]).sum(0).abs() > 0.98).all())
    assert sketch.moment is None and exact.moment is None  # buffers freed after decomposition


def test_auto_sketch_switches_to_nystrom_over_the_memory_budget(lora_model, probe_records):
    model, tokenizer = lora_model
    tiny_budget = FisherSettings(memory_budget_gb=1e-9, max_rank=2)
    assert estimate_fisher(model, tokenizer, probe_records, tiny_budget, False).metadata["sketch"] == "nystrom"
    assert estimate_fisher(model, tokenizer, probe_records, FisherSettings(), False).metadata["sketch"] == "exact"


@pytest.mark.parametrize("positions", ["all", "response"])
@pytest.mark.parametrize("name", ["model.layers.1.self_attn.o_proj", "model.layers.0.self_attn.v_proj"])
def test_diagonal_and_kfac_agree_with_brute_force_per_token_gradients(lora_model, probe_records, positions, name):
    """Independent check: per-token gradients via retain_grad on one module's output (empirical targets).

    x, g over the collected positions (every non-padding one for "all"); S_in = sum x x^T / N_all,
    S_out = sum g g^T / N_resp, diagonal = sum g^2 (x^2)^T / N_resp (N_all = N_resp for "response")."""
    model, tokenizer = lora_model
    settings = dict(targets="empirical", max_rank=64, explained_variance=1.0, positions=positions)
    diag = estimate_fisher(model, tokenizer, probe_records, FisherSettings(estimator="diagonal", **settings), False)
    kfac = estimate_fisher(model, tokenizer, probe_records, FisherSettings(**settings), False)
    layer = next(m.layer for m in find_lora_modules(model) if m.name == name)
    captured = {}
    handle = layer.register_forward_hook(lambda _m, args, out: captured.update(x=args[0], y=out))
    batch = collate(build_sequences(tokenizer, probe_records, 512), tokenizer.pad_token_id, torch.device("cpu"))
    predicts = torch.zeros_like(batch["response_mask"], dtype=torch.bool)
    predicts[:, :-1] = batch["response_mask"][:, 1:].bool()
    model.eval()
    with adapters_disabled(model):
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
        captured["y"].retain_grad()
        targets = batch["input_ids"][:, 1:][predicts[:, :-1]]
        torch.log_softmax(logits[predicts], -1).gather(1, targets[:, None]).sum().backward()
    handle.remove()
    collected = batch["attention_mask"].bool() if positions == "all" else predicts
    x, g = captured["x"].detach()[collected].double(), captured["y"].grad[collected].double()
    n, n_all = int(predicts.sum()), x.shape[0]
    assert (kfac.metadata["tokens"], kfac.metadata["tokens_all"]) == (n, n_all)
    assert (n_all > n) == (positions == "all")
    expected_diag = (g.square().T @ x.square()) / n
    torch.testing.assert_close(diag.modules[name].diag.double(), expected_diag, rtol=1e-4, atol=1e-9)
    module = kfac.modules[name]
    for side, expected in (("out", g.T @ g / n), ("in", x.T @ x / n_all)):
        q, eig = getattr(module, f"q_{side}").double(), getattr(module, f"eig_{side}").double()
        assert getattr(module, f"trace_{side}") == pytest.approx(float(torch.trace(expected)), rel=1e-4)
        rebuilt = q @ torch.diag(eig) @ q.T
        torch.testing.assert_close(rebuilt, expected, rtol=1e-3, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize(
    ("n", "fisher", "meter", "want_meter", "want_anchor"),
    [
        (20, 12, 4, list(range(16, 20)), list(range(12))),  # enough held out: the meter's come after the Fisher's
        (10, 12, 4, list(range(6, 10)), list(range(6))),  # too few: the meter takes the last 4, the anchor the rest
        (10, 8, 4, list(range(6, 10)), list(range(6))),  # 2 held out < 4: same fallback
        (4, 12, 4, list(range(4)), []),  # nothing is left for the anchor
        (10, 6, 0, [], list(range(6))),  # no meter
    ],
)
def test_the_kl_anchor_never_reads_the_meters_records(n, fisher, meter, want_meter, want_anchor):
    records = [{"prompt": str(i), "response": "r"} for i in range(n)]
    chosen, _ = meter_records(records, fisher, meter) if meter else ([], 0)
    anchor = anchor_records(records, fisher, meter)
    assert [int(r["prompt"]) for r in chosen] == want_meter
    assert [int(r["prompt"]) for r in anchor] == want_anchor


def test_missing_responses_are_generated_by_the_model(lora_model):
    model, tokenizer = lora_model
    records = [{"prompt": "hello there"}, {"prompt": "the sea", "response": "is blue"}]
    artifact = estimate_fisher(model, tokenizer, records, FisherSettings(max_new_tokens=5), show_progress=False)
    assert artifact.metadata["probe_records"] == 2
    assert artifact.metadata["tokens"] > len(tokenizer("is blue")["input_ids"]) + 1


def test_requires_lora_layers(probe_records):
    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama()
    with pytest.raises(ValueError, match="LoRA"):
        estimate_fisher(model, tokenizer, probe_records, show_progress=False)


@pytest.mark.parametrize(
    ("field", "value"), [("estimator", "full"), ("targets", "labels"), ("max_rank", 0), ("explained_variance", 1.5)]
)
def test_settings_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"agl_fisher_{field}"):
        FisherSettings(**{field: value}).validate()
