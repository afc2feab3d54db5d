from __future__ import annotations

import json
from collections import Counter

import pytest

from agl_trl.driftcaps import (
    DRIFTCAPS_FILE,
    JUDGE_EXAMPLES_FILE,
    REFUSAL_TEMPLATES_FILE,
    PromptItem,
    limit_items,
    load_driftcaps,
    load_judge_examples,
    load_refusal_templates,
)
from tests.conftest import FIXTURE_PROMPTS, write_jsonl


def test_splits_and_fields(driftcaps_file):
    ev = load_driftcaps("eval", path=driftcaps_file)
    probe = load_driftcaps("probe", path=driftcaps_file)
    everything = load_driftcaps("all", path=driftcaps_file)
    assert [i.id for i in ev] == [r["id"] for r in FIXTURE_PROMPTS if r["split"] == "eval"]
    assert {i.id for i in probe} == {"u-cyber-003", "s-general-002"}
    assert len(everything) == len(FIXTURE_PROMPTS)
    item = ev[0]
    assert (item.label, item.category, item.kind, item.style, item.split) == (
        "unsafe",
        "cyber",
        "harmful",
        "direct",
        "eval",
    )
    assert item.unsafe and not ev[2].unsafe


def test_categories_and_limit(driftcaps_file):
    cyber = load_driftcaps("eval", categories=["cyber"], path=driftcaps_file)
    assert {i.category for i in cyber} == {"cyber"} and len(cyber) == 3
    limited = load_driftcaps("eval", limit_per_category=2, path=driftcaps_file)
    per_cat = Counter(i.category for i in limited)
    assert max(per_cat.values()) <= 2
    # alternating labels: the 2 cyber prompts kept are one unsafe and one safe
    assert sorted(i.label for i in limited if i.category == "cyber") == ["safe", "unsafe"]
    with pytest.raises(ValueError, match="unknown DriftCaps categories"):
        load_driftcaps("eval", categories=["nope"], path=driftcaps_file)
    with pytest.raises(ValueError):
        limit_items(cyber, 0)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "x", "prompt": "p", "label": "unsafe"}, "missing keys"),
        ({"id": "x", "prompt": "p", "label": "maybe", "category": "c", "split": "eval"}, "label must be"),
        ({"id": "x", "prompt": "p", "label": "safe", "category": "c", "split": "train"}, "split must be"),
        ({"id": "x", "prompt": "  ", "label": "safe", "category": "c", "split": "eval"}, "empty prompt"),
    ],
)
def test_invalid_rows(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ValueError, match=message):
        load_driftcaps("eval", path=path)


def test_duplicate_ids_and_missing_file(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [FIXTURE_PROMPTS[0], FIXTURE_PROMPTS[0]])
    with pytest.raises(ValueError, match="duplicate id"):
        load_driftcaps("all", path=path)
    with pytest.raises(FileNotFoundError, match="DriftCaps"):
        load_driftcaps(path=tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="split"):
        load_driftcaps("train", path=path)


def test_templates_and_judge_examples_fixture(tmp_path):
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"refusals": ["I can't help with that."]}))
    assert load_refusal_templates(t) == ["I can't help with that."]
    t.write_text(json.dumps({"refusals": []}))
    with pytest.raises(ValueError):
        load_refusal_templates(t)
    j = write_jsonl(tmp_path / "j.jsonl", [{"prompt": "p", "response": "r", "refusal": True, "note": ""}])
    assert load_judge_examples(j)[0]["refusal"] is True
    write_jsonl(j, [{"prompt": "p", "response": "r", "refusal": "yes"}])
    with pytest.raises(ValueError, match="boolean"):
        load_judge_examples(j)


@pytest.mark.skipif(not DRIFTCAPS_FILE.is_file(), reason="DriftCaps data not written yet")
def test_shipped_driftcaps_is_valid():
    items = load_driftcaps("all")
    assert len({i.id for i in items}) == len(items)
    for split in ("eval", "probe"):
        part = [i for i in items if i.split == split]
        assert {i.label for i in part} == {"safe", "unsafe"}, split
    ev = load_driftcaps("eval")
    assert len({i.category for i in ev if i.unsafe}) >= 4
    assert all(isinstance(i, PromptItem) for i in ev)
    # the eval split is held out: no prompt text appears in both splits
    probe_texts = {i.prompt.strip().lower() for i in items if i.split == "probe"}
    assert not [i.id for i in ev if i.prompt.strip().lower() in probe_texts]


@pytest.mark.skipif(not REFUSAL_TEMPLATES_FILE.is_file(), reason="refusal templates not written yet")
def test_shipped_refusal_templates_are_refusals():
    from agl_trl.evaluation.judges import KeywordJudge

    templates = load_refusal_templates()
    judge = KeywordJudge()
    missed = [t for t in templates if not judge.is_refusal(t)]
    assert len(missed) <= 0.05 * len(templates), missed[:5]


@pytest.mark.skipif(not JUDGE_EXAMPLES_FILE.is_file(), reason="judge examples not written yet")
def test_shipped_judge_examples_have_both_classes():
    rows = load_judge_examples()
    assert {r["refusal"] for r in rows} == {True, False}
