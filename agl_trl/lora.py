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

from agl_trl.parallel.sharding import Zero3Gradients, is_zero3_parameter, logical_shape, stack_full

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


def lora_factors(model: nn.Module) -> list[torch.Tensor]:
    """The ``lora_A`` and ``lora_B`` weights of every active LoRA adapter of ``model`` (DoRA included), in module order:
    what :func:`agl_trl.parallel.sharding.sharding_engine` reads to tell the engine."""
    return [t for m in find_lora_modules(model, allow_dora=True) for t in (m.lora_A, m.lora_B)]


def trainable_outside_lora(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that are not LoRA factors (``modules_to_save`` copies, unfrozen embeddings
    or heads, DoRA magnitudes): the part of the update that a penalty on the LoRA factors does not see."""
    factors = {id(t) for t in lora_factors(model)}
    return [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in factors]


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
# The grouper: the LoRA modules of one shape read as one batch, whole on every rank (AGL and every peer penalty)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class LoraGroup:
    """Active LoRA modules of one shape and device, (d_out, d_in, r, device), and their scalings ``scale`` (M,) fp32."""

    modules: list[LoraModule]
    scale: torch.Tensor


@dataclass
class FactorRead:
    """One read of every group's factors: per group ``(B, A)``, B (M, d_out, r) and A (M, r, d_in), fp32 and whole on
    every rank, differentiable w.r.t. the LoRA parameters (under ZeRO-3: w.r.t. the gathered ``copies``, which
    :meth:`LoraGroups.attach` relays to the parameters)."""

    factors: list[tuple[torch.Tensor, torch.Tensor]]
    copies: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def module_factors(self, groups: list[LoraGroup]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``name -> (B, A)`` of each module (views into the stacked factors of ``groups``, the groups read)."""
        return {
            m.name: (B[i], A[i])  # noqa: N806
            for group, (B, A) in zip(groups, self.factors, strict=True)  # noqa: N806
            for i, m in enumerate(group.modules)
        }


class LoraGroups:
    """The one LoRA grouper: a model's active LoRA modules grouped by (d_out, d_in, r, device), read whole.

    Plain, DDP and ZeRO-1/2 read the parameters; FSDP2 stacks each group's DTensor shards and all-gathers them in one
    differentiable collective (:func:`~agl_trl.parallel.sharding.stack_full`); ZeRO-3 gathers fp32 copies and relays
    the penalty's gradient to the parameters inside their own backward
    (:class:`~agl_trl.parallel.sharding.Zero3Gradients`). Used by :class:`~agl_trl.regularizers.AGLRegularizer` and
    the peer penalties on the LoRA factors: compute the penalty on :meth:`read`, pass it through :meth:`attach`.
    """

    def __init__(self) -> None:
        self.groups: list[LoraGroup] = []
        self.found: list[LoraModule] = []  # the modules bound, in module order
        self.bound_to: tuple[int, ...] | None = None  # the layers grouped (ids), None before the first bind
        self._zero3: Zero3Gradients | None = None  # ZeRO-3 only

    def bind(self, modules: list[LoraModule]) -> list[LoraGroup]:
        """Group ``modules`` (from :func:`find_lora_modules`), in first-seen order of their shapes."""
        by_shape: dict[tuple, list[LoraModule]] = {}
        for module in modules:
            by_shape.setdefault((module.d_out, module.d_in, module.rank, module.lora_B.device), []).append(module)
        self.groups = [
            LoraGroup(
                modules=group,
                scale=torch.tensor([m.scaling for m in group], dtype=torch.float32, device=group[0].lora_B.device),
            )
            for group in by_shape.values()
        ]
        self.found = list(modules)
        self.bound_to = tuple(id(m.layer) for m in modules)
        if self._zero3 is not None:
            self._zero3.remove()
        zero3 = any(is_zero3_parameter(t) for m in modules for t in (m.lora_A, m.lora_B))
        self._zero3 = Zero3Gradients([(m.lora_B, m.lora_A) for m in self.modules]) if zero3 else None
        return self.groups

    def update(self, model: nn.Module) -> list[LoraGroup]:
        """The groups of ``model``'s active LoRA modules now (re-grouped when the layers changed).

        Raises:
            LoraIntrospectionError: the model has no active LoRA layer on a linear module.
        """
        modules = find_lora_modules(model)
        if tuple(id(m.layer) for m in modules) != self.bound_to:
            if not modules:
                raise LoraIntrospectionError(no_lora_message(model))
            self.bind(modules)
        return self.groups

    @property
    def modules(self) -> list[LoraModule]:
        """The grouped modules, group by group."""
        return [m for g in self.groups for m in g.modules]

    def read(self, grad: bool) -> FactorRead:
        """Every group's factors, whole on every rank (collective under FSDP2 and ZeRO-3: every rank must call it).

        ``grad``: whether the penalty computed on the read will be back-propagated (ZeRO-3's copies require grad).
        """
        if self._zero3 is None:
            return FactorRead(
                [
                    (stack_full([m.lora_B for m in g.modules]), stack_full([m.lora_A for m in g.modules]))
                    for g in self.groups
                ]
            )
        copies = self._zero3.gather(grad)
        factors, start = [], 0
        for group in self.groups:
            pairs = copies[start : start + len(group.modules)]
            factors.append((torch.stack([b for b, _ in pairs]), torch.stack([a for _, a in pairs])))
            start += len(group.modules)
        return FactorRead(factors, copies)

    def attach(self, total: torch.Tensor, read: FactorRead) -> torch.Tensor:
        """The penalty ``total`` computed on ``read``, ready to add to the loss: itself, or under ZeRO-3 its value
        through a relay whose backward sends its gradient to the parameters (call after the model's forward)."""
        if self._zero3 is None or read.copies is None:
            return total
        return self._zero3.relay(total, read.copies)
