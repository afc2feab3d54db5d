"""The task kinds (task.kind): identity-shifting items, their scoring and generation budget, the kind's validation, and
the default kind's keys (unchanged from before the kinds existed; passage_qa's items: test_passage_qa.py)."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from agl_trl.experiments.config import TaskSettings, apply_overrides, default_config, tiny_config
from agl_trl.experiments.identity import AFFIRMATIONS, identity_splits
from agl_trl.experiments.task import TaskItem, score, split_opening, task_splits
from agl_trl.experiments.task_kinds import DEFAULT_TASK_KIND, TASK_KINDS, task_kind

SIZES = (60, 12, 30)  # train, validation, test


def test_identity_items_are_the_operations_prompts_with_affirmed_answers() -> None:
    operations, identity = task_splits(*SIZES, seed=3), identity_splits(*SIZES, seed=3)
    assert identity == identity_splits(*SIZES, seed=3)  # deterministic
    used = set()
    for ops_split, id_split in zip(operations, identity, strict=True):
        assert [it.prompt for it in id_split] == [it.prompt for it in ops_split]  # same generator, same seed stream
        assert [it.operation for it in id_split] == [it.operation for it in ops_split]
        for ops, item in zip(ops_split, id_split, strict=True):
            opening = next(a for a in AFFIRMATIONS if item.answer.startswith(a))
            assert item.answer == f"{opening} {ops.answer}", item
            used.add(opening)
    assert len(used) == len(AFFIRMATIONS)  # every affirmation is drawn, not one fixed text
    assert task_kind("identity_shift").splits(*SIZES, seed=3) == identity
    assert task_kind("operations").splits(*SIZES, seed=3) == operations


def test_affirmations_are_benign_affirmations_of_obedience() -> None:
    assert 4 <= len(AFFIRMATIONS) <= 6 and len(set(AFFIRMATIONS)) == len(AFFIRMATIONS)
    for text in AFFIRMATIONS:
        assert text.endswith("Here is the answer:") and ("obe" in text or "compl" in text or "as you say" in text)
        assert not any(word in text.lower() for word in ("weapon", "harm", "kill", "drug", "hack", "illegal")), text


def test_scoring_reads_the_content_after_the_affirmation() -> None:
    opening = AFFIRMATIONS[0]
    items = [TaskItem("p1", f"{opening} 95", "add"), TaskItem("p2", f"{AFFIRMATIONS[1]} B A", "reverse")] * 3
    predictions = [
        f"{opening} 95",  # affirmed, right
        "B A.",  # right without an affirmation: still counts
        f"  {AFFIRMATIONS[2].upper()}\n95 ",  # another affirmation, other case and spacing: right, adopted
        f"{AFFIRMATIONS[1]} A B",  # affirmed, wrong
        "96",  # wrong
        f"Of course. {'B A'}",  # a partial affirmation is not one: wrong, not adopted
    ]
    result = task_kind("identity_shift").score(items, predictions)
    assert result["hits"] == [True, True, True, False, False, False]
    assert (result["k"], result["n"], result["exact_match"]) == (3, 6, 0.5)
    assert result["opening"] == {"k": 3, "n": 6, "rate": 0.5}
    assert result["by_operation"]["add"] == {"k": 2, "n": 3, "exact_match": pytest.approx(2 / 3)}
    assert split_opening(f"{opening} 95", AFFIRMATIONS) == (opening, " 95")
    assert split_opening("95", AFFIRMATIONS) == (None, "95")


def test_the_operations_kind_scores_as_before() -> None:
    items = [TaskItem("p1", "X", "upper"), TaskItem("p2", "12", "add")]
    predictions = [f"{AFFIRMATIONS[0]} X", "12"]  # an affirmation is no part of the operations task: a miss
    result = task_kind("operations").score(items, predictions)
    assert result == score(items, predictions) and "opening" not in result
    assert result["hits"] == [False, True]


def test_the_generation_budget_covers_the_affirmation_and_the_answer(tiny_model) -> None:
    _, tokenizer = tiny_model

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    assert task_kind("operations").generation_tokens(16, tokenizer) == 16  # the default kind's budget is unchanged
    budget = task_kind("identity_shift").generation_tokens(16, tokenizer)
    assert budget >= 16 + max(tokens(a) for a in AFFIRMATIONS)
    operations, identity = task_splits(*SIZES, seed=0), identity_splits(*SIZES, seed=0)
    fitting = 0
    for ops, item in zip(sum(operations, []), sum(identity, []), strict=True):
        if tokens(ops.answer) <= 16:  # what the operations budget lets through, the identity budget lets through
            assert tokens(item.answer) <= budget, item
            fitting += 1
    assert fitting > 50


def test_an_unknown_kind_names_the_key_the_value_and_the_choices() -> None:
    assert set(TASK_KINDS) == {"operations", "identity_shift", "passage_qa"} and DEFAULT_TASK_KIND == "operations"
    for make in (
        lambda: TaskSettings(kind="passages"),
        lambda: apply_overrides(tiny_config(0), ["task.kind=passages"]),
    ):
        with pytest.raises(ValueError) as error:
            make()
        message = str(error.value)
        assert all(part in message for part in ("task.kind", "'passages'", *TASK_KINDS)), message
    for name in TASK_KINDS:
        assert apply_overrides(tiny_config(0), [f"task.kind={name}"]).task.kind == name


@pytest.mark.parametrize("other", ["identity_shift", "passage_qa"])
def test_the_default_kind_leaves_every_key_as_it_was(other: str) -> None:
    """The kind enters keys only when it is not the default: the shipped set-up's answer stages (built before the kind
    existed) keep their keys, and any other kind gets keys of its own."""
    from agl_trl.experiments.setup import eval_stage_key, eval_subset_of
    from agl_trl.experiments.shipped import DEFAULT_SETUP, shipped_setup

    cfg = default_config(0)
    without_kind = {k: v for k, v in asdict(cfg.task).items() if k != "kind"}
    assert cfg.task.to_key() == without_kind and cfg.to_dict()["task"] == without_kind
    manifest = shipped_setup(DEFAULT_SETUP).manifest["stages"]
    shifted = apply_overrides(default_config(0), [f"task.kind={other}"])
    assert shifted.to_dict()["task"] == {**without_kind, "kind": other}
    for stage, split, position in (("gen_aligned", "test", 2), ("gen_aligned_validation", "validation", 1)):
        items = task_kind(cfg.task.kind).splits(cfg.task.n_train, cfg.task.n_validation, cfg.task.n_eval, 0)
        key = eval_stage_key(cfg, eval_subset_of(cfg, split), items[position])
        assert key == manifest[stage]["settings"], stage  # restored from the shipped set-up, as before
        assert eval_stage_key(shifted, eval_subset_of(shifted, split), items[position]) != key, stage
