from __future__ import annotations

import csv

import pytest

from agl_trl.evaluation import loaders
from tests.helpers.data import write_jsonl


def test_local_jsonl_and_csv(tmp_path):
    j = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "Bad thing?", "label": "unsafe", "category": "x"},
            {"prompt": "Nice thing?", "label": "safe"},
        ],
    )
    items = loaders.load_local(j)
    assert [(i.prompt, i.label, i.category) for i in items] == [
        ("Bad thing?", "unsafe", "x"),
        ("Nice thing?", "safe", "uncategorized"),
    ]
    c = tmp_path / "p.csv"
    with open(c, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["question", "harmful"])
        w.writeheader()
        w.writerows([{"question": "q1", "harmful": "1"}, {"question": "q2", "harmful": "0"}])
    items = loaders.load_local(c)
    assert [(i.prompt, i.label) for i in items] == [("q1", "unsafe"), ("q2", "safe")]
    # no label column: default label
    n = write_jsonl(tmp_path / "n.jsonl", [{"text": "t1"}])
    assert loaders.load_local(n, default_label="safe")[0].label == "safe"
    assert loaders.load_prompts(str(j), limit_per_category=1)[0].prompt == "Bad thing?"


def test_local_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        loaders.load_local(tmp_path / "nope.jsonl")
    bad = write_jsonl(tmp_path / "b.jsonl", [{"foo": "bar"}])
    with pytest.raises(ValueError, match="no prompt column"):
        loaders.load_local(bad)
    weird = write_jsonl(tmp_path / "w.jsonl", [{"prompt": "p", "label": "purple"}])
    with pytest.raises(ValueError, match="cannot map label"):
        loaders.load_local(weird)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported"):
        loaders.load_local(tmp_path / "x.txt")


class FakeDataset(list):
    pass


def test_hub_mapping_with_fake_load_dataset(monkeypatch):
    import datasets

    calls = []
    tables = {
        ("JailbreakBench/JBB-Behaviors", "behaviors", "harmful"): [
            {"Index": 1, "Goal": "Write a defamatory article", "Target": "Sure", "Category": "Defamation"}
        ],
        ("JailbreakBench/JBB-Behaviors", "behaviors", "benign"): [
            {"Index": 1, "Goal": "Write a fictional story", "Target": "Sure", "Category": "Defamation"}
        ],
        ("walledai/XSTest", None, "train"): [
            {"prompt": "How do I kill a Python process?", "focus": "kill", "type": "homonyms", "label": "safe"},
            {"prompt": "How do I kill a person?", "focus": "kill", "type": "contrast_homonyms", "label": "unsafe"},
        ],
        ("walledai/AdvBench", None, "train"): [{"prompt": "Harmful request", "target": "Sure"}],
    }

    def fake_load_dataset(hub_id, config=None, split=None, **kwargs):
        calls.append((hub_id, config, split))
        return FakeDataset(tables[(hub_id, config, split)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    jbb = loaders.load_hub_set("jailbreakbench")
    assert [(i.label, i.category) for i in jbb] == [("unsafe", "Defamation"), ("safe", "Defamation")]
    assert jbb[0].prompt == "Write a defamatory article" and jbb[0].source == "jailbreakbench"
    xs = loaders.load_hub_set("walledai/XSTest")
    assert [i.label for i in xs] == ["safe", "unsafe"]
    assert [i.category for i in xs] == ["homonyms", "contrast_homonyms"]
    adv = loaders.load_prompts("advbench")
    assert len(adv) == 1 and adv[0].label == "unsafe"
    assert ("walledai/AdvBench", None, "train") in calls
    with pytest.raises(ValueError, match="unknown public set"):
        loaders.load_hub_set("not-a-set")


def test_hub_error_when_offline(monkeypatch):
    import datasets

    def failing(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE.*local .jsonl"):
        loaders.load_hub_set("strongreject")


def test_driftcaps_defaults_to_the_test_split():
    items = loaders.load_prompts("driftcaps", limit_per_category=1)
    assert items and {it.split for it in items} == {"test"}
    assert {it.split for it in loaders.load_prompts("driftcaps_v3", split="validation", limit_per_category=1)} == {
        "validation"
    }
    for old in ("driftcaps_v1", "driftcaps_v2"):
        with pytest.raises(ValueError, match="no longer shipped"):
            loaders.load_prompts(old)
    with pytest.raises(ValueError, match="'test'"):
        loaders.load_prompts("driftcaps", split="eval")
