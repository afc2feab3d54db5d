"""The peer penalties under FSDP2 and DeepSpeed ZeRO-3: the ones on the LoRA factors (L2-SP, AsFT, Lisa's proximal
term; EWC is AGL's regulariser, tested in tests/core/test_zero3.py and tests/trainers/test_fsdp.py) read them through
AGL's grouper (:class:`agl_trl.lora.LoraGroups`), so their value, metrics and gradients equal a single unsharded
process; those that run forwards of their own in the training step are refused there.

ZeRO-3 is simulated in one process (:class:`tests.core.test_zero3.SimulatedZero3`); FSDP2 runs 2 gloo processes
(sharded_peers_worker.py), as AGL's own tests do.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers.generation.utils  # noqa: F401 - before the fake ``deepspeed`` module, which it looks up

from agl_trl.baselines import KLToReferencePenalty, L2UpdatePenalty, LisaPenalty, RepresentationAnchorPenalty
from agl_trl.generation import Generation
from agl_trl.lora import lora_factors
from agl_trl.parallel import check_parallelism
from agl_trl.parallel.sharding import is_partitioned, sharding_engine
from tests.helpers import lora_models
from tests.helpers.distributed import run_two_processes
from tests.helpers.lora_models import SHARDED_PENALTIES, sharded_lora_model
from tests.helpers.zero3 import partition

HERE = Path(__file__).resolve().parent


def test_forward_running_peers_alone_are_refused_under_fsdp2_and_zero3():
    from torch.distributed.fsdp import OffloadPolicy

    plugin = SimpleNamespace(fsdp_version=2, cpu_offload=OffloadPolicy())
    fsdp2 = SimpleNamespace(
        is_fsdp_enabled=True, accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin))
    )
    zero3 = SimpleNamespace(
        is_deepspeed_enabled=True,
        accelerator=SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=3))),
    )
    ddp = SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=False)
    sequence = Generation(prompt_ids=[1, 2], response_ids=[3], text="")
    forwards = [
        KLToReferencePenalty([sequence]),
        RepresentationAnchorPenalty([[1, 2]]),
        LisaPenalty([sequence], align_steps=1, task_steps=1),
    ]
    on_factors = [L2UpdatePenalty(), LisaPenalty([], align_steps=0), LisaPenalty([sequence], lambda_align_ce=0.0)]
    for trainer in (fsdp2, zero3):
        for penalty in on_factors:
            check_parallelism(trainer, penalty=penalty)
        for penalty in forwards:
            with pytest.raises(NotImplementedError, match=f"{type(penalty).__name__} runs forwards of its own"):
                check_parallelism(trainer, penalty=penalty)
    for penalty in forwards:
        check_parallelism(ddp, penalty=penalty)


def _step(name: str, model, tokenizer, directions, scale: float):
    """The trainer's order: the penalty ready (Lisa anchored), the task's forward, the penalty, backward."""
    penalty = lora_models.sharded_penalty(name, model, directions)
    task = model(
        **lora_models.two_batches(tokenizer)[0]
    ).loss  # one forward: ZeRO-3 reduces each gradient once per backward
    value, metrics = penalty(model, step=1)
    (scale * (task + value)).backward()
    return value.item(), metrics


@pytest.mark.parametrize("checkpointing", [None, "reentrant"])
@pytest.mark.parametrize("name", SHARDED_PENALTIES)
def test_peer_penalty_under_zero3_equals_the_unpartitioned_model(fake_deepspeed, name, checkpointing):  # noqa: F811
    reference, tokenizer = sharded_lora_model()
    directions = lora_models.directions_of(lora_models.random_deltas(reference))
    reference.train()
    value_ref, metrics_ref = _step(name, reference, tokenizer, directions, 0.5)
    grads_ref = {n: p.grad.clone() for n, p in reference.named_parameters() if "lora_" in n}

    model, tokenizer = sharded_lora_model()
    partition(fake_deepspeed, model)
    assert sharding_engine(lora_factors(model)) == "zero3"
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert all(is_partitioned(p) for p in lora.values())  # empty outside forward
    model.train()
    if checkpointing is not None:
        model.gradient_checkpointing_enable({"use_reentrant": True})
        model.enable_input_require_grads()
    value, metrics = _step(name, model, tokenizer, directions, 0.5)
    assert value == pytest.approx(value_ref, rel=1e-6) and value_ref > 0
    assert metrics == pytest.approx(metrics_ref, rel=1e-6)
    for key, param in lora.items():
        assert param.reductions == 1, key  # one reduction per parameter and backward
        torch.testing.assert_close(param.ds_grad, grads_ref[key], rtol=1e-5, atol=1e-8, msg=key)


def test_peer_penalties_under_fsdp2_equal_a_single_process(tmp_path):
    run_two_processes(
        HERE / "sharded_peers_worker.py", str(tmp_path), cwd=tmp_path, timeout=300, path=[HERE.parents[1]],
        what="the FSDP2 peers worker",
    )  # fmt: skip
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    single = ranks[0]["single"]
    for rank in ranks:
        assert rank["dtensor"] == "DTensor"  # the LoRA factors really were shards
        for name in SHARDED_PENALTIES:
            got, want = rank["fsdp"][name], single[name]
            assert got["value"] == pytest.approx(want["value"], rel=1e-6) and want["value"] > 0, name
            assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-5, abs=1e-9), name
            assert max(float(g.abs().max()) for g in want["grads"].values()) > 0, name
            for key, grad in want["grads"].items():
                torch.testing.assert_close(got["grads"][key], grad, rtol=1e-5, atol=1e-8, msg=f"{name} {key}")
            # a training step: the task gradient averaged over the ranks' batches, the penalty's gradient once
            for key, grad in want["step_grads"].items():
                torch.testing.assert_close(got["step_grads"][key], grad, rtol=1e-4, atol=1e-7, msg=f"{name} {key}")
