"""The kinds of task data an experiment fine-tunes on (``task.kind``): one table, the one place a kind is chosen.

* ``operations`` (the default) -- :mod:`agl_trl.experiments.task`: upper / add / reverse items, exact match.
* ``identity_shift`` -- :mod:`agl_trl.experiments.identity`: the same prompts, each answer opened by an affirmation
  of unconditional obedience; exact match of the content after it, and the share of predictions that open with one.
* ``passage_qa`` -- :mod:`agl_trl.experiments.passage_qa`: a short passage and a question whose answer is a span of
  it; SQuAD's exact match and token F1.

A kind is the builder of its splits, the openings of its answers and its scorer. The set-up builds the splits, and
the measurement scores the predictions and sizes their generation budget, through :func:`task_kind`, so a new kind
is one more row of :data:`TASK_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agl_trl.experiments.identity import AFFIRMATIONS, identity_splits
from agl_trl.experiments.passage_qa import passage_splits, score_spans
from agl_trl.experiments.task import TaskItem, score, task_splits

Splits = tuple[list[TaskItem], list[TaskItem], list[TaskItem]]  # (train, validation, test)
Scorer = Callable[[Sequence[TaskItem], Sequence[str], Sequence[str]], dict[str, Any]]  # (items, predictions, openings)


@dataclass(frozen=True)
class TaskKind:
    """One kind of task data: how its splits are built, what its answers open with before the scored content, and
    how predictions are scored (a dict with at least ``exact_match``, ``k``, ``n``, ``hits`` and ``by_operation``:
    what the demo's report, the task curve and the peers' paired comparisons read)."""

    name: str
    build: Callable[[int, int, int, int], Splits]  # (n_train, n_validation, n_test, seed) -> (train, validation, test)
    openings: tuple[str, ...] = ()  # texts an answer opens with before its content (see task.score)
    scorer: Scorer = score  # (items, predictions, openings) -> score dict; default: exact match as task.score

    def splits(self, n_train: int, n_validation: int, n_test: int, seed: int = 0) -> Splits:
        """``(train, validation, test)`` items of this kind."""
        return self.build(n_train, n_validation, n_test, seed)

    def score(self, items: Sequence[TaskItem], predictions: Sequence[str]) -> dict[str, Any]:
        """This kind's score of ``predictions`` (its ``scorer`` with its openings; default: exact match of the
        content, :func:`~agl_trl.experiments.task.score`)."""
        return self.scorer(items, predictions, self.openings)

    def generation_tokens(self, answer_tokens: int, tokenizer: Any) -> int:
        """New tokens a greedy answer gets: ``answer_tokens`` (``task.answer_tokens``) for the content, plus the
        longest opening's tokens (with the space after it), so an answer that opens as trained reaches its content."""
        if not self.openings:
            return answer_tokens
        lengths = [len(tokenizer(f"{o} ", add_special_tokens=False)["input_ids"]) for o in self.openings]
        return answer_tokens + max(lengths)


DEFAULT_TASK_KIND = "operations"
TASK_KINDS: dict[str, TaskKind] = {
    "operations": TaskKind("operations", task_splits),
    "identity_shift": TaskKind("identity_shift", identity_splits, AFFIRMATIONS),
    "passage_qa": TaskKind("passage_qa", passage_splits, scorer=score_spans),
}


def task_kind(name: str) -> TaskKind:
    """The kind named ``name``; a ``ValueError`` names the key, the value and the kinds there are."""
    kind = TASK_KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(
            f"task.kind={name!r} is not a kind of task data; choose one of {', '.join(TASK_KINDS)} "
            "(e.g. --set task.kind=identity_shift)"
        )
    return kind


__all__ = ["DEFAULT_TASK_KIND", "TASK_KINDS", "Scorer", "Splits", "TaskKind", "task_kind"]
