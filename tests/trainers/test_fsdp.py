"""AGL under FSDP2 (``fully_shard``) on CPU: two gloo processes (the worker is fsdp_worker.py).

* by hand: ``fully_shard`` per decoder layer + root on a tiny LoRA Llama; the regulariser's value, metrics and
  gradient, the task + regulariser gradient of a batch split over the ranks, the Fisher estimate (uneven shards, a
  generated response) and the KL meter equal a single process on the same weights;
* through TRL / accelerate's FSDP2 plugin: an AGL SFT run writes adapter, artifact and ``agl_state.json``, and a run
  resumed from its checkpoint continues it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.distributed import run_two_processes

HERE = Path(__file__).resolve().parent


def _run_worker(tmp_path: Path, *args: str, timeout: int) -> None:
    run_two_processes(
        HERE / "fsdp_worker.py", *args, cwd=tmp_path, timeout=timeout, path=[HERE, HERE.parents[1]],
        what="the FSDP2 worker",
    )  # fmt: skip


def _projector(tensors: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """q diag(eig) q^T: eigenvectors are defined up to sign."""
    if not key.startswith("q_"):
        return tensors[key]
    scaled = tensors[key] * tensors["eig" + key[1:]].sqrt()
    return scaled @ scaled.T


def test_fsdp2_regulariser_fisher_and_meter_equal_a_single_process(tmp_path):
    _run_worker(tmp_path, "core", str(tmp_path), timeout=300)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    single = ranks[0]["single"]
    for rank in ranks:
        fsdp = rank["fsdp"]
        assert fsdp["dtensor"] == "DTensor"  # the LoRA factors really were shards
        assert fsdp["fingerprint_equal"] and fsdp["fisher_world_size"] == 2
        assert fsdp["fisher_tokens"] == fsdp["single_tokens"] > 0
        # the penalty: every rank computes the single process's value, metrics and gradient
        assert fsdp["value"] == pytest.approx(single["value"], rel=1e-6) and single["value"] > 0
        assert fsdp["metrics"] == pytest.approx(single["metrics"], rel=1e-5, abs=1e-9)
        assert all(single["metrics"][k] > 0 for k in ("r_align", "r_task", "e_riem", "e_geo"))
        assert fsdp["raw_kl"] == pytest.approx(single["raw_kl"], rel=1e-6)
        for name, grad in single["grads"].items():
            torch.testing.assert_close(fsdp["grads"][name], grad, rtol=1e-5, atol=1e-8)
        assert max(float(g.abs().max()) for g in single["grads"].values()) > 0
        # a training step: the task gradient averaged over the ranks' batches, the penalty's gradient once
        for name, grad in single["step_grads"].items():
            torch.testing.assert_close(fsdp["step_grads"][name], grad, rtol=1e-4, atol=1e-7)
        # the KL meter: the same forward on every rank
        torch.testing.assert_close(fsdp["meter"]["reference"], single["meter"]["reference"], rtol=1e-5, atol=1e-6)
        assert fsdp["meter"]["kl"] == pytest.approx(single["meter"]["kl"], rel=1e-4)
        # the Fisher: sharded probe, idle pass on the shorter shard, factors all-reduced
        for module, tensors in single["fisher"].items():
            for key in tensors:
                expected, got = _projector(tensors, key), _projector(fsdp["fisher"][module], key)
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


@pytest.mark.slow
def test_agl_sft_under_accelerate_fsdp2_writes_its_outputs_and_resumes(tmp_path, probe_file):
    _run_worker(tmp_path, "train", str(tmp_path), str(probe_file), timeout=600)
    records = json.loads((tmp_path / "train.json").read_text())
    assert records["fsdp_enabled"] and records["fsdp_version"] == 2 and records["param_type"] == "DTensor"
    run = tmp_path / "run"
    assert (run / "agl_fisher" / "fisher.json").is_file() and records["fisher_source"] == "estimated"
    for step in (2, 4):
        checkpoint = run / f"checkpoint-{step}"
        adapter = load_file(checkpoint / "adapter_model.safetensors")  # gathered: whole tensors, not shards
        assert adapter and all(t.shape[-1] == 4 or t.shape[0] == 4 for t in adapter.values())
        assert any(t.shape == (32, 4) for name, t in adapter.items() if "q_proj.lora_B" in name)
        state = json.loads((checkpoint / "agl_state.json").read_text())
        assert state["regularizer"]["budget"]["readings"], "the KL meter read under FSDP2"
    first, second = records["first"], records["second"]
    assert len(first) == 4 and all(e["agl/r_align"] > 0 for e in first)
    assert any("agl/kl_measured" in e for e in first)
    assert [e["step"] for e in first if "agl/kl_anchor" in e] == [3]
    # resumed from checkpoint-2: its state restored, the artifact reused, steps 3-4 continued as before
    assert records["restored_from"].endswith("checkpoint-2") and records["second_fisher_source"] == "checkpoint"
    resumed = [e for e in second if e["step"] > 2]  # the earlier entries come from the checkpoint's state
    assert [e["step"] for e in resumed] == [3, 4]
    for before, after in zip(first[2:], resumed, strict=True):
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-4)
        assert after["agl/r_align"] == pytest.approx(before["agl/r_align"], rel=1e-4)
        assert after["agl/lambda"] == pytest.approx(before["agl/lambda"], rel=1e-6)
        assert after.get("agl/kl_anchor", 0) == pytest.approx(before.get("agl/kl_anchor", 0), rel=1e-4)
