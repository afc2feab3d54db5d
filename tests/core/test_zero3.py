"""AGL under DeepSpeed ZeRO-3, with ZeRO-3's parameter life cycle simulated in one process: every checkpointing mode
and loss scale, exactly, in seconds (tests/trainers/test_deepspeed.py runs a real two-process engine on CPU; the GPU
command is in docs/distributed.md).

:class:`SimulatedZero3` partitions the parameters of chosen modules as ZeRO-3 does: outside their module's forward
they are empty (``shape [0]``, the real shape in ``ds_shape``); a pre-forward hook gathers them, a post-forward hook
releases them, a hook on the module's output gathers them again for its backward, and a post-accumulate-grad hook
"reduces" each gradient into a partition (``ds_grad``, counting the reductions) and releases the parameter.
``deepspeed.zero.GatheredParameters`` is replaced by a context that gathers and releases. On that model the
regulariser's value, metrics and the task + regulariser gradient equal the unpartitioned model's, with and without
gradient checkpointing (reentrant, which TRL forces for PEFT under ZeRO-3, and non-reentrant): the recomputation
neither drops nor doubles the penalty's gradient, and every parameter is reduced once per backward.
"""

from __future__ import annotations

import pytest
import torch

from agl_trl.fisher import FisherSettings, estimate_fisher
from agl_trl.lora import find_lora_modules, lora_factors
from agl_trl.parallel.sharding import is_partitioned, sharding_engine
from agl_trl.regularizers import AGLRegularizer
from agl_trl.settings import AGLSettings
from tests.helpers.lora_models import PROBE, make_lora_model
from tests.helpers.zero3 import partition

SETTINGS = dict(lambda_align=3.0, lambda_task=2.0, lambda_collision=1.0, riem_block=8, kl_every=0)


def _model():
    torch.manual_seed(0)  # lora_A's initialisation: the same in every model of this file
    return make_lora_model(rank=3)


def _batch(tokenizer) -> dict[str, torch.Tensor]:
    ids = torch.tensor([tokenizer("the sea is blue and deep, a cat sat on the mat")["input_ids"][:16]] * 2)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _partitioned_model(holder):
    model, tokenizer = _model()
    partition(holder, model)
    return model, tokenizer


def _reference(artifact, scale: float):
    model, tokenizer = _model()
    model.train()
    reg = AGLRegularizer(artifact, AGLSettings(**SETTINGS), seed=3)
    reg(model, step=0)
    value, metrics = reg(model, step=1)
    (scale * (model(**_batch(tokenizer)).loss + value)).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}
    return value.item(), metrics, grads, reg.raw_kl_estimate(model)


@pytest.fixture(scope="module")
def artifact():
    model, tokenizer = _model()
    return estimate_fisher(model, tokenizer, PROBE[:4], FisherSettings(batch_size=2, max_rank=8), False)


@pytest.mark.parametrize(
    "checkpointing, scale",
    [(None, 1.0), ("reentrant", 1.0), ("non-reentrant", 1.0), ("reentrant", 0.5)],
)
def test_zero3_penalty_and_gradients_equal_the_unpartitioned_model(fake_deepspeed, artifact, checkpointing, scale):
    value_ref, metrics_ref, grads_ref, raw_ref = _reference(artifact, scale)
    model, tokenizer = _partitioned_model(fake_deepspeed)
    assert sharding_engine(lora_factors(model)) == "zero3"
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert all(is_partitioned(p) for p in lora.values())  # empty outside forward
    assert {(m.d_out, m.d_in, m.rank) for m in find_lora_modules(model)} == {(32, 32, 3), (16, 32, 3), (64, 32, 3),
                                                                            (32, 64, 3)}  # fmt: skip
    model.train()
    if checkpointing is not None:
        model.gradient_checkpointing_enable({"use_reentrant": checkpointing == "reentrant"})
        model.enable_input_require_grads()
    reg = AGLRegularizer(artifact, AGLSettings(**SETTINGS), seed=3)
    reg(model, step=0)  # binds (fingerprint of the partitioned embedding) and warms tau, like the reference
    task = model(**_batch(tokenizer)).loss  # the trainer's order: the forward, then the penalty
    value, metrics = reg(model, step=1)
    assert value.item() == pytest.approx(value_ref, rel=1e-6) and metrics == pytest.approx(metrics_ref, rel=1e-6)
    # scale: a gradient-accumulation division applied to the whole loss reaches the penalty's part too
    (scale * (task + value)).backward()
    for name, param in lora.items():
        assert param.reductions == 1, name  # one reduction per parameter and backward: nothing counted twice
        torch.testing.assert_close(param.ds_grad, grads_ref[name], rtol=1e-5, atol=1e-8, msg=name)
        assert is_partitioned(param) and param.grad is None
    assert reg.raw_kl_estimate(model) == pytest.approx(raw_ref, rel=1e-6)  # a no-grad read gathers too
    # a second step: the penalty's gradient is not added again to a backward without a new call
    (model(**_batch(tokenizer)).loss * scale).backward()
    task_only = _reference_task_grads(scale)
    for name, param in lora.items():
        torch.testing.assert_close(param.ds_grad - grads_ref[name], task_only[name], rtol=1e-4, atol=1e-7)


def test_zero3_penalty_computed_before_the_forward_is_a_clear_error(fake_deepspeed, artifact):
    model, tokenizer = _partitioned_model(fake_deepspeed)
    model.train()
    value, _ = AGLRegularizer(artifact, AGLSettings(**SETTINGS), seed=3)(model, step=0)
    with pytest.raises(RuntimeError, match="after the model's forward"):
        (model(**_batch(tokenizer)).loss + value).backward()


def _reference_task_grads(scale: float) -> dict[str, torch.Tensor]:
    model, tokenizer = _model()
    model.train()
    (scale * model(**_batch(tokenizer)).loss).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}


def test_zero3_fisher_estimate_equals_the_unpartitioned_model(fake_deepspeed, artifact):
    model, tokenizer = _partitioned_model(fake_deepspeed)
    partitioned = estimate_fisher(model, tokenizer, PROBE[:4], FisherSettings(batch_size=2, max_rank=8), False)
    assert partitioned.metadata["model_fingerprint"] == artifact.metadata["model_fingerprint"]
    for name, module in artifact.modules.items():
        for key, value in module.tensors().items():
            torch.testing.assert_close(partitioned.modules[name].tensors()[key], value, rtol=1e-5, atol=1e-7)
