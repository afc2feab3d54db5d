"""Shared by the multi-process tests (DDP, FSDP2, DeepSpeed; TRL and Axolotl): a free port for torch.distributed.run,
a two-process run of a worker script, and the two test-only bends that let accelerate's and Axolotl's FSDP2 paths run
on a CPU-only machine (gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port free on localhost now (for ``--master_port``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(script: Path, *args: str, cwd: Path, timeout: int, path: list[Path], what: str) -> None:
    """Run ``script args`` under torch.distributed.run as 2 CPU processes (1 thread each, ``path`` on PYTHONPATH);
    fail the test when ``what`` hangs past ``timeout`` seconds or exits with an error (its stderr's tail)."""
    import pytest

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in path), OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        str(script), *args,
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} hung: {exc}")
    assert result.returncode == 0, result.stderr[-6000:]


def whole(tensor: Any) -> Any:
    """The whole tensor on every rank (an FSDP2 DTensor shard all-gathered), a plain tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def penalty_and_gradients(penalty: Any, model: Any, params: dict[str, Any], step: int) -> dict[str, Any]:
    """A penalty's ``value``, ``metrics`` and ``grads`` (whole, w.r.t. ``params``) at ``step``, on every rank."""
    import torch

    model.zero_grad(set_to_none=True)
    value, metrics = penalty(model, step=step)
    grads = torch.autograd.grad(value, list(params.values()))
    return {
        "value": float(value),
        "metrics": metrics,
        "grads": {n: whole(g).detach().clone() for n, g in zip(params, grads, strict=True)},
    }


def step_gradients(penalty: Any, model: Any, params: dict[str, Any], batches: list[dict], step: int) -> dict[str, Any]:
    """The whole gradients of task + penalty, the task data parallel: rank r takes ``batches[r]``; one process
    averages the losses of all (DDP and FSDP2 average the ranks' gradients)."""
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    task = sum(model(**b).loss for b in batches) / len(batches) if world == 1 else model(**batches[rank]).loss
    value, _ = penalty(model, step=step)
    (task + value).backward()
    grads = {n: whole(p.grad).detach().clone() for n, p in params.items()}
    model.zero_grad(set_to_none=True)
    return grads


def allow_fsdp_on_cpu() -> None:
    """Keep accelerate's FSDP plugin on a CPU-only (gloo) machine, where ``AcceleratorState`` would drop it (its device
    check lists accelerators only; the distributed type lives in ``PartialState``, which every later
    ``AcceleratorState()`` copies back). Everything after that is accelerate's own FSDP2 code."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = init


def build_device_mesh_on_cpu() -> None:
    """Axolotl 0.21 builds its device mesh on ``"cuda"`` unconditionally (``axolotl.utils.distributed.
    build_parallelism_config``): build it on ``"cpu"`` instead."""
    from accelerate import parallelism_config

    original = parallelism_config.ParallelismConfig.build_device_mesh

    def build(self, device_type):
        return original(self, "cpu")

    parallelism_config.ParallelismConfig.build_device_mesh = build
