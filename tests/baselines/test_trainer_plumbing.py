"""Baseline penalties inside a real ``trl.SFTTrainer`` through the AGL mixin (enable_penalty / attach_penalty)."""

from __future__ import annotations

import pytest
import torch

from agl_trl.baselines import KLToReferencePenalty, L2UpdatePenalty
from agl_trl.lora import find_lora_modules
from agl_trl.trainers import AGLLossMixin, attach_penalty, enable_penalty
from tests.helpers.trainers import PLAIN_PROMPTS, plain_sft_trainer


def update_norm(model) -> float:
    return sum(float((m.scaling * m.lora_B @ m.lora_A).norm() ** 2) for m in find_lora_modules(model))


def test_enable_penalty_adds_the_penalty_and_logs_it(tmp_path) -> None:
    plain = plain_sft_trainer(tmp_path / "plain")
    plain.train()
    trainer = enable_penalty(plain_sft_trainer(tmp_path / "l2"), L2UpdatePenalty(lambda_l2=1e4))
    assert isinstance(trainer, AGLLossMixin)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "agl/update_norm_sq" in h]
    assert len(logs) == 3 and all("agl/loss" in h for h in logs)
    assert not any("agl/loss" in h for h in plain.state.log_history)
    # a very strong L2 keeps the update far smaller than the plain run's
    assert update_norm(trainer.model) < 0.1 * update_norm(plain.model)


def test_kl_penalty_runs_in_the_trainer_with_its_extra_forward(tmp_path) -> None:
    trainer = plain_sft_trainer(tmp_path)
    model = trainer.model
    penalty = KLToReferencePenalty.from_prompts(
        model, trainer.processing_class, PLAIN_PROMPTS, max_new_tokens=5, batch_size=2
    )
    enable_penalty(trainer, penalty)
    trainer.train()
    kl = [h["agl/kl_ref"] for h in trainer.state.log_history if "agl/kl_ref" in h]
    assert len(kl) == 3 and kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 0


def _grad_recorder():
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        grads: dict[str, torch.Tensor] = {}

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    return Recorder()


def _step_grads(tmp_path, penalty, batch: int, ga: int) -> tuple[dict[str, torch.Tensor], object]:
    from tests.helpers.lora_models import randomise_lora_b

    trainer = plain_sft_trainer(
        tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=ga, max_steps=1, max_grad_norm=0.0
    )
    randomise_lora_b(trainer.model, seed=3, std=0.1)  # at B = 0 the L2 gradient vanishes and the test would see nothing
    trainer.initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    if penalty is not None:
        enable_penalty(trainer, penalty)
    recorder = _grad_recorder()
    trainer.add_callback(recorder)
    trainer.train()
    return recorder.grads, trainer


@pytest.mark.parametrize(("batch", "ga"), [(2, 2), (4, 1)])
def test_penalty_gradient_reaches_each_optimizer_step_once_whatever_the_accumulation(tmp_path, batch, ga) -> None:
    with_penalty, trainer = _step_grads(tmp_path / "p", L2UpdatePenalty(lambda_l2=1.0), batch, ga)
    without, _ = _step_grads(tmp_path / "n", None, batch, ga)
    model = trainer.model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in trainer.initial:
                param.copy_(trainer.initial[name])
    loss, _ = L2UpdatePenalty(lambda_l2=1.0)(model, 0)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    direct = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    scale = max(float(g.abs().max()) for g in direct.values())
    assert scale > 1e-3
    for name, grad in direct.items():
        torch.testing.assert_close(with_penalty[name] - without[name], grad, atol=1e-5 * scale, rtol=1e-4)


def test_attach_penalty_refuses_non_mixin_trainers_and_non_callables(tmp_path) -> None:
    trainer = plain_sft_trainer(tmp_path)
    with pytest.raises(TypeError, match="AGLLossMixin"):
        attach_penalty(trainer, L2UpdatePenalty())
    with pytest.raises(TypeError, match="callable"):
        enable_penalty(trainer, object())
