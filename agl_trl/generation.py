"""Greedy generation: the bottom layer under evaluation, Fisher probes, the scaling measurements and the KL baseline
(their teacher forcing: :mod:`agl_trl.teacher_forcing`).

Generation uses the chat template, LEFT padding and length-sorted batches.

Sorting prompts by token length before batching keeps padding (wasted compute) small; left padding keeps every
prompt's last token adjacent to the generated ones, so batched greedy decoding matches one-at-a-time decoding up to
floating-point ties. ``batch_size=1`` (or ``batched=False``) is the one-at-a-time mode used by the benchmark.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

Prompt = str | Sequence[dict[str, str]]

logger = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an accelerator out-of-memory error (a batch too large for the device)."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


@dataclass
class Generation:
    """One greedy generation: the chat-formatted prompt ids, the new ids (cut after eos) and the decoded text."""

    prompt_ids: list[int]
    response_ids: list[int]
    text: str


def to_messages(prompt: Prompt, system_prompt: str | None = None) -> list[dict[str, str]]:
    """A user prompt string (or a ready message list) as chat messages, with an optional system message."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if system_prompt and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def encode_prompt(tokenizer: Any, prompt: Prompt, system_prompt: str | None = None) -> list[int]:
    """Token ids of the chat-formatted prompt ending in the assistant generation prompt.

    Tokenizers without a chat template get the raw prompt text (with their usual special tokens).
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            to_messages(prompt, system_prompt), tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not isinstance(prompt, str):
        from agl_trl.diagnostics import NO_CHAT_TEMPLATE
        from agl_trl.setting_rules import AGLUserError

        raise AGLUserError(f"Cannot encode a prompt for AGL: {NO_CHAT_TEMPLATE}")
    text = f"{system_prompt}\n\n{prompt}" if system_prompt else prompt
    return list(tokenizer(text)["input_ids"])


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    return ids


def _pad_id(tokenizer: Any, stop_ids: set[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if stop_ids:
        return min(stop_ids)
    raise ValueError("tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Temporarily switch to eval mode (no dropout) and restore training mode afterwards (safe inside training).

    Also keeps bitsandbytes 4-bit weights trainable (no CPU inference repacking), so QLoRA training can continue.
    """
    from agl_trl.lora import no_cpu_4bit_repacking

    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with no_cpu_4bit_repacking(model):
            yield
    finally:
        if was_training:
            model.train()


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    system_prompt: str | None = None,
    batched: bool = True,
    progress: bool = True,
    desc: str = "generate",
    on_batch: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """Greedy generations for ``prompts`` (input order kept). ``batched=False`` decodes one prompt at a time.

    A batch that does not fit the device's memory is halved and retried (a warning says so), down to one prompt.
    ``on_batch(done, total)`` is called after each batch (e.g. to time the first one).
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not batched:
        batch_size = 1
    encoded = [encode_prompt(tokenizer, p, system_prompt) for p in prompts]
    stop_ids = _stop_ids(model, tokenizer)
    pad_id = _pad_id(tokenizer, stop_ids)
    # longest first: a too-large batch fails at once, and similar lengths share a batch (little padding)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    results: list[Generation | None] = [None] * len(encoded)
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,  # also where training turned it off (gradient checkpointing): generation is in eval mode
        "pad_token_id": pad_id,
        "eos_token_id": sorted(stop_ids) or None,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    bar = tqdm(total=len(encoded), desc=desc, unit="prompt", disable=not progress, leave=False)
    with eval_mode(model):
        start = 0
        while start < len(order):
            idx = order[start : start + batch_size]
            try:
                generations = _generate_batch(model, tokenizer, [encoded[i] for i in idx], pad_id, stop_ids, gen_kwargs)
            except RuntimeError as error:  # torch.OutOfMemoryError is one
                if batch_size == 1 or not is_out_of_memory(error):
                    raise
                batch_size = max(1, batch_size // 2)
                logger.warning("AGL: generation ran out of memory; retrying with batches of %d prompts.", batch_size)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for i, generation in zip(idx, generations, strict=True):
                results[i] = generation
            start += len(idx)
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(start, len(order))
    bar.close()
    return [r for r in results if r is not None]


def _generate_batch(
    model: Any, tokenizer: Any, encoded: list[list[int]], pad_id: int, stop_ids: set[int], gen_kwargs: dict[str, Any]
) -> list[Generation]:
    """Greedy answers to one batch of encoded prompts (left padded), each cut after its first stop token."""
    device = model_device(model)
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):  # LEFT padding
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **gen_kwargs)
    generations = []
    for ids, resp in zip(encoded, out[:, width:].tolist(), strict=True):
        cut = next((j for j, t in enumerate(resp) if t in stop_ids), None)
        resp = resp[: cut + 1] if cut is not None else resp  # keep the eos: it is a prediction too
        text = tokenizer.decode(resp, skip_special_tokens=True).strip()
        generations.append(Generation(prompt_ids=ids, response_ids=resp, text=text))
    return generations


def generate_responses(model: Any, tokenizer: Any, prompts: Sequence[Prompt], *args: Any, **kwargs: Any) -> list[str]:
    """The texts of :func:`generate` (same arguments): greedy, chat template, left padding, length-sorted batches."""
    return [g.text for g in generate(model, tokenizer, prompts, *args, **kwargs)]
