"""The passage question-answering scenario of the peers benchmark (``--set task.kind=passage_qa``,
docs/benchmarks.md): its keys are its own, and a tiny run trains and measures on passages with SQuAD's metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agl_trl.experiments.passage_qa import INSTRUCTION, passage_of, score_spans
from agl_trl.experiments.task import TaskItem
from agl_trl.experiments.task_kinds import task_kind
from benchmarks.lab import peers, peers_cli, peers_config

PASSAGE = "task.kind=passage_qa"


def test_the_kind_has_keys_of_its_own() -> None:
    for mode in ("tiny", "full"):
        kinds = ([], ["task.kind=identity_shift"], [PASSAGE])
        keys = [peers_config.config_key(peers_config.build_config(mode, None, None, overrides)) for overrides in kinds]
        assert len(set(keys)) == 3, keys
        cfg = peers_config.build_config(mode, None, None, [PASSAGE])
        base = peers_config.build_config(mode, None, None, [])
        assert peers_config.run_key(cfg, "plain", None) != peers_config.run_key(base, "plain", None)


@pytest.mark.slow
def test_peers_tiny_passage_qa_point_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agl_trl.experiments import training
    from agl_trl.models import tiny_llama

    def loader():
        return tiny_llama(vocab_size=512, seed=0)

    # The tiny byte-level tokenizer spends 1.5-2x SmolLM2's tokens on a passage: its training rows pass the task
    # fine-tune's 256-token max_length (SmolLM2's stay under 190), so the tiny model trains with room for them.
    cfg = peers_config.build_config("tiny", None, ["plain"], [PASSAGE])
    settings = cfg.demo.task
    splits = task_kind(settings.kind).splits(settings.n_train, settings.n_validation, settings.n_eval, cfg.demo.seed)
    _, tokenizer = loader()
    chats = [[{"role": "user", "content": it.prompt}, {"role": "assistant", "content": it.answer}] for it in splits[0]]
    longest = max(len(tokenizer(tokenizer.apply_chat_template(c, tokenize=False))["input_ids"]) for c in chats)
    assert 256 < longest <= 512, longest

    def roomy(*args, **kwargs):
        kwargs["training_overrides"] = {**(kwargs.get("training_overrides") or {}), "max_length": 512}
        return training.train_lora(*args, **kwargs)

    monkeypatch.setattr("agl_trl.experiments.train_lora", roomy)
    out = tmp_path / "passage"
    argv = ["--tiny", "--out", str(out), "--no-progress", "--methods", "plain", "--max-runs", "1"]
    assert peers_cli.main([*argv, "--set", PASSAGE, "--point", "validation:plain:none:0"], loader=loader) == 0
    rows = [json.loads(line) for line in (out / peers.RESULTS_FILE).read_text().splitlines()]
    assert sorted((r["split"], r["method"]) for r in rows) == [
        ("test", "aligned"), ("validation", "aligned"), ("validation", "plain")
    ]  # fmt: skip
    for r in rows:
        assert r["task_kind"] == "passage_qa" and r["config_key"] == peers_config.config_key(cfg)
        assert "task_opening_rate" not in r and 0.0 <= r["task_f1"] <= 1.0
    plain = next(r for r in rows if r["method"] == "plain")
    assert plain["n_train_rows"] == settings.n_train and math.isfinite(plain["final_train_loss"])  # it trained
    # the run was measured on the validation passages, with SQuAD's exact match and F1 of its own predictions
    task = json.loads((peers.train_dir(out, "plain", None, 0) / "validation" / "task.json").read_text())
    assert [t["prompt"] for t in task] == [it.prompt for it in splits[1]]
    assert all(t["prompt"].startswith(INSTRUCTION) and t["answer"] in passage_of(t["prompt"]) for t in task)
    items = [TaskItem(t["prompt"], t["answer"], t["operation"]) for t in task]
    scored = score_spans(items, [t["prediction"] for t in task])
    assert (plain["task_exact_match"], plain["task_f1"]) == (scored["exact_match"], scored["f1"])
    assert plain["verdicts"]["task"] == "".join("1" if h else "0" for h in scored["hits"])
    marker = json.loads((out / "demo" / "gen_aligned_validation" / ".done.json").read_text())
    assert marker["settings"]["kind"] == "passage_qa"
    # an operations run is never resumed in (or mixed into) this file
    assert peers_cli.main([*argv, "--point", "validation:plain:none:0"], loader=loader) == 2
