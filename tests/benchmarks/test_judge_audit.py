"""The judge audit: a stratified blind sample, its scores against reading, and no answer to an unsafe prompt published
unless it was read as a refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.lab import judge_audit as ja


def _fake_runs(root: Path) -> None:
    """Every source folder with answers to real DriftCaps ids: refusals to unsafe prompts, answers to safe ones."""
    from agl_trl.driftcaps import load_driftcaps, test_only_styles

    held_out = set(test_only_styles())
    items = load_driftcaps("validation") + [it for it in load_driftcaps("test") if it.style in held_out]
    for model, folder in ja.SOURCES:
        rows = [
            {"id": it.id, "label": it.label, "style": it.style, "form": it.form,
             "response": "I'm sorry, I can't help with that." if it.unsafe else f"Here you go ({model}): {it.id}."}
            for it in items
        ]  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "responses.json").write_text(json.dumps(rows), encoding="utf-8")


def test_sample_is_stratified_blind_and_deterministic(tmp_path: Path) -> None:
    _fake_runs(tmp_path / "root")
    n, per_model = ja.draw_sample(tmp_path / "root", tmp_path / "run", tmp_path / "record")
    key = [json.loads(line) for line in (tmp_path / "record" / ja.KEY_FILE).read_text().splitlines()]
    blind = [json.loads(line) for line in (tmp_path / "run" / ja.BLIND_FILE).read_text().splitlines()]
    assert n == len(key) == len(blind) and n >= 300
    assert set(blind[0]) == {"blind_id", "prompt", "response"}  # the reader sees no model and no verdict
    cells: dict[tuple[str, str, str], int] = {}
    for k in key:
        cells[(k["model"], k["label"], k["style"])] = cells.get((k["model"], k["label"], k["style"]), 0) + 1
    assert all(count == ja.PER_CELL[label] for (_, label, _), count in cells.items())
    assert {k["style"] for k in key if k["model"] == "aligned"} >= {"embedded", "completion"}
    assert per_model["aligned"] > per_model["plain"]  # the test-only styles come from the aligned model only
    assert all(k["keyword_refusal"] == (k["label"] == "unsafe") for k in key)
    ja.draw_sample(tmp_path / "root", tmp_path / "run2", tmp_path / "record2")
    assert (tmp_path / "record2" / ja.KEY_FILE).read_text() == (tmp_path / "record" / ja.KEY_FILE).read_text()


def test_confusion_counts_refusal_as_positive() -> None:
    rows = [
        {"keyword_refusal": True, "reading": "refusal"},
        {"keyword_refusal": True, "reading": "incoherent"},  # a false refusal
        {"keyword_refusal": False, "reading": "refusal"},  # a miss
        {"keyword_refusal": False, "reading": "compliance"},
        {"keyword_refusal": False, "reading": "incoherent"},
    ]
    c = ja.confusion(rows)
    assert (c["agreement"]["k"], c["agreement"]["n"]) == (3, 5)
    assert (c["precision"]["k"], c["precision"]["n"]) == (1, 2)
    assert (c["recall"]["k"], c["recall"]["n"]) == (1, 2)
    assert c["agreement"]["ci_low"] < 0.6 < c["agreement"]["ci_high"]


def test_audit_withholds_unsafe_answers_not_read_as_refusals(tmp_path: Path) -> None:
    _fake_runs(tmp_path / "root")
    ja.draw_sample(tmp_path / "root", tmp_path / "run", tmp_path / "record")
    key = [json.loads(line) for line in (tmp_path / "record" / ja.KEY_FILE).read_text().splitlines()]
    # read every unsafe answer as compliance except the first, and every safe one as compliance
    first_unsafe = next(k["blind_id"] for k in key if k["label"] == "unsafe")
    labels = [
        {"blind_id": k["blind_id"], "reading": "refusal" if k["blind_id"] == first_unsafe else "compliance",
         "refusal_form": "apology" if k["blind_id"] == first_unsafe else None}
        for k in key
    ]  # fmt: skip
    (tmp_path / "record" / ja.LABELS_FILE).write_text("".join(json.dumps(x) + "\n" for x in labels))
    result = ja.audit(tmp_path / "run", tmp_path / "record")
    rows = [json.loads(line) for line in (tmp_path / "record" / ja.AUDIT_FILE).read_text().splitlines()]
    published_unsafe = [r for r in rows if r["label"] == "unsafe" and "response" in r]
    assert [r["blind_id"] for r in published_unsafe] == [first_unsafe]
    assert all("response" in r for r in rows if r["label"] == "safe")
    n_unsafe = sum(k["label"] == "unsafe" for k in key)
    assert (
        result["by_label"]["unsafe"]["precision"]["k"] == 1
        and result["by_label"]["unsafe"]["precision"]["n"] == n_unsafe
    )
    assert result["missed_by_form"] == {}
    assert "| all |" in "\n".join(ja.table(result))


def test_audit_refuses_missing_or_bad_readings_and_changed_answers(tmp_path: Path) -> None:
    _fake_runs(tmp_path / "root")
    ja.draw_sample(tmp_path / "root", tmp_path / "run", tmp_path / "record")
    key = [json.loads(line) for line in (tmp_path / "record" / ja.KEY_FILE).read_text().splitlines()]
    labels_file = tmp_path / "record" / ja.LABELS_FILE
    labels_file.write_text(json.dumps({"blind_id": 0, "reading": "compliance"}) + "\n")
    with pytest.raises(ValueError, match="have no reading"):
        ja.audit(tmp_path / "run", tmp_path / "record")
    bad = [{"blind_id": k["blind_id"], "reading": "refusal", "refusal_form": "shrug"} for k in key]
    labels_file.write_text("".join(json.dumps(x) + "\n" for x in bad))
    with pytest.raises(ValueError, match="refusal_form 'shrug'"):
        ja.audit(tmp_path / "run", tmp_path / "record")
    good = [{"blind_id": k["blind_id"], "reading": "compliance"} for k in key]
    labels_file.write_text("".join(json.dumps(x) + "\n" for x in good))
    blind_file = tmp_path / "run" / ja.BLIND_FILE
    blind = [json.loads(line) for line in blind_file.read_text().splitlines()]
    blind[3]["response"] += " (edited)"
    blind_file.write_text("".join(json.dumps(x) + "\n" for x in blind))
    with pytest.raises(ValueError, match="differs from the sample"):
        ja.audit(tmp_path / "run", tmp_path / "record")
