"""Helpers for the online RL (GRPO, RLOO) tests: prompt-only records, tiny generation settings, reward functions.

The rewards are importable by dotted path (``tests.helpers.online.length_reward``) for the script tests (they run
from the repository root).
"""

from __future__ import annotations

from typing import Any

from tests.helpers.trainers import FAST_ARGS, PROMPTS

# tiny generation: 2 completions of <= 4 tokens per prompt, so a step takes tens of milliseconds
FAST_ONLINE: dict[str, Any] = dict(
    {key: value for key, value in FAST_ARGS.items() if key != "max_length"},
    per_device_train_batch_size=4,
    num_generations=2,
    max_completion_length=4,
)


def prompt_records(n: int = 16) -> list[dict[str, Any]]:
    return [{"prompt": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]} for i in range(n)]


def _text(completion: Any) -> str:
    return completion if isinstance(completion, str) else completion[0]["content"]


def length_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """Characters in the completion: differs between completions, so the advantages (and the task gradient) do not
    vanish."""
    return [float(len(_text(c))) for c in completions]


def constant_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """The same reward for every completion: every advantage is 0, so the policy loss has no gradient and the
    gradient of a step is the regulariser's alone."""
    return [1.0 for _ in completions]
