"""Passage question answering: read a short passage, answer with a span copied from it, scored SQuAD-style.

A task of another kind than the operations (``task.kind=passage_qa``; issue 36): the model must find a fact in a
text it has never seen, not apply a fixed rule. Written by the project, harmless and deterministic under a seed.
Each passage (3-5 sentences, one of :data:`PASSAGE_TEMPLATES`) is about two fictional people, built from the word
lists below: their towns, trades, belongings and their colors, two buildings' years and two counts. Every kind of
fact appears twice, once per person or building, so copying the first name, town or year of the passage is right
about half the time at best. The question asks for one fact; its type (person, town, occupation, color, year,
count) is the item's ``operation``, so the harness's by-operation breakdown is by question type (seed 0, the fourth
test item)::

    Read the passage and answer with the exact words from it.

    Passage: Tilde Tollaby works as an illustrator in Saltmarrow. Ilsa Quillon, a beekeeper, lives in Fernbridge,
    two hours away by train. Tilde owns a green bell, and Ilsa owns a gray scarf. The post office in Saltmarrow
    opened in 1920, and the market hall in Fernbridge opened in 1955. Tilde keeps 48 rabbits, while Ilsa keeps 47.

    Question: What color is Tilde's bell?
    -> green

Splits come from one stream of unique passages with one question each, so no passage (and no prompt) is in two
splits: a test passage is never trained on. The score (:func:`score_spans`) is SQuAD's: exact match and token F1
after lowercasing and dropping punctuation and articles; ``exact_match`` and ``hits`` stay the headline fields the
harness reads.

Sizes (SmolLM2-135M-Instruct's tokenizer, the default sizes' 690 items at seed 0): answers are 1-2 words, at most 7
tokens, within ``task.answer_tokens`` (16); a prompt is 157 tokens at most (127 on average), a whole training row with
the chat template 190 at most, under the 256-token ``max_length`` of the task fine-tune
(:func:`agl_trl.experiments.training.train_lora`). The tests' tiny byte-level tokenizer needs up to 372 tokens, so
tiny runs train on truncated rows: a smoke test, not a measurement.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agl_trl.experiments.task import TaskItem, score, split_opening

INSTRUCTION = "Read the passage and answer with the exact words from it."
QUESTION_TYPES = ("person", "town", "occupation", "color", "year", "count")
"""The question types (each item's ``operation``), interleaved in equal shares."""

FIRST_NAMES = (
    "Mara", "Tomas", "Ilsa", "Joren", "Petra", "Anselm", "Lida", "Corin", "Nadia", "Oskar",
    "Tilde", "Bram", "Elna", "Rufus", "Wren", "Dario", "Greta", "Hollis", "Ines", "Kasimir",
)  # fmt: skip
SURNAMES = (
    "Velin", "Quillon", "Dunmarsh", "Ashwick", "Pellory", "Corvane", "Lindqvar", "Tollaby",
    "Brisbeck", "Fennick", "Orlay", "Sabrel", "Varnholt", "Merrow", "Kestrane", "Halloway",
)  # fmt: skip
TOWNS = (
    "Larkmoor", "Eastmere", "Thornwick", "Wellsby", "Hollowford", "Ambervale", "Stonemere", "Glimmerton",
    "Oakhollow", "Fernbridge", "Saltmarrow", "Kettlewick", "Dunmere", "Port Ellery", "Little Wendmoor",
)  # fmt: skip
OCCUPATIONS = (
    "baker", "carpenter", "librarian", "beekeeper", "potter", "clockmaker", "gardener", "weaver",
    "map maker", "glassblower", "ferry pilot", "tailor", "apple grower", "engineer", "illustrator",
)  # fmt: skip
COLORS = ("green", "blue", "red", "yellow", "purple", "white", "gray", "brown", "pink", "black", "silver")
# (consonant-initial, so "a {color} {object}" always reads right)
OBJECTS = ("boat", "bicycle", "kite", "umbrella", "wagon", "teapot", "lantern", "scarf", "canoe", "sled", "bell")
BUILDINGS = (
    "library", "mill", "lighthouse", "theater", "market hall", "bridge", "clock tower", "school", "post office",
    "town hall", "bathhouse",
)  # fmt: skip
ANIMALS = ("goats", "sheep", "chickens", "beehives", "ducks", "rabbits")
YEARS = (1850, 2019)  # inclusive range of the buildings' years
COUNTS = (3, 95)  # inclusive range of the counts (never a year)


@dataclass(frozen=True)
class PassageTemplate:
    """One passage shape: its sentences (``str.format`` slots of :func:`facts`) and, per question type, the questions
    it can ask with the slot that answers each (one per person or building, so either of a pair may be asked)."""

    name: str
    sentences: tuple[str, ...]
    questions: dict[str, tuple[tuple[str, str], ...]]  # question type -> ((question, answer slot), ...)


PASSAGE_TEMPLATES = (
    PassageTemplate(
        "neighbors",
        (
            "{a} works as {an_occ_a} in {town_a}.",
            "{b}, {an_occ_b}, lives in {town_b}, two hours away by train.",
            "{a_first} owns a {color_a} {obj_a}, and {b_first} owns a {color_b} {obj_b}.",
            "The {building_a} in {town_a} opened in {year_a}, and the {building_b} in {town_b} opened in {year_b}.",
            "{a_first} keeps {count_a} {animals}, while {b_first} keeps {count_b}.",
        ),
        {
            "person": (("Who works as {an_occ_a}?", "a"), ("Who lives in {town_b}?", "b")),
            "town": (("In which town does {a} work?", "town_a"), ("In which town does {b} live?", "town_b")),
            "occupation": (("What is {a}'s job?", "occ_a"), ("What does {b} do for a living?", "occ_b")),
            "color": (("What color is {a_first}'s {obj_a}?", "color_a"), ("What color is the {obj_b}?", "color_b")),
            "year": (("What year did the {building_a} open?", "year_a"), ("When did the {building_b} open?", "year_b")),
            "count": (
                ("How many {animals} does {a_first} keep?", "count_a"),
                ("How many {animals} does {b_first} keep?", "count_b"),
            ),
        },
    ),
    PassageTemplate(
        "move",
        (
            "{b} moved from {town_b} to {town_a} in {year_b} to work as {an_occ_b}.",
            "Across the square, {a} has looked after the old {building_a} since {year_a}.",
            "{a_first} trained as {an_occ_a} and owns a {color_a} {obj_a}; {b_first} owns a {color_b} {obj_b}.",
            "Between them they keep {count_a} {animals} on the hill above {town_a} and {count_b} more in {town_b}.",
        ),
        {
            "person": (("Who moved to {town_a}?", "b"), ("Who looks after the {building_a}?", "a")),
            "town": (("From which town did {b} move?", "town_b"), ("To which town did {b} move?", "town_a")),
            "occupation": (("What did {b} move to work as?", "occ_b"), ("What did {a} train as?", "occ_a")),
            "color": (("What color is {b_first}'s {obj_b}?", "color_b"), ("What color is the {obj_a}?", "color_a")),
            "year": (
                ("In what year did {b} move?", "year_b"),
                ("Since what year has {a} looked after the {building_a}?", "year_a"),
            ),
            "count": (
                ("How many {animals} do they keep on the hill above {town_a}?", "count_a"),
                ("How many {animals} do they keep in {town_b}?", "count_b"),
            ),
        },
    ),
    PassageTemplate(
        "fair",
        (
            "At the {year_a} summer fair in {town_a}, {a}, {an_occ_a}, won first prize with a {color_a} {obj_a}.",
            "Second place went to {b}, {an_occ_b} from {town_b}, whose {color_b} {obj_b} had been made for the "
            "fair of {year_b}.",
            "That day the {building_a} welcomed {count_a} visitors, and {count_b} people stayed for the prizes.",
        ),
        {
            "person": (("Who won first prize?", "a"), ("Who came second?", "b")),
            "town": (("Where was the summer fair held?", "town_a"), ("Which town is {b} from?", "town_b")),
            "occupation": (("What is {a}'s occupation?", "occ_a"), ("What is {b}'s occupation?", "occ_b")),
            "color": (
                ("What color was the winning {obj_a}?", "color_a"),
                ("What color was {b_first}'s {obj_b}?", "color_b"),
            ),
            "year": (
                ("In which year did {a} win first prize?", "year_a"),
                ("For the fair of which year was {b_first}'s {obj_b} made?", "year_b"),
            ),
            "count": (
                ("How many visitors did the {building_a} welcome that day?", "count_a"),
                ("How many people stayed for the prizes?", "count_b"),
            ),
        },
    ),
    PassageTemplate(
        "museum",
        (
            "The museum in {town_a} opened in {year_a} and keeps a {color_a} {obj_a} that once belonged to {a}.",
            "{a_first} worked as {an_occ_a} and lived in {town_a} for {count_a} years.",
            "A smaller gallery in {town_b}, opened in {year_b}, shows a {color_b} {obj_b} made by {b}, {an_occ_b}.",
            "About {count_b} visitors come to the gallery each week.",
        ),
        {
            "person": (("Who made the {obj_b} in the gallery?", "b"), ("Whose {obj_a} is in the museum?", "a")),
            "town": (("In which town is the museum?", "town_a"), ("Where is the gallery?", "town_b")),
            "occupation": (("What did {a} work as?", "occ_a"), ("What is {b}'s occupation?", "occ_b")),
            "color": (
                ("What color is the {obj_a} in the museum?", "color_a"),
                ("What color is the {obj_b} made by {b_first}?", "color_b"),
            ),
            "year": (("When did the museum open?", "year_a"), ("In what year did the gallery open?", "year_b")),
            "count": (
                ("For how many years did {a_first} live in {town_a}?", "count_a"),
                ("How many visitors come to the gallery each week?", "count_b"),
            ),
        },
    ),
    PassageTemplate(
        "market",
        (
            "On Saturdays the market in {town_a} fills the square in front of the {building_a}, which opened in "
            "{year_a}.",
            "{a}, {an_occ_a}, sells {count_a} jars of honey there each week and always brings a {color_a} {obj_a}.",
            "The stall beside it belongs to {b}, {an_occ_b} who comes over from {town_b}.",
            "{b_first} sells {count_b} jars of jam and keeps a {color_b} {obj_b} under the table.",
            "The {building_b} in {town_b}, where {b_first} lives, opened in {year_b}.",
        ),
        {
            "person": (("Who sells honey at the market?", "a"), ("Who sells jam at the market?", "b")),
            "town": (("In which town is the Saturday market?", "town_a"), ("From which town does {b} come?", "town_b")),
            "occupation": (("What is {a}'s trade?", "occ_a"), ("What is {b}'s trade?", "occ_b")),
            "color": (
                ("What color is the {obj_a} that {a_first} brings?", "color_a"),
                ("What color is the {obj_b} under {b_first}'s table?", "color_b"),
            ),
            "year": (
                ("When did the {building_a} in {town_a} open?", "year_a"),
                ("In what year did the {building_b} open?", "year_b"),
            ),
            "count": (
                ("How many jars of honey does {a_first} sell each week?", "count_a"),
                ("How many jars of jam does {b_first} sell?", "count_b"),
            ),
        },
    ),
)
"""The passage shapes (3-5 sentences), each asking every question type about either of its two people."""


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def facts(rng: random.Random) -> dict[str, str]:
    """One passage's slots: two people (``a``, ``b``: full names; ``a_first``, ``b_first``) and two of every other
    fact (towns, occupations, colors, objects, buildings, years, counts), the two of a kind always different."""
    first, surname = rng.sample(FIRST_NAMES, 2), rng.sample(SURNAMES, 2)
    towns, occupations = rng.sample(TOWNS, 2), rng.sample(OCCUPATIONS, 2)
    colors, objects, buildings = rng.sample(COLORS, 2), rng.sample(OBJECTS, 2), rng.sample(BUILDINGS, 2)
    years, counts = rng.sample(range(YEARS[0], YEARS[1] + 1), 2), rng.sample(range(COUNTS[0], COUNTS[1] + 1), 2)
    slots = {"animals": rng.choice(ANIMALS)}
    for i, who in enumerate("ab"):
        slots.update(
            {
                who: f"{first[i]} {surname[i]}", f"{who}_first": first[i], f"town_{who}": towns[i],
                f"occ_{who}": occupations[i], f"an_occ_{who}": _article(occupations[i]), f"color_{who}": colors[i],
                f"obj_{who}": objects[i], f"building_{who}": buildings[i], f"year_{who}": str(years[i]),
                f"count_{who}": str(counts[i]),
            }
        )  # fmt: skip
    return slots


def make_prompt(passage: str, question: str) -> str:
    """The user prompt: the instruction, the passage and the question."""
    return f"{INSTRUCTION}\n\nPassage: {passage}\n\nQuestion: {question}"


def passage_of(prompt: str) -> str:
    """The passage of a prompt :func:`make_prompt` wrote (what the splits keep apart)."""
    match = re.search(r"\n\nPassage: (.*)\n\nQuestion: ", prompt, flags=re.DOTALL)
    if match is None:
        raise ValueError(f"not a passage question prompt: {prompt[:80]!r}")
    return match.group(1)


def make_item(question_type: str, rng: random.Random) -> TaskItem:
    """One random item whose question is of ``question_type`` (one of :data:`QUESTION_TYPES`)."""
    if question_type not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {question_type!r}; expected one of {QUESTION_TYPES}")
    template = rng.choice(PASSAGE_TEMPLATES)
    slots = facts(rng)
    question, answer_slot = rng.choice(template.questions[question_type])
    passage = " ".join(sentence.format(**slots) for sentence in template.sentences)
    return TaskItem(make_prompt(passage, question.format(**slots)), slots[answer_slot], question_type)


def passage_splits(
    n_train: int, n_validation: int, n_test: int, seed: int = 0
) -> tuple[list[TaskItem], list[TaskItem], list[TaskItem]]:
    """``(train, validation, test)``: one stream of items with unique passages (one question each), question types
    interleaved in equal shares; the first ``n_test`` are the test items, the next ``n_validation`` validation, the
    rest train, so no passage is in two splits. Deterministic under ``seed`` (a stream of its own)."""
    if min(n_train, n_validation, n_test) < 0:
        raise ValueError(
            f"passage_splits needs sizes >= 0, got n_train={n_train}, n_validation={n_validation}, n_test={n_test}"
        )
    rng = random.Random(f"passage_qa:{seed}")
    total = n_train + n_validation + n_test
    items: list[TaskItem] = []
    seen: set[str] = set()
    attempts = 0
    while len(items) < total:
        attempts += 1
        if attempts > 100 * total + 1000:
            raise RuntimeError(f"could not generate {total} passages that differ")
        item = make_item(QUESTION_TYPES[len(items) % len(QUESTION_TYPES)], rng)
        passage = passage_of(item.prompt)
        if passage not in seen:
            seen.add(passage)
            items.append(item)
    return items[n_test + n_validation :], items[n_test : n_test + n_validation], items[:n_test]


_PUNCTUATION = frozenset(string.punctuation)


def normalize_span(text: str) -> str:
    """SQuAD's answer normalization: lowercase, punctuation dropped, articles (a, an, the) dropped, whitespace
    collapsed; so "The Larkmoor." and "larkmoor" are the same answer."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def span_exact_match(prediction: str, answer: str) -> bool:
    """True when the normalized prediction equals the normalized answer (:func:`normalize_span`)."""
    return normalize_span(prediction) == normalize_span(answer)


def span_f1(prediction: str, answer: str) -> float:
    """SQuAD's token F1 of the normalized texts: the harmonic mean of the shares of the prediction's and of the
    answer's tokens that the two have in common (1.0 when both are empty, 0.0 when only one is)."""
    predicted, expected = normalize_span(prediction).split(), normalize_span(answer).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def score_spans(items: Sequence[TaskItem], predictions: Sequence[str], openings: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`~agl_trl.experiments.task.score` with SQuAD's exact match (:func:`span_exact_match`: ``exact_match``,
    ``hits``, ``k``, ``by_operation``), plus the mean token F1 (:func:`span_f1`) overall and per question type
    (``f1``); ``openings`` as there."""
    result = score(items, predictions, openings, match=span_exact_match)
    f1s = [
        span_f1(split_opening(p, openings)[1], split_opening(it.answer, openings)[1])
        for it, p in zip(items, predictions, strict=True)
    ]
    result["f1"] = sum(f1s) / len(f1s) if f1s else None
    for op, entry in result["by_operation"].items():
        sel = [f for it, f in zip(items, f1s, strict=True) if it.operation == op]
        entry["f1"] = sum(sel) / len(sel)
    return result


__all__ = [
    "INSTRUCTION",
    "PASSAGE_TEMPLATES",
    "QUESTION_TYPES",
    "PassageTemplate",
    "facts",
    "make_item",
    "make_prompt",
    "normalize_span",
    "passage_of",
    "passage_splits",
    "score_spans",
    "span_exact_match",
    "span_f1",
]
