"""Two-process DDP on CPU (gloo): training finishes and every rank sees the same Fisher and regulariser gradient,
with a KL anchor step among the steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.distributed import free_port

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_two_process_ddp_agrees_across_ranks(tmp_path, probe_file):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parents[1])]), OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        str(HERE / "ddp_worker.py"), str(tmp_path), str(probe_file),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["fisher_world_size"] == 2  # the probe was sharded and the factors all-reduced
    for name, tensors in ranks[0]["fisher"].items():
        for key, value in tensors.items():
            torch.testing.assert_close(ranks[1]["fisher"][name][key], value)
    for name, value in ranks[0]["params"].items():
        torch.testing.assert_close(ranks[1]["params"][name], value)  # DDP kept the replicas in sync
    scale = max(float(g.abs().max()) for g in ranks[0]["reg_grads"].values())
    assert scale > 0
    for name, grad in ranks[0]["reg_grads"].items():
        torch.testing.assert_close(ranks[1]["reg_grads"][name], grad)
    assert ranks[0]["metrics"] == pytest.approx(ranks[1]["metrics"])
    logs = [e for e in ranks[0]["log_history"] if "loss" in e]
    assert len(logs) == 2 and all(e["agl/r_align"] > 0 for e in logs)
    assert "agl/kl_anchor" not in logs[0] and logs[1]["agl/kl_anchor"] > 0  # the anchor step kept the ranks in sync
    assert (tmp_path / "run" / "agl_fisher" / "fisher.json").is_file()
