"""Passage question answering (task.kind=passage_qa): the items (deterministic, answers copied from their passage,
distractors beside them, no passage in two splits), SQuAD's exact match and token F1, the kind's scorer hook and its
generation budget."""

from __future__ import annotations

import re

import pytest

from agl_trl.experiments.passage_qa import (
    COLORS,
    FIRST_NAMES,
    INSTRUCTION,
    OCCUPATIONS,
    PASSAGE_TEMPLATES,
    QUESTION_TYPES,
    SURNAMES,
    TOWNS,
    normalize_span,
    passage_of,
    passage_splits,
    score_spans,
    span_exact_match,
    span_f1,
)
from agl_trl.experiments.task import TaskItem, score
from agl_trl.experiments.task_kinds import task_kind

SIZES = (120, 24, 60)  # train, validation, test


def _words(values: tuple[str, ...], passage: str) -> list[tuple[int, str]]:
    return [(m.start(), v) for v in values for m in re.finditer(rf"\b{re.escape(v)}\b", passage)]


def mentions(question_type: str, passage: str) -> list[str]:
    """The facts of ``question_type`` the passage states, in order of first appearance (read from the text alone)."""
    if question_type == "person":
        names = tuple(f"{f} {s}" for f in FIRST_NAMES for s in SURNAMES)
        found = _words(names, passage)
    elif question_type in ("town", "occupation", "color"):
        found = _words({"town": TOWNS, "occupation": OCCUPATIONS, "color": COLORS}[question_type], passage)
    else:
        numbers = [(m.start(), m.group()) for m in re.finditer(r"\b\d+\b", passage)]
        found = [(i, n) for i, n in numbers if (len(n) == 4) == (question_type == "year")]
    return list(dict.fromkeys(v for _, v in sorted(found)))


def template_of(passage: str) -> str:
    """The one template whose fixed words (the text between its slots) all appear in ``passage``."""
    fixed = {
        t.name: [part.strip() for s in t.sentences for part in re.split(r"\{\w+\}", s) if len(part.strip()) > 3]
        for t in PASSAGE_TEMPLATES
    }
    (name,) = [name for name, parts in fixed.items() if all(part in passage for part in parts)]
    return name


def test_items_are_deterministic_balanced_and_of_the_kind() -> None:
    train, validation, test = splits = passage_splits(*SIZES, seed=3)
    assert splits == passage_splits(*SIZES, seed=3)
    assert passage_splits(*SIZES, seed=4) != splits
    assert task_kind("passage_qa").splits(*SIZES, seed=3) == splits
    assert [len(s) for s in splits] == [120, 24, 60]
    for split in splits:
        counts = [sum(it.operation == t for it in split) for t in QUESTION_TYPES]
        assert max(counts) - min(counts) <= 1, counts
    assert passage_splits(10, 24, 60, seed=3)[2] == test  # the test items do not move with the training size
    assert all(it.prompt.startswith(f"{INSTRUCTION}\n\nPassage: ") for it in train + validation + test)
    with pytest.raises(ValueError, match="n_train=-1"):
        passage_splits(-1, 2, 2)


def test_every_answer_is_a_span_of_its_passage_beside_a_distractor() -> None:
    items = sum(passage_splits(*SIZES, seed=0), [])
    first = 0
    for item in items:
        passage = passage_of(item.prompt)
        assert 3 <= len(re.findall(r"[.?!](?= |$)", passage)) <= 5, passage  # 3-5 sentences
        assert 1 <= len(item.answer.split()) <= 4 and item.answer in passage, item
        for question_type in QUESTION_TYPES:  # every kind of fact twice: one of them is the distractor
            assert len(mentions(question_type, passage)) == 2, (question_type, passage)
        stated = mentions(item.operation, passage)
        assert item.answer in stated, item  # the answer is one of the stated facts of its type
        first += stated[0] == item.answer
    assert 0.3 < first / len(items) < 0.7, first  # copying the first fact of the asked type is right half the time
    used = [template_of(passage_of(it.prompt)) for it in items]
    assert set(used) == {t.name for t in PASSAGE_TEMPLATES}  # every passage shape is drawn


def test_no_passage_is_in_two_splits() -> None:
    splits = passage_splits(*SIZES, seed=1)
    passages = [{passage_of(it.prompt) for it in split} for split in splits]
    assert [len(p) for p in passages] == [len(s) for s in splits]  # one question per passage
    train, validation, test = passages
    assert not (train & validation) and not (train & test) and not (validation & test)


def test_passage_of_refuses_another_prompt() -> None:
    with pytest.raises(ValueError, match="not a passage question prompt"):
        passage_of("What is 37 + 58? Answer with the number only.")


def test_normalization_ignores_case_punctuation_articles_and_spacing() -> None:
    assert normalize_span("  The  Map-Maker!\n") == "mapmaker"
    for prediction, answer in (
        ("The Larkmoor.", "Larkmoor"),
        ("GREEN!", "green"),
        ("an apple grower", "apple grower"),
        ("mara   velin.", "Mara Velin"),
        ('"1987"', "1987"),
    ):
        assert span_exact_match(prediction, answer), (prediction, answer)
        assert span_f1(prediction, answer) == 1.0
    assert not span_exact_match("Eastmere", "Larkmoor") and span_f1("Eastmere", "Larkmoor") == 0.0
    assert not span_exact_match("", "Larkmoor") and span_f1("", "Larkmoor") == 0.0


def test_f1_gives_partial_credit_where_exact_match_gives_none() -> None:
    assert span_f1("Mara", "Mara Velin") == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert span_f1("in Port Ellery", "Port Ellery") == pytest.approx(0.8)  # precision 2/3, recall 1
    assert span_f1("the ferry from Port Ellery", "Port Ellery") == pytest.approx(2 / 3)  # 2/4 and 1 (no article)
    assert not span_exact_match("Mara", "Mara Velin")
    items = [
        TaskItem("p1", "Mara Velin", "person"),
        TaskItem("p2", "green", "color"),
        TaskItem("p3", "1987", "year"),
        TaskItem("p4", "Port Ellery", "town"),
    ]
    result = score_spans(items, ["Mara", "The green.", "1978", "port ellery"])
    assert result["hits"] == [False, True, False, True]
    assert (result["k"], result["n"], result["exact_match"]) == (2, 4, 0.5)
    assert result["f1"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)
    assert result["by_operation"]["person"] == {"k": 0, "n": 1, "exact_match": 0.0, "f1": pytest.approx(2 / 3)}
    assert result["by_operation"]["color"] == {"k": 1, "n": 1, "exact_match": 1.0, "f1": 1.0}


def test_the_scorer_hook_belongs_to_the_kind() -> None:
    """passage_qa scores through its own scorer; the operations and identity kinds keep task.score's results."""
    items = [TaskItem("p1", "THE CAT", "upper"), TaskItem("p2", "95", "add")]
    predictions = ["the cat", "95."]
    passage = task_kind("passage_qa").score(items, predictions)
    assert passage["hits"] == [True, True] and passage["f1"] == 1.0
    for name in ("operations", "identity_shift"):
        result = task_kind(name).score(items, predictions)
        assert result["hits"] == [False, True] and "f1" not in result  # case matters there (the upper task)
    assert task_kind("operations").score(items, predictions) == score(items, predictions)


def test_the_generation_budget_covers_every_answer(tiny_model) -> None:
    _, tokenizer = tiny_model
    assert task_kind("passage_qa").generation_tokens(16, tokenizer) == 16  # no opening: the content's budget only
    items = sum(passage_splits(*SIZES, seed=0), [])
    lengths = [len(tokenizer(it.answer, add_special_tokens=False)["input_ids"]) for it in items]
    assert max(lengths) <= 16, max(lengths)
