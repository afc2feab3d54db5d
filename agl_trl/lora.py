"""LoRA introspection: find the active LoRA layers of a PEFT model and read their factors.

AGL never forms the update dW = s * B @ A. Everything it needs comes from the factors B (d_out x r), A (r x d_in)
and the scaling s, which this module reads the same way for plain ``nn.Linear`` bases, bitsandbytes 4-bit/8-bit
bases (QLoRA), GPT-2 style ``fan_in_fan_out`` layers and rsLoRA scalings.

Note on ``fan_in_fan_out``: PEFT's LoRA forward is always ``lora_B(lora_A(x)) * s`` with ``lora_A: d_in -> r`` and
``lora_B: r -> d_out``, so the update *as a function* is ``s * B @ A`` (d_out x d_in) whatever the storage layout of
the base weight. The Fisher is estimated in the same function space, so no transpose is needed here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

_PREFIXES = ("module.", "_orig_mod.", "base_model.model.")


class LoraIntrospectionError(ValueError):
    """The model's LoRA set-up is not one AGL can regularise; the message says why and what to do."""


def canonical_module_name(name: str) -> str:
    """Strip wrapper prefixes (DDP ``module.``, ``torch.compile`` ``_orig_mod.``, PEFT ``base_model.model.``).

    The result names the module inside the underlying transformers model, e.g.
    ``model.layers.0.self_attn.q_proj``, so that an artifact estimated on one wrapping matches another.
    """
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                changed = True
    return name


@dataclass
class LoraModule:
    """One active LoRA adapter on one layer."""

    name: str
    layer: nn.Module
    adapter: str
    d_out: int
    d_in: int
    rank: int

    @property
    def lora_A(self) -> torch.Tensor:  # noqa: N802 - PEFT's name
        return self.layer.lora_A[self.adapter].weight

    @property
    def lora_B(self) -> torch.Tensor:  # noqa: N802 - PEFT's name
        return self.layer.lora_B[self.adapter].weight

    @property
    def scaling(self) -> float:
        return float(self.layer.scaling[self.adapter])

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Return ``(B, A, s)`` in fp32 (differentiable), with dW = s * B @ A of shape (d_out, d_in)."""
        return self.lora_B.float(), self.lora_A.float(), self.scaling


def _lora_layer_types() -> tuple[type, ...]:
    from peft.tuners.lora import LoraLayer

    return (LoraLayer,)


def _is_linear_lora(layer: nn.Module, adapter: str) -> bool:
    return adapter in getattr(layer, "lora_A", {}) and isinstance(layer.lora_A[adapter], nn.Linear)


def find_lora_modules(model: nn.Module, adapter: str | None = None, allow_dora: bool = False) -> list[LoraModule]:
    """Every active LoRA adapter on a linear layer of ``model``, in module order.

    Args:
        model: a ``PeftModel`` or any model with PEFT LoRA layers injected (possibly DDP-wrapped).
        adapter: restrict to this adapter name; default: the layer's active adapters.
        allow_dora: DoRA rescales each row by a learned magnitude, so the true update is not ``s * B @ A``;
            AGL refuses it unless the caller accepts regularising the directional part ``s * B @ A`` only.

    Raises:
        LoraIntrospectionError: DoRA adapters (unless allowed), or a layer kind AGL does not support
            (LoRA on embeddings or convolutions is skipped with no error: AGL targets linear layers).
    """
    (lora_layer_type,) = _lora_layer_types()
    found: list[LoraModule] = []
    for raw_name, layer in model.named_modules():
        if not isinstance(layer, lora_layer_type):
            continue
        if getattr(layer, "merged", False):
            continue
        names = [adapter] if adapter is not None else list(getattr(layer, "active_adapters", []) or [])
        for name in names:
            if not _is_linear_lora(layer, name):
                continue
            if getattr(layer, "use_dora", {}).get(name, False) and not allow_dora:
                raise LoraIntrospectionError(
                    f"LoRA layer '{canonical_module_name(raw_name)}' uses DoRA (use_dora=True). DoRA rescales rows "
                    "by a learned magnitude, so the update is not s*B@A and AGL's Fisher penalty would be wrong. "
                    "Fix: train with use_dora=False, or pass allow_dora=True to regularise only the directional part."
                )
            a_shape = logical_shape(layer.lora_A[name].weight)
            b_shape = logical_shape(layer.lora_B[name].weight)
            found.append(
                LoraModule(
                    name=canonical_module_name(raw_name),
                    layer=layer,
                    adapter=name,
                    d_out=int(b_shape[0]),
                    d_in=int(a_shape[1]),
                    rank=int(a_shape[0]),
                )
            )
    return found


def no_lora_message(model: nn.Module) -> str:
    """Why ``model`` has no LoRA layer AGL can regularise (none, merged, inactive, or not on linear layers), and the
    fix; for a model that :func:`find_lora_modules` finds nothing in."""
    (lora_layer_type,) = _lora_layer_types()
    layers = [(canonical_module_name(n), m) for n, m in model.named_modules() if isinstance(m, lora_layer_type)]
    off = "or train without AGL (`agl_enabled: false`)."
    if not layers:
        return (
            "AGL regularises a LoRA update, but the model has no LoRA layers: train with a LoRA adapter "
            f"(`peft_config=LoraConfig(...)` in Python, `use_peft: true` in an agl-trl recipe, `adapter: lora` in "
            f"Axolotl), {off}"
        )
    unmerged = [(name, m) for name, m in layers if not getattr(m, "merged", False)]
    if not unmerged:
        return (
            "AGL regularises a LoRA update, but the model's LoRA layers are merged into its weights (merge_adapter / "
            f"merge_and_unload): train with unmerged adapters, {off}"
        )
    active = [(name, m) for name, m in unmerged if getattr(m, "active_adapters", None)]
    if not active:
        return f"AGL regularises a LoRA update, but no LoRA adapter is active: set an active adapter, {off}"
    kinds = sorted({type(m).__name__ for _, m in active})
    shown = ", ".join(sorted({name.rsplit(".", 1)[-1] for name, _ in active})[:6])
    return (
        f"AGL regularises LoRA on linear layers, but this model's LoRA targets are not linear ({shown}: "
        f"{', '.join(kinds)}): add linear target modules (`target_modules='all-linear'`, or names such as q_proj, "
        f"v_proj; `lora_target_modules` in a recipe), {off}"
    )


def select_modules(modules: list[LoraModule], pattern: str | None) -> list[LoraModule]:
    """Keep the modules whose canonical name matches the regular expression ``pattern`` (all when None)."""
    if not pattern:
        return modules
    regex = re.compile(pattern)
    return [m for m in modules if regex.search(m.name)]


def has_adapter(model: nn.Module) -> bool:
    """True for a ``peft.PeftModel`` or a transformers model with a loaded PEFT adapter."""
    return (
        hasattr(model, "disable_adapter")
        and hasattr(model, "peft_config")
        or bool(getattr(model, "_hf_peft_config_loaded", False))
    )


def _adapter_layers(model: nn.Module) -> list[nn.Module]:
    """The modules whose ``_disable_adapters`` flag PEFT's ``disable_adapter()`` sets: tuner layers and wrappers.

    Besides the LoRA layers these are ``modules_to_save`` / trainable-token wrappers, which then run their original
    module, so the model computes exactly what the base model computes.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    return [m for m in model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]


@contextmanager
def adapters_disabled(model: nn.Module, *, require_adapter: bool = False) -> Iterator[nn.Module]:
    """Run the base model W0 inside the block (yields ``model``): every PEFT adapter is bypassed, then restored.

    Works for a ``PeftModel``, a transformers model with a loaded adapter and a model with LoRA layers injected
    directly; the forward equals the one under PEFT's ``model.disable_adapter()``. PEFT's own switches are not used
    because re-enabling rewrites ``requires_grad`` of the adapters (and would re-enable adapters that were off).
    A model without adapters runs unchanged, unless ``require_adapter=True`` (the caller needs the adapter-free
    model as a reference distinct from the model) makes it raise ValueError.
    """
    if require_adapter and not has_adapter(model):
        raise ValueError(
            "reference=None needs a PEFT model (the reference is the same model with its adapter disabled); "
            "pass reference=<aligned model> otherwise"
        )
    config = getattr(model, "active_peft_config", None)
    if getattr(config, "is_prompt_learning", False) or getattr(config, "is_adaption_prompt", False):
        with model.disable_adapter():  # prompt-based PEFT methods have no adapter layers to switch off
            yield model
        return
    layers = _adapter_layers(model)
    previous = [layer._disable_adapters for layer in layers]
    try:
        for layer in layers:
            layer._disable_adapters = True
        yield model
    finally:
        for layer, was_disabled in zip(layers, previous, strict=True):
            layer._disable_adapters = was_disabled


@contextmanager
def no_cpu_4bit_repacking(model: nn.Module) -> Iterator[None]:
    """Keep bitsandbytes 4-bit weights in their trainable layout during no-grad passes on CPU.

    bitsandbytes >= 0.49 permanently repacks a ``Linear4bit`` weight for a CPU inference kernel the first time it runs
    in eval mode without gradients on an AVX512-BF16 CPU; afterwards backward through the layer yields no gradient,
    which breaks Fisher estimation and any QLoRA training that follows a generation pass (evaluation, probe
    responses). This disables that path for the duration of the context.
    """
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    previous = [m.support_avx512bf16_for_cpu for m in layers]
    try:
        for layer in layers:
            layer.support_avx512bf16_for_cpu = False
        yield
    finally:
        for layer, value in zip(layers, previous, strict=True):
            layer.support_avx512bf16_for_cpu = value


# ---------------------------------------------------------------------------------------------------------------------
# Sharded parameters: FSDP2 (DTensor shards) and DeepSpeed ZeRO-3 (partitioned, empty outside the forward)
# ---------------------------------------------------------------------------------------------------------------------


def is_dtensor(tensor: torch.Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (an FSDP2 parameter)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def is_zero3_parameter(tensor: torch.Tensor) -> bool:
    """True for a parameter managed by DeepSpeed ZeRO-3 (it carries ``ds_id`` / ``ds_shape``)."""
    return hasattr(tensor, "ds_shape") and hasattr(tensor, "ds_id")


def logical_shape(tensor: torch.Tensor) -> torch.Size:
    """The parameter's real shape: ``ds_shape`` under ZeRO-3 (the local tensor is empty), else ``shape`` (global
    for a DTensor)."""
    return torch.Size(tensor.ds_shape) if is_zero3_parameter(tensor) else tensor.shape


def is_partitioned(tensor: torch.Tensor) -> bool:
    """True for a ZeRO-3 parameter that is not gathered now (its local data is not the whole tensor)."""
    return is_zero3_parameter(tensor) and tensor.numel() != logical_shape(tensor).numel()


def sharding_engine(model: nn.Module) -> str | None:
    """``"fsdp2"`` when the model's LoRA factors are DTensors, ``"zero3"`` when DeepSpeed ZeRO-3 manages them, else
    ``None`` (plain, DDP or ZeRO-1/2: every rank holds full parameters)."""
    for module in find_lora_modules(model, allow_dora=True):
        for tensor in (module.lora_A, module.lora_B):
            if is_dtensor(tensor):
                return "fsdp2"
            if is_zero3_parameter(tensor):
                return "zero3"
    return None


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank: ``DTensor.full_tensor()`` for an FSDP2 shard (an all-gather; differentiable,
    so gradients flow back to the shard), the tensor itself otherwise. A partitioned ZeRO-3 parameter cannot be read
    here: read it inside :func:`readable` or from a forward hook."""
    if is_dtensor(tensor):
        return tensor.full_tensor()
    if is_partitioned(tensor):
        raise RuntimeError(
            "A DeepSpeed ZeRO-3 parameter is partitioned here (outside its module's forward); gather it first "
            "(agl_trl.lora.readable)."
        )
    return tensor


@contextmanager
def zero3_gathered(params: list[torch.Tensor]) -> Iterator[None]:
    """Gather the partitioned ZeRO-3 parameters among ``params`` for the block (read only: ``modifier_rank=None``,
    nothing is written back). A no-op without partitioned parameters. Collective: every rank must enter it."""
    partitioned = [p for p in params if is_zero3_parameter(p)]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


@contextmanager
def readable(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield the whole of ``tensor`` as a plain tensor, without gradient, whatever the engine (an all-gather for an
    FSDP2 shard or a ZeRO-3 partition: every rank must enter it)."""
    with torch.no_grad():
        if is_dtensor(tensor):
            yield tensor.full_tensor()
            return
        with zero3_gathered([tensor]):
            yield tensor.detach()


def outermost_fsdp_module(model: nn.Module) -> nn.Module | None:
    """The outermost ``fully_shard`` module of ``model`` (the FSDP2 root), or ``None``."""
    if not torch.distributed.is_available():
        return None
    from torch.distributed.fsdp import FSDPModule

    return next((m for m in model.modules() if isinstance(m, FSDPModule)), None)


def enable_fsdp_generate(model: nn.Module) -> None:
    """Make ``generate`` of the FSDP2 root run FSDP's pre/post-forward (``register_fsdp_forward_method``), once.

    ``model.generate`` calls the inner model's forward, which bypasses the root's own all-gather (and its lazy
    initialisation), so under FSDP2 the embedding would be read as a shard. A no-op without FSDP2. Collective.
    """
    root = outermost_fsdp_module(model)
    if root is None or getattr(root, "_agl_fsdp_generate", False):
        return
    from torch.distributed.fsdp import register_fsdp_forward_method

    register_fsdp_forward_method(root, "generate")
    root._agl_fsdp_generate = True
    # FSDP2 allocates its all-gather buffers at the first forward and reuses them: made inside generate()'s
    # inference mode they would be inference tensors that no later forward may write. One token, without gradient,
    # allocates them as ordinary tensors first (collective: every rank calls this).
    device = next(model.parameters()).device
    ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
