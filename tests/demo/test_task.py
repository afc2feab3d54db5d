"""The demo's benign task: generator and exact-match metric."""

from __future__ import annotations

import re

import pytest

from agl_trl.experiments.task import OPERATIONS, TaskItem, exact_match, generate_task, normalize_answer, score


def _recompute(item: TaskItem) -> str:
    """Solve a prompt independently of the generator (parses the prompt text)."""
    if item.operation == "add":
        a, b = map(int, re.findall(r"\d+", item.prompt))
        return str(a + b)
    text = item.prompt.split(": ", 1)[1]
    if item.operation == "upper":
        return text.upper()
    return " ".join(reversed(text.split()))


def test_generate_task_is_deterministic_unique_and_disjoint() -> None:
    train, held_out = generate_task(60, 30, seed=3)
    assert (train, held_out) == generate_task(60, 30, seed=3)
    assert generate_task(60, 30, seed=4) != (train, held_out)
    assert len(train) == 60 and len(held_out) == 30
    prompts = [it.prompt for it in train + held_out]
    assert len(set(prompts)) == len(prompts)
    for split in (train, held_out):
        counts = {op: sum(it.operation == op for it in split) for op in OPERATIONS}
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_answers_are_correct() -> None:
    train, held_out = generate_task(90, 30, seed=0)
    for item in train + held_out:
        assert item.answer == _recompute(item), item


def test_generate_task_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError):
        generate_task(-1, 2)


def test_exact_match_normalisation() -> None:
    assert exact_match("  THE CAT  SAT \n", "THE CAT SAT")
    assert exact_match("95.", "95")
    assert not exact_match("the cat sat", "THE CAT SAT")  # case matters: the upper task tests it
    assert not exact_match("95 is the answer", "95")
    assert not exact_match("", "95")
    assert normalize_answer("a  b. ") == "a b"


def test_score_counts_overall_and_per_operation() -> None:
    items = [TaskItem("p1", "X", "upper"), TaskItem("p2", "12", "add"), TaskItem("p3", "b a", "reverse")]
    result = score(items, ["X", "13", "b a."])
    assert (result["k"], result["n"]) == (2, 3)
    assert result["exact_match"] == pytest.approx(2 / 3)
    assert result["by_operation"]["add"] == {"k": 0, "n": 1, "exact_match": 0.0}
    assert result["by_operation"]["reverse"]["k"] == 1
    with pytest.raises(ValueError):
        score(items, ["X"])


def test_grpo_rewards_exact_and_partial_credit() -> None:
    from agl_trl.experiments.online import task_reward, task_similarity_reward

    answers = ["THE CAT SAT", "THE CAT SAT", "95", "95"]
    completions = ["THE CAT SAT.", "THE CAT SIT", [{"role": "assistant", "content": "95"}], "Sure! The answer is 95"]
    assert task_reward(completions, answers) == [1.0, 0.0, 1.0, 0.0]
    similarity = task_similarity_reward(completions, answers)
    assert similarity[0] == 1.0 and similarity[2] == 1.0  # exact match -> full credit
    assert 0.5 < similarity[1] < 1.0  # a near miss is ranked above a chatty one, which still gets some credit
    assert 0.0 < similarity[3] < similarity[1]
    assert task_similarity_reward(["zzzz"], ["95"]) == [0.0]
