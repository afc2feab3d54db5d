"""Safety data mixing: add refusal examples to the task data (the classic baseline; a data change, not a penalty).

Mixing a small share of safety examples (harmful prompts with refusals) into the fine-tuning data is the standard
defence against alignment drift under fine-tuning, e.g. Qi et al. 2024 ("Fine-tuning Aligned Language Models
Compromises Safety, Even When Users Do Not Intend To!", ICLR 2024: mixing safety data) and Bianchi et al. 2024
("Safety-Tuned LLaMAs: Lessons From Improving the Safety of Large Language Models that Follow Instructions",
ICLR 2024: a few hundred safety examples, about 3% of the data, substantially improve safety).

:func:`mix_safety_rows` adds ``round(fraction * len(task_rows))`` (at least one) safety rows, so ``fraction`` is the number of safety
rows per task row (0.03 -> 3 per 100 task rows; the safety share of the mixed data is fraction / (1 + fraction)).
There is no penalty and nothing changes in the loss or the trainer: train on the returned rows as on the task rows.

Cost: none per step; at a fixed number of epochs the run is ``1 + fraction`` times longer, and at a fixed number of
optimizer steps the safety rows take a ``fraction / (1 + fraction)`` share of the steps' examples from the task.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


def _check_rows(name: str, rows: Sequence[Any]) -> None:
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "prompt" not in row or "answer" not in row:
            raise ValueError(f"{name}[{i}] must be a dict with 'prompt' and 'answer' keys, got {row!r}.")


def mix_safety_rows(
    task_rows: Sequence[dict[str, Any]], safety_rows: Sequence[dict[str, Any]], fraction: float, seed: int = 0
) -> list[dict[str, Any]]:
    """The task rows with ``round(fraction * len(task_rows))`` (at least 1 when fraction > 0) safety rows inserted at seeded random positions.

    The task rows keep their relative order (``fraction=0`` returns them unchanged); the safety rows are sampled
    without replacement when there are enough, with replacement otherwise (logged as a warning). Rows are dicts with
    ``"prompt"`` and ``"answer"`` keys; the returned list holds the same dict objects (not copies). Deterministic in
    ``seed``.

    Raises:
        ValueError: ``fraction`` outside [0, 1), rows without ``prompt``/``answer``, or no safety rows to draw from.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ValueError(
            f"fraction must be a number in [0, 1) (safety rows added per task row, e.g. 0.03), got {fraction!r}."
        )
    _check_rows("task_rows", task_rows)
    _check_rows("safety_rows", safety_rows)
    count = max(1, round(fraction * len(task_rows))) if fraction > 0 and task_rows else 0  # > 0 mixes something
    if count == 0:
        return list(task_rows)
    if not safety_rows:
        raise ValueError(
            f"fraction={fraction} of {len(task_rows)} task rows needs {count} safety rows, but safety_rows is empty; "
            "pass refusal examples or use fraction=0."
        )
    rng = random.Random(seed)
    if count <= len(safety_rows):
        chosen = rng.sample(list(safety_rows), count)
    else:
        logger.warning(
            "mix_safety_rows: %d safety rows requested (fraction=%s of %d task rows) but only %d exist; sampling "
            "with replacement, so some safety rows appear more than once.",
            count, fraction, len(task_rows), len(safety_rows),
        )  # fmt: skip
        chosen = rng.choices(list(safety_rows), k=count)
    total = len(task_rows) + count
    positions = set(rng.sample(range(total), count))
    tasks, safety = iter(task_rows), iter(chosen)
    return [next(safety) if i in positions else next(tasks) for i in range(total)]
