"""AGL trainers vs the plain TRL trainers: identical with the regulariser off, GA-invariant with it on."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from datasets import Dataset

from agl_trl.trainers import trainer_divides_loss_by_ga
from tests.helpers.trainers import (
    FAST_AGL,
    FAST_ARGS,
    GradRecorder,
    assert_same_grads,
    dpo_records,
    kind_classes,
    lora_config,
    randomise_lora_b,
    sft_records,
    tiny_model_and_tokenizer,
)

ZERO = dict(agl_lambda_align=0.0, agl_lambda_task=0.0, agl_lambda_collision=0.0)
STRONG = dict(agl_lambda_align=50.0, agl_lambda_task=50.0, agl_lambda_collision=1.0)
KINDS = {"sft": (*kind_classes("sft"), sft_records), "dpo": (*kind_classes("dpo"), dpo_records)}


def run(kind: str, tmp_path, agl: dict[str, Any] | None, **overrides: Any) -> tuple[list[float], list[dict], Any]:
    """Train a tiny model; ``agl=None`` uses the plain TRL trainer. Returns (losses, grads per step, trainer)."""
    plain_trainer, plain_config, agl_trainer, agl_config, records = KINDS[kind]
    model, tokenizer = tiny_model_and_tokenizer()
    torch.manual_seed(0)  # PEFT's initialisation of lora_A
    args = dict(FAST_ARGS, output_dir=str(tmp_path / f"{kind}-{len(list(tmp_path.iterdir()))}"), **overrides)
    recorder = GradRecorder()
    if agl is None:
        trainer_cls, config = plain_trainer, plain_config(**args)
    else:
        trainer_cls, config = agl_trainer, agl_config(**args, **FAST_AGL, **agl)
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(records()),
        processing_class=tokenizer,
        peft_config=lora_config(),
        callbacks=[recorder],
    )
    randomise_lora_b(trainer.model)  # B = 0 would make every AGL term and gradient 0
    trainer.initial_lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, recorder.grads, trainer


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_regulariser_off_equals_plain_trl(kind, tmp_path, probe_file):
    plain_losses, plain_grads, _ = run(kind, tmp_path, None)
    zero_losses, zero_grads, zero = run(kind, tmp_path, dict(ZERO, agl_probe_dataset=str(probe_file)))
    off_losses, off_grads, off = run(kind, tmp_path, dict(agl_enabled=False, agl_probe_dataset=str(probe_file)))

    assert len(plain_losses) == FAST_ARGS["max_steps"]
    assert zero_losses == plain_losses  # exactly, at every step
    assert off_losses == plain_losses
    assert_same_grads(zero_grads, plain_grads)
    assert_same_grads(off_grads, plain_grads)
    # the zero-lambda run did run the regulariser (and logged it); the disabled one did not
    assert zero.agl_regularizer is not None
    assert any("agl/r_align" in e for e in zero.state.log_history)
    assert off.agl_regularizer is None
    assert not any(k.startswith("agl/") for e in off.state.log_history for k in e)

    # control: the same harness sees the regulariser when it is on
    strong_losses, strong_grads, _ = run(kind, tmp_path, dict(STRONG, agl_probe_dataset=str(probe_file)))
    assert strong_losses[0] != plain_losses[0]
    name = next(iter(plain_grads[0]))
    assert not all(torch.equal(strong_grads[0][n], plain_grads[0][n]) for n in plain_grads[0]), name


def _reg_grad(kind, tmp_path, probe_file, batch: int, ga: int) -> tuple[dict[str, torch.Tensor], Any]:
    over = dict(per_device_train_batch_size=batch, gradient_accumulation_steps=ga, max_steps=1)
    _, with_reg, trainer = run(kind, tmp_path, dict(STRONG, agl_probe_dataset=str(probe_file)), **over)
    _, without, _ = run(kind, tmp_path, dict(ZERO, agl_probe_dataset=str(probe_file)), **over)
    return {n: with_reg[0][n] - without[0][n] for n in without[0]}, trainer


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_ga_invariance_of_the_regulariser_gradient(kind, tmp_path, probe_file):
    """GA=2 x batch b gives the same regulariser gradient per optimizer step as GA=1 x batch 2b (and as dR/dθ)."""
    ga2, trainer = _reg_grad(kind, tmp_path, probe_file, batch=2, ga=2)
    ga1, _ = _reg_grad(kind, tmp_path, probe_file, batch=4, ga=1)

    # the gradient of the regulariser alone, at the initial parameters, from a fresh regulariser
    model = trainer.model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in trainer.initial_lora:
                param.copy_(trainer.initial_lora[name])
    fresh = type(trainer.agl_regularizer)(trainer._agl.artifact, trainer._agl.settings)
    reg, _ = fresh(model, step=0)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    direct = dict(zip(params, torch.autograd.grad(reg, list(params.values())), strict=True))

    scale = max(float(g.abs().max()) for g in direct.values())
    assert scale > 1e-3, "the regulariser gradient is ~0: the test would not see a GA error"
    for name, grad in ga1.items():
        torch.testing.assert_close(grad, direct[name], atol=1e-5 * scale, rtol=1e-4)
        torch.testing.assert_close(ga2[name], direct[name], atol=1e-5 * scale, rtol=1e-4)
    # which branch of the GA rule each trainer takes (SFT: trainer does not divide; DPO: it does)
    assert trainer_divides_loss_by_ga(trainer, 123 if kind == "sft" else None) is (kind == "dpo")


def test_ga_rule_branches():
    from types import SimpleNamespace as NS

    assert trainer_divides_loss_by_ga(NS(loss_is_scaled_for_ga=False), 10) is True  # DPO/KTO/ORPO/CPO
    assert trainer_divides_loss_by_ga(NS(loss_is_scaled_for_ga=True), None) is False  # GRPO
    sft = NS(loss_is_scaled_for_ga=None, model_accepts_loss_kwargs=True, compute_loss_func=None)
    assert trainer_divides_loss_by_ga(sft, 10) is False
    assert trainer_divides_loss_by_ga(sft, None) is True
    old = NS(model_accepts_loss_kwargs=False)  # trl 1.14 DPO: no flag, kwargs off -> divides
    assert trainer_divides_loss_by_ga(old, 10) is True
    assert trainer_divides_loss_by_ga(NS(compute_loss_func=lambda *a: 0), None) is False
