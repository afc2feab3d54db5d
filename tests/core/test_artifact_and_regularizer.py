"""Artifact round trip and every verification error; the bound regulariser on real PEFT models."""

from __future__ import annotations

import json

import pytest
import torch

from agl_trl.fisher import FisherArtifact, FisherArtifactError, FisherSettings, estimate_fisher
from agl_trl.lora import LoraIntrospectionError, canonical_module_name, find_lora_modules
from agl_trl.regularizers import AGLRegularizer, AGLSettings
from agl_trl.regularizers.budget import LAMBDA_INIT
from tests.helpers.lora_models import PROBE, make_lora_model


@pytest.fixture(scope="module")
def estimated():
    model, tokenizer = make_lora_model()
    artifact = estimate_fisher(model, tokenizer, PROBE, FisherSettings(max_rank=8), show_progress=False)
    return model, tokenizer, artifact


def test_round_trip_preserves_every_tensor_and_verifies(estimated, tmp_path):
    model, _, artifact = estimated
    artifact.save(tmp_path / "fisher")
    loaded = FisherArtifact.load(tmp_path / "fisher")
    assert set(loaded.modules) == set(artifact.modules)
    for name, module in artifact.modules.items():
        for key, tensor in module.tensors().items():
            torch.testing.assert_close(loaded.modules[name].tensors()[key], tensor)
        assert loaded.modules[name].trace_out == pytest.approx(module.trace_out)
    meta = json.loads((tmp_path / "fisher" / "fisher.json").read_text())
    for key in ("format_version", "model_fingerprint", "estimator", "settings", "probe_hash", "modules", "sha256"):
        assert key in meta
    assert meta["modules"]["model.layers.0.mlp.up_proj"]["d_out"] == 64
    loaded.verify(model)  # no error


def test_verify_rejects_an_artifact_from_another_model(estimated, tmp_path):
    _, _, artifact = estimated
    other, _ = make_lora_model(seed=1)
    with pytest.raises(FisherArtifactError, match="another model"):
        artifact.verify(other)
    bigger, _ = make_lora_model(hidden_size=48)
    with pytest.raises(FisherArtifactError, match="hidden_size"):
        artifact.verify(bigger)


def test_verify_rejects_missing_modules(tmp_path):
    model_qv, tokenizer = make_lora_model(targets=["q_proj", "v_proj"])
    artifact = estimate_fisher(model_qv, tokenizer, PROBE[:4], FisherSettings(max_rank=4), show_progress=False)
    model_all, _ = make_lora_model()
    with pytest.raises(FisherArtifactError, match="no entry for .* LoRA module"):
        artifact.verify(model_all)
    artifact.verify(model_qv)
    # the reverse is fine: an all-linear artifact serves a q/v-only adapter
    full = estimate_fisher(model_all, tokenizer, PROBE[:4], FisherSettings(max_rank=4), show_progress=False)
    full.verify(model_qv)


def test_verify_rejects_wrong_shapes(estimated):
    model, _, artifact = estimated
    name = "model.layers.0.self_attn.q_proj"
    original = artifact.modules[name].d_out
    artifact.modules[name].d_out = original + 1
    try:
        with pytest.raises(FisherArtifactError, match="shapes do not match"):
            artifact.verify(model)
    finally:
        artifact.modules[name].d_out = original


def test_load_rejects_corrupted_missing_and_future_artifacts(estimated, tmp_path):
    _, _, artifact = estimated
    directory = artifact.save(tmp_path / "fisher")
    tensors = directory / "fisher.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-10] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(FisherArtifactError, match="checksum"):
        FisherArtifact.load(directory)
    with pytest.raises(FisherArtifactError, match="No Fisher artifact"):
        FisherArtifact.load(tmp_path / "nowhere")
    artifact.save(tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "fisher.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "v" / "fisher.json").write_text(json.dumps(meta))
    with pytest.raises(FisherArtifactError, match="version 99"):
        FisherArtifact.load(tmp_path / "v")
    (tmp_path / "v" / "fisher.json").write_text("{not json")
    with pytest.raises(FisherArtifactError, match="not valid JSON"):
        FisherArtifact.load(tmp_path / "v")


def test_save_is_atomic_and_leaves_no_temporary_files(estimated, tmp_path):
    _, _, artifact = estimated
    artifact.save(tmp_path / "f")
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["fisher.json", "fisher.safetensors"]


def test_regulariser_terms_metrics_and_gradients(estimated):
    model, _, artifact = estimated
    reg = AGLRegularizer(artifact, AGLSettings(lambda_task=0.5, lambda_collision=0.1))  # adaptive lambda: LAMBDA_INIT
    loss, metrics = reg(model, step=0)
    loss.backward()
    for name in ("loss", "r_align", "r_task", "e_riem", "e_geo", "kl_estimate", "leakage"):
        assert metrics[name] > 0, name
    assert 0 < metrics["leakage"] < 1 and metrics["lambda"] == LAMBDA_INIT
    assert metrics["kl_estimate"] == pytest.approx(0.5 * metrics["r_align"])  # uncalibrated until the meter reads
    for module in find_lora_modules(model):
        assert module.lora_B.grad is not None and float(module.lora_B.grad.norm()) > 0
    model.zero_grad()
    s = reg.settings
    assert metrics["loss"] == pytest.approx(
        LAMBDA_INIT * metrics["kl_estimate"]
        + s.lambda_task * metrics["r_task"]
        + s.lambda_collision * (s.mu * metrics["e_riem"] + (1 - s.mu) * metrics["e_geo"]),
        rel=1e-5,
    )


def test_collision_terms_are_opt_in(estimated):
    """By default (lambda_collision 0) E_riem and tau are neither computed nor logged, and mu / beta change nothing;
    with a weight the terms enter the loss."""
    model, _, artifact = estimated
    off, metrics = AGLRegularizer(artifact, AGLSettings(lambda_task=0.5))(model, step=0)
    assert "e_riem" not in metrics and "tau" not in metrics and metrics["e_geo"] > 0  # e_geo: a free diagnostic
    blend, _ = AGLRegularizer(artifact, AGLSettings(lambda_task=0.5, mu=0.0, beta=0.0))(model, step=0)
    on, with_terms = AGLRegularizer(artifact, AGLSettings(lambda_task=0.5, lambda_collision=0.1))(model, step=0)
    assert float(blend) == float(off) and with_terms["e_riem"] > 0
    assert float(on) == pytest.approx(float(off) + 0.1 * 0.5 * (with_terms["e_riem"] + with_terms["e_geo"]), rel=1e-5)


def test_regulariser_equals_per_module_sum_whatever_the_grouping(estimated):
    """Batched groups (modules of equal shape stacked) must give what module-by-module maths gives."""
    from agl_trl.regularizers import functional as F

    model, _, artifact = estimated
    reg = AGLRegularizer(artifact, AGLSettings(lambda_align=2.0, lambda_collision=0.0, lambda_task=0.3))
    loss, _ = reg(model, step=0)
    expected = torch.zeros(())
    for m in find_lora_modules(model):
        f = artifact.modules[m.name]
        B, A, s = m.factors()  # noqa: N806
        sc = torch.tensor([s])
        coords = F.lora_coordinates(B[None], A[None], sc, f.q_out[None], f.q_in[None])
        curvature = F.coordinate_curvature(f.eig_out[None], f.eig_in[None])
        parts = F.decompose(coords, F.spectral_gate(curvature, 0.1), curvature, F.update_norm_sq(B[None], A[None], sc))
        tails = torch.tensor([f.tail_out]), torch.tensor([f.tail_in])
        full = F.kfac_quadratic_form(
            B[None], A[None], sc, f.q_out[None], f.eig_out[None], f.q_in[None], f.eig_in[None], *tails
        )
        expected = expected + 2.0 * 0.5 * full.sum() + 0.3 * f.mean_curvature * parts.norm_task_sq.sum()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)
    assert len(reg._groups) < len(find_lora_modules(model))  # really grouped


def test_all_lambdas_zero_gives_an_exact_zero_without_gradient(estimated):
    model, _, artifact = estimated
    reg = AGLRegularizer(artifact, AGLSettings(lambda_align=0, lambda_task=0, lambda_collision=0))
    loss, metrics = reg(model, step=0)
    assert not loss.requires_grad and float(loss) == 0.0
    assert metrics["r_align"] > 0  # still measured and logged


def test_zero_update_at_step_zero_is_zero_and_finite():
    model, tokenizer = make_lora_model(zero_b=True)
    artifact = estimate_fisher(model, tokenizer, PROBE[:4], FisherSettings(max_rank=4), show_progress=False)
    loss, metrics = AGLRegularizer(artifact)(model, step=0)
    loss.backward()
    assert float(loss) == 0.0 and all(v == 0.0 for k, v in metrics.items() if k not in ("tau", "lambda"))
    for module in find_lora_modules(model):
        assert torch.isfinite(module.lora_B.grad).all() and torch.isfinite(module.lora_A.grad).all()


def test_hard_gate_logs_the_degeneracy_and_zeroes_e_geo(estimated, caplog):
    model, _, artifact = estimated
    with caplog.at_level("WARNING"):
        AGLRegularizer(artifact, AGLSettings(gate="hard"))(model, step=0)  # collision terms off (the default)
    assert "E_geo" not in caplog.text
    reg = AGLRegularizer(artifact, AGLSettings(gate="hard", lambda_collision=0.1))
    with caplog.at_level("WARNING"):
        _, metrics = reg(model, step=0)
    assert "E_geo is identically 0" in caplog.text
    assert metrics["e_geo"] < 1e-8 and metrics["e_riem"] > 0


def test_every_term_is_quadratic_so_its_gradient_vanishes_with_the_update(estimated):
    """The collision terms used to be scale-free cosines whose gradient grew as 1/||dW||; every term is now
    quadratic in dW: halving the update halves the penalty's gradient."""
    model, _, artifact = estimated
    reg = AGLRegularizer(artifact, AGLSettings(lambda_align=1.0, lambda_task=1.0, lambda_collision=10.0))
    modules = find_lora_modules(model)
    saved = [m.lora_B.data.clone() for m in modules]
    norms = []
    try:
        for factor in (1.0, 0.5, 1e-3):
            for m, b in zip(modules, saved, strict=True):
                m.lora_B.data = factor * b
            model.zero_grad()
            loss, _ = reg(model, step=0)
            loss.backward()
            norms.append(float(torch.sqrt(sum(m.lora_B.grad.square().sum() for m in modules))))
    finally:
        for m, b in zip(modules, saved, strict=True):
            m.lora_B.data = b
        model.zero_grad()
    assert norms[1] == pytest.approx(0.5 * norms[0], rel=0.02) and norms[2] == pytest.approx(1e-3 * norms[0], rel=0.02)


def test_budget_calibrates_once_and_adapts_lambda_towards_the_budget():
    from agl_trl.regularizers.budget import STEP_UP, DriftBudget

    budget = DriftBudget(budget=0.1)
    assert budget.weight == LAMBDA_INIT and budget.scale == 1.0
    first = budget.observe(measured=0.3, estimate=0.1)  # 3x the budget, estimate 3x too low
    assert budget.calibration == pytest.approx(3.0) and first["kl_ratio"] == pytest.approx(1.0)
    assert budget.lam == pytest.approx(LAMBDA_INIT * 3.0)
    second = budget.observe(measured=0.6, estimate=0.1)  # calibration frozen: the ratio reports the miss
    assert budget.calibration == pytest.approx(3.0) and second["kl_ratio"] == pytest.approx(2.0)
    assert budget.lam == pytest.approx(LAMBDA_INIT * 3.0 * min(STEP_UP, 4.5))  # mean of the last two readings
    for _ in range(20):
        budget.observe(measured=0.001, estimate=0.1)  # far under budget: lambda relaxes, slowly, to its floor
    assert 1e-3 <= budget.lam < LAMBDA_INIT
    fixed = DriftBudget(budget=0.1, fixed_lambda=7.0)
    fixed.observe(measured=5.0, estimate=1.0)
    assert fixed.weight == 7.0 and fixed.calibration == pytest.approx(5.0)
    restored = DriftBudget(budget=0.1)
    restored.load_state_dict(budget.state_dict())
    assert restored.state_dict() == budget.state_dict()
    with pytest.raises(FloatingPointError, match="non-finite"):
        budget.observe(float("nan"), 1.0)


def test_lambda_floor_bounds_the_adaptive_weight_from_below():
    from agl_trl.regularizers.budget import DriftBudget

    free = DriftBudget.from_settings(AGLSettings(lambda_floor=0.0))
    floored = DriftBudget.from_settings(AGLSettings(lambda_floor=0.5))
    high = DriftBudget.from_settings(AGLSettings(lambda_floor=3.0))
    assert (free.weight, floored.weight, high.weight) == (LAMBDA_INIT, LAMBDA_INIT, 3.0)  # starts at the floor
    for _ in range(20):  # the anchor holds the meter far under budget: the budget would relax lambda
        for budget in (free, floored, high):
            budget.observe(measured=0.001, estimate=0.1)
    assert free.weight < 0.01 and floored.weight == 0.5 and high.weight == 3.0
    floored.observe(measured=1.0, estimate=0.1)  # over budget: it rises from the floor as before
    assert floored.weight == pytest.approx(0.5 * 4.0)
    with pytest.raises(ValueError, match="agl_lambda_floor.*agl_lambda_align=2"):
        AGLSettings(lambda_align=2.0, lambda_floor=1.0)


def test_an_unset_lambda_floor_is_the_default_with_the_adaptive_weight_and_none_beside_a_fixed_one():
    from agl_trl.regularizers.budget import DriftBudget
    from agl_trl.settings import DEFAULT_LAMBDA_FLOOR

    assert DEFAULT_LAMBDA_FLOOR > 0 and AGLSettings().lambda_floor is None
    adaptive = DriftBudget.from_settings(AGLSettings())
    assert AGLSettings().floor == adaptive.floor == DEFAULT_LAMBDA_FLOOR
    for _ in range(20):
        adaptive.observe(measured=0.001, estimate=0.1)
    assert adaptive.weight == DEFAULT_LAMBDA_FLOOR
    fixed = AGLSettings(lambda_align=2.0)  # no floor error: the floor was not asked for
    assert fixed.floor == 0.0 and DriftBudget.from_settings(fixed).weight == 2.0


def test_align_penalty_off_measures_r_align_without_adding_it(estimated):
    model, _, artifact = estimated
    on = AGLRegularizer(artifact, AGLSettings(lambda_task=0.5))
    off = AGLRegularizer(artifact, AGLSettings(lambda_task=0.5, align_penalty=False))
    loss_on, m_on = on(model, step=0)
    loss_off, m_off = off(model, step=0)
    assert m_off["r_align"] == pytest.approx(m_on["r_align"]) and m_off["r_align"] > 0
    assert m_off["loss"] == pytest.approx(0.5 * m_off["r_task"], rel=1e-5)
    assert m_on["loss"] == pytest.approx(m_off["loss"] + LAMBDA_INIT * m_on["kl_estimate"], rel=1e-5)
    model.zero_grad()


def test_kl_meter_reading_equals_the_kl_over_full_logits_for_uneven_sequences(estimated):
    """The meter projects onto the vocabulary only at positions where some sequence predicts a response token; its
    reading must equal the KL computed from the whole logits, for sequences whose responses start and end apart,
    and with a wrapper whose forward takes no ``logits_to_keep``."""
    from agl_trl.fisher.probe import build_sequences
    from agl_trl.lora import adapters_disabled
    from agl_trl.teacher_forcing import accepts_logits_to_keep, collate, predicting_positions, probe_kl

    model, tokenizer, _ = estimated
    records = [
        {"prompt": "Say hi to my old friend from school, please.", "response": "Hi."},
        {"prompt": "Hi.", "response": "Hello there, it is good to see you again after all this time."},
    ]
    batch = collate(build_sequences(tokenizer, records, 64), tokenizer.pad_token_id or 0, torch.device("cpu"))
    predicts = predicting_positions(batch["response_mask"])
    assert not predicts.any(0).all()  # some positions are skipped, so the sliced path is exercised
    model.eval()
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        tuned = torch.log_softmax(model(**inputs).logits[predicts].float(), -1)
        with adapters_disabled(model):
            reference = torch.log_softmax(model(**inputs).logits[predicts].float(), -1)
    model.train()
    expected = float((reference.exp() * (reference - tuned)).sum(-1).mean())
    assert accepts_logits_to_keep(model)
    assert probe_kl(model, batch) == pytest.approx(expected, rel=1e-5)

    class NoLogitsToKeep(torch.nn.Module):  # a custom model's forward without the argument: whole logits
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, use_cache=False):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)

    wrapper = NoLogitsToKeep(model)
    assert not accepts_logits_to_keep(wrapper)
    assert probe_kl(wrapper, batch) == pytest.approx(expected, rel=1e-5)


def test_kl_meter_reads_zero_at_the_aligned_weights_and_the_regulariser_state_round_trips(estimated):
    from agl_trl.fisher.probe import build_sequences
    from agl_trl.regularizers.meter import DriftMeter
    from agl_trl.teacher_forcing import collate, probe_kl, reference_log_probs

    model, tokenizer, artifact = estimated
    sequences = build_sequences(tokenizer, [{"prompt": "Say hi.", "response": "Hi there, friend."}] * 2, 64)
    batch = collate(sequences, tokenizer.pad_token_id or 0, torch.device("cpu"))
    model.train()
    measured = probe_kl(model, batch)
    assert measured > 0 and model.training  # measured in eval mode, the training mode restored
    cached = reference_log_probs(model, batch)
    assert probe_kl(model, batch, cached) == measured  # the cached aligned side gives the very same reading
    modules = find_lora_modules(model)
    saved = [m.lora_B.data.clone() for m in modules]
    try:
        for m in modules:
            m.lora_B.data.zero_()
        assert probe_kl(model, batch) == pytest.approx(0.0, abs=1e-7)
    finally:
        for m, b in zip(modules, saved, strict=True):
            m.lora_B.data = b
    meter = DriftMeter(AGLSettings())
    reg = AGLRegularizer(artifact, AGLSettings(), budget=meter.budget)  # the regulariser reads the meter's weight
    reading = meter.observe(measured, reg.raw_kl_estimate(model))
    assert reading["kl_ratio"] == pytest.approx(1.0) and reg.budget.calibration > 0
    _, metrics = reg(model, step=1)
    assert metrics["kl_estimate"] == pytest.approx(measured, rel=1e-4)  # calibrated at this very update
    other = AGLRegularizer(artifact, AGLSettings())
    other.load_state_dict(reg.state_dict())
    assert other.budget.state_dict() == reg.budget.state_dict()


def test_same_step_gives_same_penalty_and_tau_moves_only_between_steps(estimated):
    """Gradient accumulation: every micro-batch of one optimizer step must see the identical penalty."""
    model, _, artifact = estimated
    reg = AGLRegularizer(artifact, AGLSettings(lambda_collision=0.1))  # tau belongs to the collision terms
    first, _ = reg(model, step=3)
    second, _ = reg(model, step=3)
    assert float(first) == float(second)
    taus = reg.state_dict()["tau"]
    third, metrics = reg(model, step=4)
    assert metrics["tau"] > 0 and float(third) != float(first)
    after = reg.state_dict()["tau"]  # same |dW|: the EMA of identical quantiles is a fixed point
    assert after.keys() == taus.keys() and all(after[k] == pytest.approx(v, rel=1e-5) for k, v in taus.items())


def test_state_dict_resume_continues_identically(estimated):
    model, _, artifact = estimated
    reference = AGLRegularizer(artifact, seed=5)
    values = []
    for step in range(6):
        with torch.no_grad():
            for m in find_lora_modules(model):
                m.lora_B.mul_(1.1)
        values.append(float(reference(model, step=step)[0]))
        if step == 2:
            saved = json.loads(json.dumps(reference.state_dict()))
    with torch.no_grad():
        for m in find_lora_modules(model):
            m.lora_B.div_(1.1**3)
    resumed = AGLRegularizer(artifact)
    resumed.load_state_dict(saved)
    for step in range(3, 6):
        with torch.no_grad():
            for m in find_lora_modules(model):
                m.lora_B.mul_(1.1)
        assert float(resumed(model, step=step)[0]) == pytest.approx(values[step], rel=1e-6)
    with torch.no_grad():
        for m in find_lora_modules(model):
            m.lora_B.div_(1.1**6)


def test_bf16_adapters_are_regularised_in_fp32(estimated):
    model, tokenizer, artifact = estimated
    import copy

    reference, _ = AGLRegularizer(artifact)(model, step=0)
    model_bf16 = copy.deepcopy(model)
    for name, param in model_bf16.named_parameters():
        if "lora_" in name:
            param.data = param.data.to(torch.bfloat16)
    loss, _ = AGLRegularizer(artifact)(model_bf16, step=0)
    assert loss.dtype == torch.float32
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=0.02)


def test_non_finite_adapters_raise_a_clear_error(estimated):
    model, _, artifact = estimated
    victim = find_lora_modules(model)[0]
    saved = victim.lora_B.data.clone()
    victim.lora_B.data[0, 0] = float("nan")
    try:
        with pytest.raises(FloatingPointError, match="non-finite"):
            AGLRegularizer(artifact)(model, step=0)
    finally:
        victim.lora_B.data = saved


def test_diagonal_artifact_gives_the_ewc_penalty(estimated):
    model, tokenizer, _ = estimated
    artifact = estimate_fisher(model, tokenizer, PROBE[:4], FisherSettings(estimator="diagonal"), show_progress=False)
    loss, metrics = AGLRegularizer(artifact, AGLSettings(lambda_align=2.0))(model, step=0)
    expected = sum(
        float((artifact.modules[m.name].diag * (m.scaling * m.lora_B @ m.lora_A).detach() ** 2).sum())
        for m in find_lora_modules(model)
    )
    assert float(loss) == pytest.approx(2.0 * 0.5 * expected, rel=1e-4)  # lambda per nat of estimated KL
    assert metrics["kl_estimate"] == pytest.approx(0.5 * expected, rel=1e-4)


def test_dora_is_refused_with_the_fix():
    from peft import LoraConfig, get_peft_model

    from agl_trl.models import tiny_llama

    model, _ = tiny_llama()
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(LoraIntrospectionError, match="use_dora=False"):
        find_lora_modules(model)
    assert len(find_lora_modules(model, allow_dora=True)) == 2


def test_canonical_names_strip_wrappers():
    assert canonical_module_name("module.base_model.model.model.layers.0.q_proj") == "model.layers.0.q_proj"
    assert canonical_module_name("_orig_mod.model.layers.1.mlp.up_proj") == "model.layers.1.mlp.up_proj"


@pytest.mark.parametrize(
    ("field", "value"),
    [("lambda_align", -1.0), ("mu", 1.5), ("gate", "medium"), ("gate_damping", 0.0), ("tau_quantile", 1.0)],
)
def test_settings_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"agl_{field}"):
        AGLSettings(**{field: value}).validate()


def test_settings_from_prefixed_sources():
    from agl_trl.settings import AGLTrainingSettings

    read = AGLTrainingSettings.from_prefixed({"agl_lambda_align": 0.25, "agl_gate": "hard", "unrelated": 1})
    settings = read.regularizer
    assert settings.lambda_align == 0.25 and settings.gate == "hard" and settings.mu == 0.5
    fisher = AGLTrainingSettings.from_prefixed(type("Cfg", (), {"agl_fisher_max_rank": 7})()).fisher
    assert fisher.max_rank == 7 and fisher.estimator == "kfac"


def test_fingerprint_message_calls_it_the_same_architecture_only_when_it_is() -> None:
    from agl_trl.fisher.artifact import _FINGERPRINT_CONFIG_KEYS, _compare_fingerprints

    key = _FINGERPRINT_CONFIG_KEYS[0]
    saved = {key: 64, "embedding_stats": [1.0, 2.0, 3.0]}
    same_arch = _compare_fingerprints(saved, {key: 64, "embedding_stats": [1.5, 2.5, 3.5]})
    assert same_arch == ["input-embedding weights differ (another checkpoint of the same architecture)"]
    other_arch = _compare_fingerprints(saved, {key: 32, "embedding_stats": [1.5, 2.5, 3.5]})
    assert other_arch[0].startswith(f"{key}: artifact 64 vs model 32")
    assert "same architecture" not in " ".join(other_arch)
