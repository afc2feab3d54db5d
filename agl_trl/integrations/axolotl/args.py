"""Axolotl config keys of AGL: the ``agl_*`` fields as a pydantic model (no torch, trl or axolotl import).

Axolotl merges this model into its config schema (``AxolotlInputConfig(AxolotlInputConfigBase, AGLAxolotlArgs)``), so
the keys are validated together with the rest of the YAML and reach the plugin as ``cfg.agl_*``. Each field is
declared with its type; its default and help come from :mod:`agl_trl.settings` (the one owner of every setting's
default, help, choices and rule), as for ``agl_trl.config.AGLArgs``, and it is checked by the same
:func:`~agl_trl.settings.SettingField.validate`.
An ``agl_*`` key that is no setting is refused with the closest valid key, and with AGL enabled the files the run
will read are checked by the TRL configs' :func:`~agl_trl.preflight.check_sources`, before any model loads.

The one deliberate difference: ``agl_enabled`` defaults to ``False`` here, so listing the plugin alone changes
nothing; ``agl_enabled: true`` switches AGL on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from agl_trl.diagnostics import CUDA_KERNELS_FIX, LORA_KERNEL_KEYS
from agl_trl.parallel import FSDP_OFFLOAD_MESSAGE
from agl_trl.preflight import check_sources
from agl_trl.settings import (
    NO_FISHER_SOURCE,
    SETTING_KEYS,
    SETTINGS_BY_KEY,
    AGLUserError,
    check_known_keys,
    check_weight_settings,
    invalid,
)

# Axolotl `rl:` values whose trainers the AGL mixin supports (None = SFT with AxolotlTrainer; grpo: AxolotlGRPOTrainer).
SUPPORTED_RL = (None, "dpo", "ipo", "kto", "orpo", "simpo", "grpo")
# what to use instead of an `rl:` value AGL refuses, where there is something (said in the error)
RL_INSTEAD = {
    "gdpo": "Axolotl 0.21 cannot build rl: gdpo with a LoRA adapter (it hands the LoRA config to a model that already "
    "has it: GRPOTrainer raises). gdpo is GRPO with `trl.multi_objective_aggregation: normalize_then_sum`: use "
    "`rl: grpo` with that key.",
    "ebft": "EBFT's strided mode has its own loss and sampler, which AGL has not been checked against.",
}
SUPPORTED_ADAPTERS = ("lora", "qlora")

# (default, help) that differ from the TRL side, and why: see the module docstring
AXOLOTL_OVERRIDES = {
    "agl_enabled": (
        False,
        "Add the AlignGuard-LoRA regulariser to the training loss (false or unset: plain Axolotl run).",
    )
}


class _AGLRules(BaseModel):
    """The value rules of :mod:`agl_trl.settings` and the cross-field rules of a training run with AGL."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        """An ``agl_*`` key that is no setting (a typo) is an error naming the closest key, not silently dropped.

        Runs on the raw YAML mapping, before Axolotl's schema (which ignores unknown keys) sees it.
        """
        if isinstance(data, dict):
            check_known_keys(data)
        return data

    @field_validator(*SETTING_KEYS, check_fields=False)
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        return SETTINGS_BY_KEY[info.field_name].validate(value)

    @model_validator(mode="after")
    def _check_combination(self) -> Any:
        """Cross-field rules; ``adapter`` and ``rl`` are Axolotl's own keys (present once merged into its schema)."""
        if not self.agl_enabled:  # type: ignore[attr-defined]
            return self
        if self.agl_fisher_path is None and self.agl_probe_dataset is None:  # type: ignore[attr-defined]
            raise invalid("agl_probe_dataset", None, NO_FISHER_SOURCE)
        check_weight_settings(self.agl_lambda_align, self.agl_kl_every, self.agl_kl_budget)  # type: ignore[attr-defined]
        # Axolotl's LoRA targets: a list of names unless `lora_target_linear` adds every linear layer
        targets = None if getattr(self, "lora_target_linear", None) else getattr(self, "lora_target_modules", None)
        fisher_path, probe = self.agl_fisher_path, self.agl_probe_dataset  # type: ignore[attr-defined]
        model = getattr(self, "base_model", None)
        check_sources(fisher_path, probe, targets, "lora_target_modules", model=model, model_key="base_model")
        if "adapter" in type(self).model_fields:
            adapter = getattr(self, "adapter", None)
            if adapter not in SUPPORTED_ADAPTERS:
                raise AGLUserError(
                    f"`agl_enabled: true` needs a LoRA adapter: set `adapter: lora` or `adapter: qlora` (got "
                    f"adapter={adapter!r}). AGL regularises the LoRA update; full fine-tuning is not supported."
                )
        kernels = [key for key in LORA_KERNEL_KEYS if getattr(self, key, None)]
        if kernels and _without_cuda(getattr(self, "capabilities", None)):  # Axolotl found no GPU (CLI runs)
            raise AGLUserError(
                f"`agl_enabled: true` with `{': true`, `'.join(kernels)}: true` on a machine without a CUDA GPU: AGL's "
                f"probe generation and Fisher estimate run the model and would fail inside these kernels. "
                + CUDA_KERNELS_FIX
            )
        if "fsdp_config" in type(self).model_fields:  # FSDP2 runs (Axolotl has no FSDP1); its param offload does not
            fsdp = getattr(self, "fsdp_config", None)
            offload = fsdp.get("offload_params") if isinstance(fsdp, dict) else getattr(fsdp, "offload_params", None)
            if offload:
                raise AGLUserError(FSDP_OFFLOAD_MESSAGE)
        if "rl" in type(self).model_fields:
            rl = getattr(self, "rl", None)
            rl = getattr(rl, "value", rl)
            if rl not in SUPPORTED_RL:
                supported = ", ".join(str(r) for r in SUPPORTED_RL if r)
                instead = f" {RL_INSTEAD[rl]}" if rl in RL_INSTEAD else ""
                raise AGLUserError(
                    f"`agl_enabled: true` does not support `rl: {rl}`; AGL supports SFT (no `rl:`) and rl: {supported}."
                    + instead
                )
        return self


def _without_cuda(capabilities: Any) -> bool:
    """Whether Axolotl's detected ``capabilities`` say there is no CUDA GPU (unknown, e.g. in Python: ``False``)."""
    if capabilities is None:
        return False
    if isinstance(capabilities, dict):
        return "compute_capability" in capabilities and capabilities["compute_capability"] is None
    return getattr(capabilities, "compute_capability", "unknown") is None


def axolotl_field(key: str) -> Any:
    """The pydantic field of setting ``key``: the default and help of :mod:`agl_trl.settings` (or the Axolotl
    override of :data:`AXOLOTL_OVERRIDES`)."""
    spec = SETTINGS_BY_KEY[key]
    default, description = AXOLOTL_OVERRIDES.get(key, (spec.default, spec.described_help))
    return Field(default=default, description=description)


class AGLAxolotlArgs(_AGLRules):
    """AlignGuard-LoRA settings read from an Axolotl YAML (``plugins: [agl_trl.integrations.axolotl.AGLPlugin]``).

    Every ``agl_*`` key with its type (the choices as ``Literal``); default and help from :mod:`agl_trl.settings`
    (tests/axolotl/test_args.py keeps the declarations equal to it).
    """

    agl_enabled: bool = axolotl_field("agl_enabled")
    agl_fisher_path: str | None = axolotl_field("agl_fisher_path")
    agl_probe_dataset: str | None = axolotl_field("agl_probe_dataset")
    agl_probe_split: str = axolotl_field("agl_probe_split")
    agl_save_fisher: bool = axolotl_field("agl_save_fisher")
    agl_lambda_align: float | None = axolotl_field("agl_lambda_align")
    agl_kl_budget: float = axolotl_field("agl_kl_budget")
    agl_kl_every: int = axolotl_field("agl_kl_every")
    agl_kl_batch_size: int = axolotl_field("agl_kl_batch_size")
    agl_kl_sequences: int = axolotl_field("agl_kl_sequences")
    agl_kl_anchor_every: int | None = axolotl_field("agl_kl_anchor_every")
    agl_kl_anchor_tokens: int = axolotl_field("agl_kl_anchor_tokens")
    agl_lambda_floor: float | None = axolotl_field("agl_lambda_floor")
    agl_align_penalty: bool = axolotl_field("agl_align_penalty")
    agl_lambda_task: float = axolotl_field("agl_lambda_task")
    agl_lambda_collision: float = axolotl_field("agl_lambda_collision")
    agl_mu: float = axolotl_field("agl_mu")
    agl_beta: float = axolotl_field("agl_beta")
    agl_gate: Literal["soft", "hard"] = axolotl_field("agl_gate")
    agl_gate_damping: float = axolotl_field("agl_gate_damping")
    agl_riem_block: int = axolotl_field("agl_riem_block")
    agl_tau_quantile: float = axolotl_field("agl_tau_quantile")
    agl_tau_momentum: float = axolotl_field("agl_tau_momentum")
    agl_fisher_estimator: Literal["kfac", "diagonal"] = axolotl_field("agl_fisher_estimator")
    agl_fisher_targets: Literal["sampled", "empirical"] = axolotl_field("agl_fisher_targets")
    agl_fisher_positions: Literal["all", "response"] = axolotl_field("agl_fisher_positions")
    agl_fisher_max_rank: int = axolotl_field("agl_fisher_max_rank")
    agl_fisher_explained_variance: float = axolotl_field("agl_fisher_explained_variance")
    agl_fisher_max_samples: int = axolotl_field("agl_fisher_max_samples")
    agl_fisher_batch_size: int = axolotl_field("agl_fisher_batch_size")
    agl_fisher_max_length: int = axolotl_field("agl_fisher_max_length")
    agl_fisher_max_new_tokens: int = axolotl_field("agl_fisher_max_new_tokens")
    agl_fisher_sketch: Literal["auto", "exact", "nystrom"] = axolotl_field("agl_fisher_sketch")
    agl_fisher_memory_budget_gb: float = axolotl_field("agl_fisher_memory_budget_gb")
    agl_fisher_seed: int = axolotl_field("agl_fisher_seed")


__all__ = ["AGLAxolotlArgs", "AXOLOTL_OVERRIDES", "RL_INSTEAD", "SUPPORTED_RL", "SUPPORTED_ADAPTERS", "axolotl_field"]
