"""DeepSpeed ZeRO-3's parameter life cycle simulated in one process (tests/core/test_zero3.py, the sharded peers).

:class:`SimulatedZero3` partitions the parameters of chosen modules as ZeRO-3 does: outside their module's forward
they are empty (``shape [0]``, the real shape in ``ds_shape``); a pre-forward hook gathers them, a post-forward hook
releases them, a hook on the module's output gathers them again for its backward, and a post-accumulate-grad hook
"reduces" each gradient into a partition (``ds_grad``, counting the reductions) and releases the parameter.
``deepspeed.zero.GatheredParameters`` is replaced (:func:`fake_deepspeed`) by a context that gathers and releases.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import types

import pytest
import torch
from torch import nn

from agl_trl.lora import find_lora_modules

_IDS = itertools.count()


class SimulatedZero3:
    """ZeRO-3's parameter life cycle on ``modules`` (see the module docstring)."""

    def __init__(self, modules: list[nn.Module]):
        self.params: list[nn.Parameter] = []
        for module in modules:
            own = list(module.parameters(recurse=False))
            for param in own:
                param.ds_id, param.ds_shape = next(_IDS), tuple(param.shape)
                param.ds_full, param.ds_grad, param.reductions = param.data, None, 0
                if param.requires_grad:
                    param.register_post_accumulate_grad_hook(self._reduce)
                self._release(param)
                self.params.append(param)
            module.register_forward_pre_hook(lambda m, args, own=own: self._gather_all(own))
            module.register_forward_hook(lambda m, args, out, own=own: self._after_forward(own, out))

    def _gather_all(self, params: list[nn.Parameter]) -> None:
        for param in params:
            self._gather(param)

    @staticmethod
    def _gather(param: nn.Parameter) -> None:
        if param.numel() == 0:
            param.data = param.ds_full

    @staticmethod
    def _release(param: nn.Parameter) -> None:
        if param.numel() != 0:
            param.ds_full = param.data
            param.data = torch.empty(0, dtype=param.dtype, device=param.device)

    def _after_forward(self, own: list[nn.Parameter], output: torch.Tensor) -> None:
        for param in own:
            self._release(param)
        if isinstance(output, torch.Tensor) and output.requires_grad:  # gathered again for this module's backward
            output.register_hook(lambda grad: self._gather_all(own))

    def _reduce(self, param: nn.Parameter) -> None:
        param.reductions += 1
        grad = param.grad.detach().clone()
        param.ds_grad = grad if param.ds_grad is None else param.ds_grad + grad
        param.grad = None
        self._release(param)

    @contextlib.contextmanager
    def gathered(self, params, modifier_rank=None):
        """``deepspeed.zero.GatheredParameters``: gathered inside the block, released after (read-only)."""
        assert modifier_rank is None
        were = [p for p in params if p.numel() == 0]
        for param in were:
            self._gather(param)
        try:
            yield
        finally:
            for param in were:
                self._release(param)


@pytest.fixture
def fake_deepspeed(monkeypatch):
    """A ``deepspeed`` module whose ``zero.GatheredParameters`` is the simulation's (installed per test)."""
    holder: dict[str, SimulatedZero3] = {}
    module = types.ModuleType("deepspeed")
    module.zero = types.SimpleNamespace(GatheredParameters=lambda params, **kw: holder["sim"].gathered(params, **kw))
    monkeypatch.setitem(sys.modules, "deepspeed", module)
    return holder


def partition(holder, model) -> None:
    """Partition ``model``'s embedding and LoRA factors as ZeRO-3 does (the simulation kept in ``holder``)."""
    targets = [model.get_input_embeddings()]
    for module in find_lora_modules(model):
        targets += [module.layer.lora_A[module.adapter], module.layer.lora_B[module.adapter]]
    holder["sim"] = SimulatedZero3(targets)
