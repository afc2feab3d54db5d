"""The drift budget in training: the KL meter's readings, the adaptive lambda, its checkpointed state, the meter-only
mode, and the defaults leaving the gradient alone while the measured KL is under budget."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from agl_trl.config import AGLDPOConfig, AGLSFTConfig
from agl_trl.trainers import AGL_STATE_FILE, AGLDPOTrainer, AGLSFTTrainer
from tests.helpers.trainers import (
    FAST_AGL,
    FAST_ARGS,
    agl_sft_trainer,
    dpo_records,
    lora_config,
    sft_records,
    tiny_model_and_tokenizer,
)


def sft_trainer(output_dir, probe_file, **overrides):
    args = dict(FAST_ARGS, max_steps=6, output_dir=str(output_dir))
    agl = dict(FAST_AGL, agl_probe_dataset=str(probe_file), agl_kl_every=1)
    return agl_sft_trainer(output_dir, agl, args, **overrides)


def train_logs(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "loss" in e]


def test_meter_readings_drive_lambda_towards_the_budget(tmp_path, probe_file):
    # a budget far below what lr 5e-2 drifts to: lambda must rise; one far above: it must relax
    tight = sft_trainer(tmp_path / "tight", probe_file, agl_kl_budget=1e-6)
    tight.train()
    logs = train_logs(tight)
    assert all(e["agl/kl_measured"] >= 0 and "agl/kl_ratio" in e for e in logs)
    assert logs[-1]["agl/kl_measured"] > 1e-6, "the run never drifted: the test is blind"
    budget = tight._agl.meter.budget
    assert budget.calibration is not None and len(budget.readings) == 6
    assert logs[-1]["agl/lambda"] > logs[0]["agl/lambda"] >= 1.0
    loose = sft_trainer(tmp_path / "loose", probe_file, agl_kl_budget=1e3, agl_lambda_floor=0.0)  # no floor
    loose.train()
    assert train_logs(loose)[-1]["agl/lambda"] < 1.0


def test_fixed_lambda_is_never_adapted_and_meter_only_trains_like_plain(tmp_path, probe_file):
    fixed = sft_trainer(tmp_path / "fixed", probe_file, agl_lambda_align=3.0)  # the budget would have moved it
    fixed.train()
    assert {e["agl/lambda"] for e in train_logs(fixed)} == {3.0}
    assert all("agl/kl_measured" in e for e in train_logs(fixed))

    zero = dict(agl_lambda_task=0.0, agl_lambda_collision=0.0)
    meter = sft_trainer(tmp_path / "meter", probe_file, agl_lambda_align=0.0, **zero)
    meter.train()
    silent = sft_trainer(tmp_path / "silent", probe_file, agl_lambda_align=0.0, agl_kl_every=0, **zero)
    silent.train()
    assert all(e["agl/kl_measured"] > 0 for e in train_logs(meter)[1:])
    assert not any("agl/kl_measured" in e for e in train_logs(silent))
    for (name, a), (_, b) in zip(meter.model.named_parameters(), silent.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # measuring changes nothing


@pytest.mark.slow
def test_budget_state_is_checkpointed_and_restored(tmp_path, probe_file):
    save = dict(save_strategy="steps", save_steps=3)
    full = sft_trainer(tmp_path / "run", probe_file, agl_kl_budget=1e-4, **save)
    full.train()
    state = json.loads((tmp_path / "run" / "checkpoint-3" / AGL_STATE_FILE).read_text())
    assert len(state["regularizer"]["budget"]["readings"]) == 3
    resumed = sft_trainer(tmp_path / "run", probe_file, agl_kl_budget=1e-4, **save)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    got, want = resumed.agl_regularizer.budget.state_dict(), full.agl_regularizer.budget.state_dict()
    for key in ("readings", "ratios", "lam", "calibration"):
        assert got.pop(key) == pytest.approx(want.pop(key), rel=1e-5), key
    assert got == want


def grad_norms(trainer) -> list[float]:
    trainer.train()
    return [e["grad_norm"] for e in train_logs(trainer)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_default_settings_leave_the_gradient_alone_under_budget(kind, tmp_path, probe_file):
    """With the defaults and the KL under budget, AGL's gradient norm stays within 1.2x of plain's at each of the
    first 20 steps (the scale-free collision terms this replaced gave 247 against 0.11 on DPO)."""
    runs = {}
    for enabled in (True, False):
        model, tokenizer = tiny_model_and_tokenizer()
        torch.manual_seed(0)
        args = dict(FAST_ARGS, max_steps=20, output_dir=str(tmp_path / f"{kind}{enabled}"), agl_enabled=enabled)
        agl = dict(FAST_AGL, agl_probe_dataset=str(probe_file))
        if kind == "dpo":
            config = AGLDPOConfig(**{**args, "learning_rate": 5e-6}, **agl)
            trainer = AGLDPOTrainer(
                model=model, args=config, train_dataset=Dataset.from_list(dpo_records(40)),
                processing_class=tokenizer, peft_config=lora_config(),
            )  # fmt: skip
        else:
            config = AGLSFTConfig(**{**args, "learning_rate": 1e-3}, **agl)
            trainer = AGLSFTTrainer(
                model=model, args=config, train_dataset=Dataset.from_list(sft_records(40)),
                processing_class=tokenizer, peft_config=lora_config(),
            )  # fmt: skip
        runs[enabled] = (trainer, grad_norms(trainer))
    agl_trainer, with_agl = runs[True]
    _, plain = runs[False]
    assert max(agl_trainer.agl_regularizer.budget.readings) < agl_trainer.args.agl_kl_budget  # under budget
    for step, (a, p) in enumerate(zip(with_agl, plain, strict=True), start=1):
        assert a <= 1.2 * p + 1e-8 and p <= 1.2 * a + 1e-8, f"step {step}: AGL {a} vs plain {p}"


# the KL anchor reads the Fisher's probe records less the meter's: with the 6-record probe, the meter's last 2
ANCHOR = dict(agl_kl_sequences=2, agl_kl_batch_size=2, agl_lambda_align=3.0, agl_lambda_task=0.0)


def test_kl_anchor_steps_add_the_measured_kl_with_its_gradient(tmp_path, probe_file):
    from agl_trl.teacher_forcing import probe_kl

    on = sft_trainer(tmp_path / "on", probe_file, max_steps=8, agl_kl_anchor_every=2, **ANCHOR)
    on.train()
    anchored = [e["step"] for e in train_logs(on) if "agl/kl_anchor" in e]
    assert anchored == [3, 5, 7], anchored  # added during the steps after 2, 4 and 6 finished (never at step 0)
    off = sft_trainer(tmp_path / "off", probe_file, max_steps=3, agl_kl_anchor_every=0, **ANCHOR)
    off.train()
    assert not any("agl/kl_anchor" in e for e in train_logs(off))
    rt, model = on._agl.meter, on.model
    assert len(rt.anchor_batches) == 2  # the Fisher's 6 records less the meter's 2, in batches of 2
    # the term is lambda x the meter's own KL on the anchor batch, and its gradient lowers that KL
    model.eval()  # no dropout: the anchor's forward then matches the meter's exactly
    batch = rt.anchor_batches[0]
    measured = probe_kl(model, batch)
    term, metrics = rt.anchor(model, 10)  # step 10 -> batch 0
    assert measured > 1e-4, "the run never drifted: the test is blind"
    assert float(term) == pytest.approx(3.0 * measured, rel=1e-4)
    assert metrics["kl_anchor"] == pytest.approx(measured, rel=1e-4)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(term, params)
    norm2 = sum(float((g * g).sum()) for g in grads)
    assert norm2 > 0
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= 0.05 * float(term) / norm2 * g  # a small step down the term's gradient
    assert probe_kl(model, batch) < 0.99 * measured


def test_kl_anchor_tokens_cut_the_anchor_sequences_and_leave_the_meters_whole(tmp_path, probe_file):
    from agl_trl.teacher_forcing import TokenSequence, first_response_tokens

    seq = TokenSequence([1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 1, 1])
    assert first_response_tokens(seq, 2) == TokenSequence([1, 2, 3, 4], [0, 0, 1, 1])
    assert first_response_tokens(seq, 9) == seq  # shorter responses stay whole
    whole = sft_trainer(  # 0: every response token (the default reads the first 16)
        tmp_path / "whole", probe_file, max_steps=1, agl_kl_anchor_every=2, agl_kl_anchor_tokens=0, **ANCHOR
    )
    cut = sft_trainer(
        tmp_path / "cut", probe_file, max_steps=1, agl_kl_anchor_every=2, agl_kl_anchor_tokens=2, **ANCHOR
    )
    for trainer in (whole, cut):
        trainer.train()
    per_row = lambda batches: [int(n) for b in batches for n in b["response_mask"].sum(dim=1)]  # noqa: E731
    assert max(per_row(whole._agl.meter.anchor_batches)) > 2  # the probe answers are longer than the cut
    assert per_row(cut._agl.meter.anchor_batches) == [min(n, 2) for n in per_row(whole._agl.meter.anchor_batches)]
    assert per_row(cut._agl.meter.meter_batches) == per_row(whole._agl.meter.meter_batches)  # the meter reads all


def test_kl_anchor_term_reaches_each_step_once_under_gradient_accumulation(tmp_path, probe_file):
    """GA 2 x batch 2 and GA 1 x batch 4 take the same steps with anchor steps on (the term is added on one micro-
    batch and scaled for the trainer's GA division), and the anchor does move them."""
    from types import SimpleNamespace as NS

    from agl_trl.trainers.mixin import scale_once_for_ga

    def final(name, **over):
        trainer = sft_trainer(tmp_path / name, probe_file, max_steps=3, **ANCHOR, **over)
        trainer.train()
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}, trainer

    ga1, _ = final("ga1", per_device_train_batch_size=4, agl_kl_anchor_every=1)
    ga2, trainer = final("ga2", per_device_train_batch_size=2, gradient_accumulation_steps=2, agl_kl_anchor_every=1)
    none, _ = final("none", per_device_train_batch_size=4, agl_kl_anchor_every=0)
    moved = max(float((ga1[n] - none[n]).abs().max()) for n in ga1)
    assert moved > 1e-4, "the anchor did not change the steps: the test is blind"
    for name in ga1:
        torch.testing.assert_close(ga2[name], ga1[name], atol=0.05 * moved, rtol=1e-3, msg=name)
    rt = trainer._agl.meter
    first, _ = rt.anchor(trainer.model, 99)
    again, _ = rt.anchor(trainer.model, 99)
    assert first is not None and again is None  # once per optimizer step, whatever the micro-batches
    term = torch.tensor(1.0)
    assert (
        float(scale_once_for_ga(NS(loss_is_scaled_for_ga=False, current_gradient_accumulation_steps=4), term, 1)) == 4
    )
    assert float(scale_once_for_ga(NS(loss_is_scaled_for_ga=True, current_gradient_accumulation_steps=4), term, 1)) == 1


def test_kl_anchor_without_probe_records_of_its_own_is_refused(tmp_path, probe_file):
    from agl_trl.settings import AGLUserError

    trainer = sft_trainer(tmp_path / "x", probe_file, agl_kl_anchor_every=10, agl_kl_sequences=16, agl_lambda_align=1.0)
    with pytest.raises(AGLUserError, match=r"`agl_kl_anchor_every`=10 needs probe records of its own, but the 6 "):
        trainer.train()


def test_kl_anchor_is_refused_under_zero3(tmp_path, probe_file, monkeypatch):
    """Under ZeRO-3 with reentrant checkpointing the anchor's forward made ZeRO-3 reduce a gradient twice (trl 1.14):
    refused at train start with the fix, before any step."""
    import agl_trl.parallel.sharding
    from agl_trl.settings import AGLUserError

    trainer = sft_trainer(tmp_path / "z3", probe_file, agl_kl_anchor_every=10, agl_lambda_align=1.0)
    monkeypatch.setattr(agl_trl.parallel.sharding, "sharding_engine", lambda tensors: "zero3")
    with pytest.raises(AGLUserError, match=r"`agl_kl_anchor_every`=10 is not supported under DeepSpeed ZeRO-3"):
        trainer.train()


def test_kl_anchor_steps_are_on_by_default_every_10th_step(tmp_path, probe_file):
    from agl_trl.settings import DEFAULT_KL_ANCHOR_EVERY

    assert DEFAULT_KL_ANCHOR_EVERY == 10
    trainer = sft_trainer(tmp_path / "default", probe_file, max_steps=11, **ANCHOR)  # agl_kl_anchor_every unset
    trainer.train()
    assert trainer._agl.meter.anchor_every == 10 and len(trainer._agl.meter.anchor_batches) == 2
    assert [e["step"] for e in train_logs(trainer) if "agl/kl_anchor" in e] == [11]  # the step after step 10


def test_default_kl_anchor_turns_off_with_a_warning_where_it_cannot_run(tmp_path, probe_file, monkeypatch, caplog):
    """Unset, the anchor steps give way (a warning, the rest of AGL on) where a set interval is refused: under
    ZeRO-3, and when the probe data has no records beyond the meter's."""
    import agl_trl.parallel.sharding

    few = sft_trainer(tmp_path / "few", probe_file, max_steps=1, agl_kl_sequences=16, agl_lambda_align=1.0)
    with caplog.at_level("WARNING", logger="agl_trl.trainers.runtime"):
        few.train()
    assert few._agl.meter.anchor_every == 0 and not few._agl.meter.anchor_batches and few._agl.meter.meter_batches
    assert "KL anchor steps (on by default) are off: the 6 records" in caplog.text
    caplog.clear()
    z3 = sft_trainer(tmp_path / "z3", probe_file, max_steps=1, agl_lambda_align=1.0)
    monkeypatch.setattr(agl_trl.parallel.sharding, "sharding_engine", lambda tensors: "zero3")
    with caplog.at_level("WARNING", logger="agl_trl.trainers.runtime"):
        z3._agl.initialise(z3)  # train() would need DeepSpeed itself; the resolution happens here
    assert z3._agl.meter.anchor_every == 0 and not z3._agl.meter.anchor_batches
    assert "off under DeepSpeed ZeRO-3" in caplog.text
