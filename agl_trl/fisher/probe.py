"""Probe data for Fisher estimation: records -> tokenised sequences with a response-only mask.

A record is ``{"prompt": str | list[chat messages], "response": str | None}``; TRL's conversational
``{"messages": [...]}`` (last assistant turn = response) and prompt/completion (``{"prompt", "completion"}``)
formats are accepted too. Records without a response get the model's own greedy answer (the aligned behaviour is
what the Fisher must describe), generated in batches with left padding.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agl_trl.generation import encode_prompt
from agl_trl.setting_rules import AGLUserError
from agl_trl.teacher_forcing import TokenSequence
from agl_trl.utils import read_jsonl


def _normalise(record: dict[str, Any]) -> dict[str, Any]:
    if "messages" in record and "prompt" not in record:
        messages = list(record["messages"])
        if messages and messages[-1].get("role") == "assistant":
            return {"prompt": messages[:-1], "response": messages[-1]["content"]}
        return {"prompt": messages, "response": None}
    prompt = record.get("prompt")
    if prompt is None:
        raise AGLUserError(
            f"A record of `agl_probe_dataset` has the columns {sorted(record)}, but a probe record needs 'prompt' "
            "(with an optional 'response' or 'completion') or 'messages': rename the columns (e.g. question -> "
            "prompt, answer -> response)."
        )
    response = record.get("response", record.get("completion"))
    if isinstance(response, list):  # conversational completion
        response = response[-1]["content"] if response else None
    return {"prompt": prompt, "response": response}


def load_probe_records(source: str, split: str = "train", max_samples: int | None = None) -> list[dict[str, Any]]:
    """Probe records from ``"driftcaps"`` (the built-in probe split), a local .jsonl/.json file, or a hub id.

    Records keep their response when they have one; otherwise the estimator generates it.
    """
    if source == "driftcaps":
        from agl_trl.driftcaps import alternate_labels, load_driftcaps

        # unsafe and safe alternating: any prefix (agl_fisher_max_samples) or tail (the KL meter's held-out
        # sequences) weighs both sides of the boundary alike
        records = [{"prompt": it.prompt, "response": None} for it in alternate_labels(load_driftcaps(split="probe"))]
    elif Path(source).exists():
        path = Path(source)
        if path.suffix == ".jsonl":
            raw = read_jsonl(path)
        else:
            data = json.loads(path.read_text())
            raw = data if isinstance(data, list) else data.get("data", data.get("records", []))
        records = [_normalise(r) for r in raw]
    else:
        try:
            from datasets import load_dataset

            dataset = load_dataset(source, split=split)
        except Exception as err:  # noqa: BLE001 - surface any loading failure with the fix
            raise FileNotFoundError(
                f"Cannot load the probe dataset '{source}' (not a local file, and loading it as a hub dataset "
                f"failed: {err}). Fix: pass agl_probe_dataset=driftcaps, a local .jsonl file with prompt/response "
                "records, or a hub id reachable from this machine."
            ) from err
        records = [_normalise(dict(r)) for r in dataset]
    if max_samples is not None:
        records = records[:max_samples]
    if not records:
        raise ValueError(f"The probe dataset '{source}' is empty.")
    return records


def records_hash(records: list[dict[str, Any]]) -> str:
    """A stable hash of the probe records, stored in the artifact's metadata."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def prompt_ids(tokenizer, prompt: str | list[dict[str, str]]) -> list[int]:
    """Token ids of the prompt up to the assistant's answer: the same encoding the evaluation uses."""
    return encode_prompt(tokenizer, prompt)


def build_sequences(tokenizer, records: list[dict[str, Any]], max_length: int) -> list[TokenSequence]:
    """Prompt + response (+ EOS) token ids, truncated to ``max_length``, with the response mask."""
    sequences = []
    eos = tokenizer.eos_token_id
    for record in records:
        head = prompt_ids(tokenizer, record["prompt"])
        tail = list(tokenizer(record["response"] or "", add_special_tokens=False)["input_ids"])
        if eos is not None:
            tail.append(eos)
        ids = (head + tail)[:max_length]
        mask = ([0] * len(head) + [1] * len(tail))[:max_length]
        if sum(mask) == 0:
            continue  # prompt alone fills max_length: nothing to measure
        sequences.append(TokenSequence(ids, mask))
    if not sequences:
        raise ValueError(f"No probe sequence has response tokens within max_length={max_length}; raise it.")
    return sequences


def fill_missing_responses(
    model, tokenizer, records: list[dict[str, Any]], max_new_tokens: int, batch_size: int, show_progress: bool
) -> list[dict[str, Any]]:
    """Copies of ``records`` whose missing responses (``None``) are ``model``'s greedy answers, each prompt answered
    once (:class:`~agl_trl.fisher.answers.ProbeAnswers`, nothing stored)."""
    from agl_trl.fisher.answers import ProbeAnswers

    answers = ProbeAnswers(max_new_tokens)
    answers.generate(model, tokenizer, records, batch_size=batch_size, show_progress=show_progress)
    return answers.fill(records)


def meter_records(records: list[dict[str, Any]], fisher_samples: int, count: int) -> tuple[list[dict[str, Any]], int]:
    """The KL meter's probe records: the last ``count`` of those after the ``fisher_samples`` the Fisher reads, or
    the last ``count`` of all records when fewer are held out; also how many are held out (the caller warns)."""
    held_out = records[fisher_samples:]
    pool = held_out if len(held_out) >= count else records
    return [dict(r) for r in pool[-count:]], len(held_out)


def anchor_records(records: list[dict[str, Any]], fisher_samples: int, meter_count: int) -> list[dict[str, Any]]:
    """The KL anchor's probe records: the ``fisher_samples`` the Fisher reads, less any the meter reads (with few
    held-out records the meter falls back to the last ones of all), so that the meter's readings stay held out."""
    held_out = len(records) - fisher_samples
    end = fisher_samples if held_out >= meter_count else max(0, len(records) - meter_count)
    return [dict(r) for r in records[:end]]
