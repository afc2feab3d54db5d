"""The aligned model as data: the unaligned base model plus a stored bf16 safety adapter, merged at load.

Both a fresh set-up build (:mod:`agl_trl.experiments.setup`) and a restored shipped set-up
(:mod:`agl_trl.experiments.shipped`) make their aligned model here, so the two merge the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from agl_trl.model_sources import DEFAULT_MODEL_NAME, model_source

ModelLoader = Callable[[], tuple[Any, Any]]


def model_loader(name: str = DEFAULT_MODEL_NAME) -> ModelLoader:
    """The loader of the unaligned base model ``name`` (``ExperimentConfig.model``): an offline model of
    :mod:`agl_trl.model_sources`, loaded by :func:`agl_trl.models.load_model` when called. The name is checked now (a
    ``ValueError`` names the known models), so a typo fails before any stage runs."""
    model_source(name)

    def load() -> tuple[Any, Any]:
        from agl_trl.models import load_model

        return load_model(name)

    return load


def default_loader() -> tuple[Any, Any]:
    """The unaligned default base model: SmolLM2-135M-Instruct (offline GGUF)."""
    return model_loader(DEFAULT_MODEL_NAME)()


def save_adapter(model: Any, directory: Path) -> None:
    """Save a trained PEFT ``model``'s adapter in bf16 (half the bytes of fp32; the aligned model is *defined* as
    the base plus this stored adapter, so a shipped set-up and a fresh build merge the same numbers)."""
    model.save_pretrained(directory)
    from safetensors.torch import load_file, save_file

    file = directory / "adapter_model.safetensors"
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(file).items()}
    save_file(tensors, file, metadata={"format": "pt"})


def merge_adapter(loader: ModelLoader, adapter: Path, target: Path) -> None:
    """The aligned model: the base model of ``loader`` with the stored ``adapter`` merged into its fp32 weights,
    saved (with the tokenizer) to ``target``."""
    from peft import PeftModel

    model, tokenizer = loader()
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)


__all__ = ["ModelLoader", "default_loader", "merge_adapter", "model_loader", "save_adapter"]
