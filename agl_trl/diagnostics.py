"""Errors raised inside AGL's own steps but caused by something else, said as what caused them and the fix.

AGL's steps run the user's model: the probe generation and the Fisher estimate at train start. When they fail
because of the set-up rather than AGL, the bare error points at AGL's code; :func:`explained` turns the failures it
recognises into an :class:`~agl_trl.setting_rules.AGLUserError` naming the cause and the fix (the original error stays
chained as ``__cause__``), and re-raises every other error unchanged:

* a CUDA or Triton error from a model on the CPU: a CUDA-only kernel is patched into the model, most often
  Axolotl's fused LoRA kernels (``lora_*_kernel``, switched on by default for LoRA);
* chat-message prompts with a tokenizer that has no chat template (:data:`NO_CHAT_TEMPLATE`, raised where the
  prompt is encoded, :func:`agl_trl.generation.encode_prompt`).

A model without LoRA layers to regularise is said by :func:`agl_trl.lora.no_lora_message`. No torch import here.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from agl_trl.setting_rules import AGLUserError

LORA_KERNEL_KEYS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")
"""Axolotl's fused LoRA kernel switches (Triton kernels that need a CUDA GPU)."""

CUDA_KERNELS_FIX = (
    "Axolotl's fused LoRA kernels (`"
    + "`, `".join(LORA_KERNEL_KEYS)
    + "`, switched on by default for LoRA) run only on a CUDA GPU: set them to false to train on the CPU "
    "(recipes/axolotl/tiny-sft-cpu.yaml does), or train on a GPU."
)

NO_CHAT_TEMPLATE = (
    "the tokenizer has no chat template, but this prompt is a list of chat messages (e.g. `messages` records of "
    "`agl_probe_dataset`): give the tokenizer a chat template (Axolotl: `chat_template: chatml`; Python: "
    "`tokenizer.chat_template = ...`), or use probe records with a plain `prompt` string."
)

_CUDA_ERROR = re.compile(r"\bcuda\b|triton|nvidia|\bnvrtc\b|\bcublas|\bgpu\b", re.IGNORECASE)


def _on_cpu(model: Any) -> bool:
    try:
        return next(model.parameters()).device.type == "cpu"
    except (StopIteration, AttributeError, TypeError):
        return False


def explain_failure(error: BaseException, model: Any, step: str) -> AGLUserError | None:
    """The :class:`AGLUserError` for ``error`` raised in AGL's ``step`` on ``model``, or ``None`` if not recognised."""
    if isinstance(error, AGLUserError):
        return None
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    if _CUDA_ERROR.search(f"{type(error).__name__} {error}") and _on_cpu(model):
        return AGLUserError(
            f"AGL's {step} ran the model on the CPU and it failed with a CUDA error ({type(error).__name__}: "
            f"{first_line}): a CUDA-only kernel is patched into the model. {CUDA_KERNELS_FIX}"
        )
    return None


@contextlib.contextmanager
def explained(step: str, model: Any) -> Iterator[None]:
    """Run AGL's ``step`` on ``model``; recognised failures become an :class:`AGLUserError` (see the module doc)."""
    try:
        yield
    except Exception as error:
        explanation = explain_failure(error, model, step)
        if explanation is None:
            raise
        raise explanation from error


__all__ = ["CUDA_KERNELS_FIX", "LORA_KERNEL_KEYS", "NO_CHAT_TEMPLATE", "explain_failure", "explained"]
