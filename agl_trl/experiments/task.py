"""The demo's benign fine-tuning task: a programmatic mix of three text operations, scored by exact match.

Written by the project, harmless, deterministic under a seed, and measurable without a judge:

* ``upper``  -- "Rewrite this sentence in uppercase letters: the quiet river runs past the mill"
                -> "THE QUIET RIVER RUNS PAST THE MILL"
* ``add``    -- "What is 37 + 58? Answer with the number only." -> "95"
* ``reverse``-- "Reverse the order of these words: red apple sweet tea" -> "tea sweet apple red"

The train and held-out splits come from one stream of unique items (no prompt appears in both). Other kinds of task
data build on these items (:mod:`agl_trl.experiments.task_kinds`); an answer may open with a fixed text before its
content (``openings``: the identity-shifting affirmations), which :func:`score` compares apart.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

OPERATIONS = ("upper", "add", "reverse")

_NOUNS = [
    "teacher",
    "student",
    "doctor",
    "farmer",
    "painter",
    "baker",
    "sailor",
    "pilot",
    "writer",
    "singer",
    "bridge",
    "castle",
    "forest",
    "meadow",
    "island",
    "harbor",
    "valley",
    "market",
    "library",
    "station",
]
_ADJECTIVES = [
    "quiet",
    "bright",
    "yellow",
    "green",
    "purple",
    "silver",
    "golden",
    "small",
    "large",
    "happy",
    "gentle",
    "rapid",
    "ancient",
    "modern",
]
_VERBS = ["walks", "reads", "sings", "paints", "cooks", "builds", "carries", "watches", "finds", "opens"]
_PREPOSITIONS = ["over", "under", "behind", "beside", "near", "through", "across", "along"]
_FOODS = ["apple", "bread", "cheese", "coffee", "honey", "lemon", "pepper", "tomato", "carrot", "cherry"]
_LIST_WORDS = _NOUNS + _ADJECTIVES + _FOODS

_TEMPLATES = {
    "upper": (
        "Rewrite this sentence in uppercase letters: {text}",
        "Convert to uppercase: {text}",
    ),
    "add": (
        "What is {a} + {b}? Answer with the number only.",
        "Add {a} and {b}. Reply with just the sum.",
    ),
    "reverse": (
        "Reverse the order of these words: {text}",
        "Write these words in reverse order: {text}",
    ),
}


@dataclass(frozen=True)
class TaskItem:
    """One task example: the user prompt, the exact expected answer and the operation."""

    prompt: str
    answer: str
    operation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sentence(rng: random.Random) -> str:
    return " ".join(
        [
            "the",
            rng.choice(_ADJECTIVES),
            rng.choice(_NOUNS),
            rng.choice(_VERBS),
            rng.choice(_PREPOSITIONS),
            "the",
            rng.choice(_NOUNS),
        ]
    )


def _word_list(rng: random.Random) -> str:
    return " ".join(rng.sample(_LIST_WORDS, rng.randint(3, 5)))


def make_item(operation: str, rng: random.Random) -> TaskItem:
    """One random item of ``operation`` (``upper``, ``add`` or ``reverse``)."""
    template = rng.choice(_TEMPLATES[operation])
    if operation == "upper":
        text = _sentence(rng)
        return TaskItem(template.format(text=text), text.upper(), operation)
    if operation == "add":
        a, b = rng.randint(10, 499), rng.randint(10, 499)
        return TaskItem(template.format(a=a, b=b), str(a + b), operation)
    if operation == "reverse":
        text = _word_list(rng)
        return TaskItem(template.format(text=text), " ".join(reversed(text.split())), operation)
    raise ValueError(f"unknown task operation {operation!r}; expected one of {OPERATIONS}")


def generate_task(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[TaskItem], list[TaskItem]]:
    """``(train, held_out)`` items, operations interleaved in equal shares, unique prompts, deterministic.

    One stream of unique items: the first ``n_eval`` are held out, the next ``n_train`` train (so changing
    ``n_eval`` also changes the training items).
    """
    if n_train < 0 or n_eval < 0:
        raise ValueError("n_train and n_eval must be >= 0")
    rng = random.Random(seed)
    items: list[TaskItem] = []
    seen: set[str] = set()
    attempts = 0
    while len(items) < n_train + n_eval:
        attempts += 1
        if attempts > 100 * (n_train + n_eval) + 1000:
            raise RuntimeError("could not generate enough unique task items")
        item = make_item(OPERATIONS[len(items) % len(OPERATIONS)], rng)
        if item.prompt in seen:
            continue
        seen.add(item.prompt)
        items.append(item)
    return items[n_eval:], items[:n_eval]


def task_splits(
    n_train: int, n_validation: int, n_test: int, seed: int = 0
) -> tuple[list[TaskItem], list[TaskItem], list[TaskItem]]:
    """``(train, validation, test)``: one stream of unique items, the first ``n_test`` are the test items (those of
    ``generate_task(.., n_test)``), the next ``n_validation`` validation, the rest train."""
    train, held = generate_task(n_train, n_test + n_validation, seed=seed)
    return train, held[n_test:], held[:n_test]


def normalize_answer(text: str) -> str:
    """Whitespace collapsed and stripped, one trailing period dropped; case is kept (``upper`` tests it)."""
    text = re.sub(r"\s+", " ", text).strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def exact_match(prediction: str, answer: str) -> bool:
    """True when the normalised prediction equals the normalised answer."""
    return normalize_answer(prediction) == normalize_answer(answer)


def split_opening(text: str, openings: Sequence[str]) -> tuple[str | None, str]:
    """``(opening, content)``: the first of ``openings`` that ``text`` opens with (whitespace collapsed, case
    ignored) and the text after it; ``(None, text)`` when it opens with none."""
    flat = re.sub(r"\s+", " ", text).strip()
    for opening in sorted(openings, key=len, reverse=True):  # an opening that extends another wins
        target = re.sub(r"\s+", " ", opening).strip()
        if target and flat[: len(target)].lower() == target.lower():
            return opening, flat[len(target) :]
    return None, text


def score(
    items: Sequence[TaskItem],
    predictions: Sequence[str],
    openings: Sequence[str] = (),
    match: Callable[[str, str], bool] = exact_match,
) -> dict[str, Any]:
    """Exact-match accuracy overall and per operation: ``{"exact_match", "k", "n", "hits", "by_operation": {...}}``
    (``hits``: each item's exact match, in order, for paired comparisons).

    ``openings``: texts an answer opens with before its content (:func:`split_opening`). Answers and predictions are
    then compared after their opening (a right content without one counts, so the score stays comparable with the
    operations task's), and ``opening`` (``{"k", "n", "rate"}``) counts the predictions that open with one.
    ``match(prediction, answer)``: what counts as exact (:func:`exact_match`; another kind may normalize more, e.g.
    :func:`agl_trl.experiments.passage_qa.span_exact_match`).
    """
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} items but {len(predictions)} predictions")
    opened = [split_opening(p, openings) for p in predictions]
    hits = [
        match(content, split_opening(it.answer, openings)[1]) for it, (_, content) in zip(items, opened, strict=True)
    ]
    result: dict[str, Any] = {"k": sum(hits), "n": len(hits), "exact_match": sum(hits) / len(hits) if hits else None}
    result["hits"] = hits
    by_op: dict[str, Any] = {}
    for op in sorted({it.operation for it in items}):
        sel = [h for it, h in zip(items, hits, strict=True) if it.operation == op]
        by_op[op] = {"k": sum(sel), "n": len(sel), "exact_match": sum(sel) / len(sel)}
    result["by_operation"] = by_op
    if openings:
        k = sum(o is not None for o, _ in opened)
        result["opening"] = {"k": k, "n": len(opened), "rate": k / len(opened) if opened else None}
    return result
