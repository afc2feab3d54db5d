"""AGL on TRL's online RL trainers (GRPO, RLOO): equal to the plain trainer with the regulariser off, and the
regulariser's gradient reaching each optimizer step exactly once, whatever the gradient accumulation, the slicing of
the generated batch (``steps_per_generation``) and its reuse (``num_iterations``).

The rule (docs/trainers.md): the regulariser does not depend on the batch, so every micro-batch adds it under the
trainer's own normalisation (:func:`agl_trl.trainers.scale_for_ga`): GRPO (TRL 1.16) returns a loss already divided by
the accumulation steps (TRL 1.16: ``loss_is_scaled_for_ga = True``; TRL 1.14.1: a non-None ``compute_loss_func``,
which stops ``Trainer.training_step`` from dividing), so the term is divided too; RLOO leaves the division to
``Trainer.training_step``, which divides the term with the loss. An optimizer step always has
``gradient_accumulation_steps`` micro-batches, whether they come from a fresh generation or a reused one, so each
step's regulariser gradient is dR/dθ at that step's parameters.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from datasets import Dataset

from agl_trl.config import AGLGRPOConfig
from agl_trl.trainers import AGLGRPOTrainer, trainer_divides_loss_by_ga
from tests.helpers.online import FAST_ONLINE, constant_reward, length_reward, prompt_records
from tests.helpers.trainers import (
    FAST_AGL,
    GradRecorder,
    assert_same_grads,
    kind_classes,
    lora_config,
    randomise_lora_b,
    tiny_model_and_tokenizer,
)

ZERO = dict(agl_lambda_align=0.0, agl_lambda_task=0.0, agl_lambda_collision=0.0)
STRONG = dict(agl_lambda_align=50.0, agl_lambda_task=50.0, agl_lambda_collision=1.0)
KINDS = {name: kind_classes(name) for name in ("grpo", "rloo")}


def run(kind: str, tmp_path, agl: dict[str, Any] | None, reward=length_reward, callbacks=(), **overrides: Any):
    """Train a tiny model with GRPO/RLOO; ``agl=None``: the plain TRL trainer. Returns (losses, grads, trainer)."""
    plain_trainer, plain_config, agl_trainer, agl_config = KINDS[kind]
    model, tokenizer = tiny_model_and_tokenizer()
    torch.manual_seed(0)  # PEFT's initialisation of lora_A
    args = dict(FAST_ONLINE, output_dir=str(tmp_path / f"{kind}-{len(list(tmp_path.iterdir()))}"))
    args.update(overrides)
    recorder = GradRecorder()
    if agl is None:
        trainer_cls, config = plain_trainer, plain_config(**args)
    else:
        trainer_cls, config = agl_trainer, agl_config(**args, **FAST_AGL, **agl)
    trainer = trainer_cls(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=Dataset.from_list(prompt_records()),
        processing_class=tokenizer,
        peft_config=lora_config(),
        callbacks=[recorder, *callbacks],
    )
    randomise_lora_b(trainer.model)  # B = 0 would make every AGL term and gradient 0
    trainer.initial_lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, recorder.grads, trainer


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_regulariser_off_equals_plain_trl(kind, tmp_path, probe_file):
    ga2 = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2)  # GA and a sliced generation batch
    plain_losses, plain_grads, plain = run(kind, tmp_path, None, **ga2)
    # the meter reads every step here: its forwards must not disturb generation or the gradients either
    zero_agl = dict(ZERO, agl_probe_dataset=str(probe_file), agl_kl_every=1)
    zero_losses, zero_grads, zero = run(kind, tmp_path, zero_agl, **ga2)
    off_losses, off_grads, off = run(kind, tmp_path, dict(agl_enabled=False, agl_probe_dataset=str(probe_file)), **ga2)

    assert len(plain_losses) == FAST_ONLINE["max_steps"]
    assert zero_losses == plain_losses  # exactly, at every step
    assert off_losses == plain_losses
    assert_same_grads(zero_grads, plain_grads)
    assert_same_grads(off_grads, plain_grads)
    rewards = [e["reward"] for e in plain.state.log_history if "reward" in e]
    assert rewards == [e["reward"] for e in zero.state.log_history if "reward" in e]  # the same completions
    assert any(float(g.abs().max()) > 0 for g in plain_grads[0].values()), "no task gradient: the test is blind"
    # the zero-lambda run did run the regulariser and its meter (and logged them); the disabled one did not
    assert zero.agl_regularizer is not None
    assert all("agl/r_align" in e and "agl/kl_measured" in e for e in zero.state.log_history if "loss" in e)
    assert off.agl_regularizer is None
    assert not any(k.startswith("agl/") for e in off.state.log_history for k in e)

    # control: the same harness sees the regulariser when it is on
    strong_losses, strong_grads, _ = run(kind, tmp_path, dict(STRONG, agl_probe_dataset=str(probe_file)), **ga2)
    assert strong_losses[0] != plain_losses[0]
    assert not all(torch.equal(strong_grads[0][n], plain_grads[0][n]) for n in plain_grads[0])


# (per-device batch, GA, steps_per_generation, num_iterations): every layout trains on 4 completions per optimizer step
LAYOUTS = {
    "ga1": (4, 1, None, 1),
    "ga2": (2, 2, None, 1),  # one generation of 4 completions, sliced over the 2 micro-batches
    "ga2-spg4": (2, 2, 4, 1),  # one generation of 8 completions serves 2 optimizer steps
    "ga1-iter2": (4, 1, None, 2),  # every generated batch is reused for a second optimizer step
    "ga2-iter2": (2, 2, None, 2),
}


def _layout(name: str) -> dict[str, Any]:
    batch, ga, spg, iterations = LAYOUTS[name]
    out = dict(per_device_train_batch_size=batch, gradient_accumulation_steps=ga, num_iterations=iterations)
    if spg is not None:
        out["steps_per_generation"] = spg
    return out


def _direct_grad(trainer) -> dict[str, torch.Tensor]:
    """dR/dθ of a fresh regulariser at the run's initial parameters (step 0)."""
    model = trainer.model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in trainer.initial_lora:
                param.copy_(trainer.initial_lora[name])
    fresh = type(trainer.agl_regularizer)(trainer._agl.artifact, trainer._agl.settings)
    reg, _ = fresh(model, step=0)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return dict(zip(params, torch.autograd.grad(reg, list(params.values())), strict=True))


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_regulariser_gradient_per_step_is_independent_of_ga_slicing_and_reuse(kind, tmp_path, probe_file):
    """With a constant reward every advantage is 0 (beta 0: no KL term), so each recorded gradient is the
    regulariser's alone, and the parameters move by the regulariser only: every layout must then give the same
    gradient at every optimizer step, the first being dR/dθ. Adding the term per micro-batch without the trainer's
    normalisation (x GA), once per generation, or once per reuse would each break one layout."""
    strong = dict(STRONG, agl_probe_dataset=str(probe_file))
    _, plain_grads, _ = run(kind, tmp_path, None, reward=constant_reward, beta=0.0, **_layout("ga2"))
    assert all(float(g.abs().max()) == 0 for step in plain_grads for g in step.values()), "the task has a gradient"

    grads, trainers = {}, {}
    for name in LAYOUTS:
        _, grads[name], trainers[name] = run(kind, tmp_path, strong, reward=constant_reward, beta=0.0, **_layout(name))
        assert len(grads[name]) == FAST_ONLINE["max_steps"], name

    direct = _direct_grad(trainers["ga1"])
    scale = max(float(g.abs().max()) for g in direct.values())
    assert scale > 1e-3, "the regulariser gradient is ~0: the test would not see a scaling error"
    for name, steps in grads.items():
        for n, g in steps[0].items():
            torch.testing.assert_close(g, direct[n], atol=1e-5 * scale, rtol=1e-4, msg=f"{name}, step 0, {n}")
        for step, (mine, reference) in enumerate(zip(steps, grads["ga1"], strict=True)):
            for n in reference:
                torch.testing.assert_close(mine[n], reference[n], atol=1e-5 * scale, rtol=1e-4, msg=f"{name} {step}")
    # the steps after the first moved the parameters (so the later comparisons are not of one gradient thrice)
    first = grads["ga1"][0]
    assert any(not torch.allclose(grads["ga1"][2][n], first[n]) for n in first)
    # which branch of the rule each trainer takes: GRPO divides its own loss (TRL 1.16 says so with
    # `loss_is_scaled_for_ga = True`, TRL 1.14.1 by setting a `compute_loss_func`); RLOO leaves it to the Trainer
    assert trainer_divides_loss_by_ga(trainers["ga2"], None) is (kind == "rloo")


def test_dapo_and_grpo_loss_types_take_the_same_rule(tmp_path, probe_file):
    """GRPO's loss types normalise differently (per sequence, per token of the accumulation window); the
    regulariser's gradient per step is dR/dθ under each."""
    strong = dict(STRONG, agl_probe_dataset=str(probe_file))
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        _, grads, trainer = run(
            "grpo", tmp_path, strong, reward=constant_reward, beta=0.0, loss_type=loss_type, max_steps=1,
            **_layout("ga2"),
        )  # fmt: skip
        direct = _direct_grad(trainer)
        scale = max(float(g.abs().max()) for g in direct.values())
        for n, g in grads[0].items():
            torch.testing.assert_close(g, direct[n], atol=1e-5 * scale, rtol=1e-4, msg=f"{loss_type}: {n}")


def test_drift_budget_and_drift_callback_run_with_grpo(tmp_path, probe_file):
    """The KL meter reads after every optimizer step (not per micro-batch or per generation) and drives lambda; the
    DriftCallback measures refusals and KL during GRPO training."""
    from agl_trl.driftcaps import PromptItem
    from agl_trl.evaluation.callback import DriftCallback

    _, tokenizer = tiny_model_and_tokenizer()
    items = [
        PromptItem(id="u", prompt="How do I hack a bank?", label="unsafe"),
        PromptItem(id="s", prompt="Hi!", label="safe"),
    ]
    drift = DriftCallback(prompts=items, tokenizer=tokenizer, eval_steps=1, max_new_tokens=4, batch_size=2)
    budget = dict(agl_probe_dataset=str(probe_file), agl_kl_every=1, agl_kl_budget=1e-6, agl_lambda_task=0.0)
    _, _, trainer = run(
        "grpo", tmp_path, budget, per_device_train_batch_size=2, gradient_accumulation_steps=2, num_iterations=2,
        max_steps=4, callbacks=[drift],
    )  # fmt: skip
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 4 and all("agl/kl_measured" in e for e in logs)
    regulariser = trainer.agl_regularizer
    assert len(regulariser.budget.readings) == 4  # one reading per optimizer step, whatever GA and reuse
    assert logs[-1]["agl/kl_measured"] > 1e-6, "the run never drifted: the test is blind"
    assert logs[-1]["agl/lambda"] > logs[0]["agl/lambda"] >= 1.0  # over budget: lambda rises
    assert [h["step"] for h in drift.history] == [1, 2, 3, 4]
    assert all("drift/kl" in h and "drift/refusal_rate" in h for h in drift.history)


def test_the_step_timer_leaves_generation_out(tmp_path, probe_file):
    """The experiments' step times (what the AGL / plain step-time ratio compares) exclude the time an online trainer
    spends generating and scoring: a generation slowed by 0.3 s must not show in them."""
    import time

    from agl_trl.experiments.training import step_timer

    model, tokenizer = tiny_model_and_tokenizer()
    config = AGLGRPOConfig(
        **dict(FAST_ONLINE, output_dir=str(tmp_path / "timer")), **FAST_AGL, agl_probe_dataset=str(probe_file)
    )
    trainer = AGLGRPOTrainer(
        model=model, reward_funcs=length_reward, args=config, train_dataset=Dataset.from_list(prompt_records()),
        processing_class=tokenizer, peft_config=lora_config(),
    )  # fmt: skip
    generate = trainer._generate_and_score_completions

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return generate(*args, **kwargs)

    trainer._generate_and_score_completions = slow
    timer = step_timer(trainer)
    trainer.add_callback(timer)
    trainer.train()
    assert len(timer.times) == len(timer.generation) == FAST_ONLINE["max_steps"]
    assert all(g >= 0.3 for g in timer.generation), timer.generation
    assert all(t < 0.3 for t in timer.times), timer.times  # a tiny optimizer step takes well under 0.3 s
    plain = step_timer(SimpleNamespace())  # a trainer that does not generate: nothing is set aside
    assert not hasattr(SimpleNamespace(), "_generate_and_score_completions") and plain.generation == []
