"""The identity-shifting scenario of the peers benchmark (``--set task.kind=identity_shift``, docs/benchmarks.md):
its keys never meet the operations task's, the default's keys stay those of the committed rows, and a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agl_trl.experiments.identity import AFFIRMATIONS
from benchmarks.lab import grpo_bench, peers, peers_cli, peers_config, registry

REPO = Path(__file__).resolve().parents[2]
SHIFT = "task.kind=identity_shift"


def test_the_default_config_key_is_the_committed_rows_key() -> None:
    """The fold rows in docs/results were made with the default task before ``task.kind`` existed: the default
    configuration still resumes them."""
    keys = {
        json.loads(line)["config_key"]
        for path in sorted((REPO / "docs" / "results" / "folds").rglob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
    assert keys == {peers_config.config_key(peers_config.build_config("full", None, None, []))}


def test_the_kind_rekeys_the_results_file_and_every_run() -> None:
    for mode in ("tiny", "full"):
        base = peers_config.build_config(mode, None, None, [])
        shifted = peers_config.build_config(mode, None, None, [f"{SHIFT}"])
        assert peers_config.config_key(shifted) != peers_config.config_key(base)
        named = peers_config.build_config(mode, None, None, ["task.kind=operations"])  # the default, named
        assert peers_config.config_key(named) == peers_config.config_key(base)
        for method in (*registry.ALL_METHODS, "aligned"):
            strength = None if method in ("plain", "aligned") else base.grid(method)[0]
            assert peers_config.run_key(shifted, method, strength) != peers_config.run_key(base, method, strength)
            assert peers_config.run_key(named, method, strength) == peers_config.run_key(base, method, strength)


def test_an_unknown_kind_or_the_grpo_scenario_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert peers_cli.main(["--tiny", "--set", "task.kind=nope"]) == 2
    assert "task.kind='nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="task.kind='identity_shift'.*operations task's answers only"):
        grpo_bench.grpo_config("tiny", 1, [SHIFT])
    assert grpo_bench.main(["--tiny", "--set", SHIFT]) == 2


@pytest.mark.slow
def test_peers_tiny_identity_shift_point_end_to_end(tmp_path: Path) -> None:
    from agl_trl.models import tiny_llama

    def loader():
        return tiny_llama(vocab_size=512, seed=0)

    out = tmp_path / "identity"
    argv = ["--tiny", "--out", str(out), "--no-progress", "--methods", "plain", "--max-runs", "1"]
    assert peers_cli.main([*argv, "--set", SHIFT, "--point", "validation:plain:none:0"], loader=loader) == 0
    rows = [json.loads(line) for line in (out / peers.RESULTS_FILE).read_text().splitlines()]
    assert sorted((r["split"], r["method"]) for r in rows) == [
        ("test", "aligned"), ("validation", "aligned"), ("validation", "plain")
    ]  # fmt: skip
    cfg = peers_config.build_config("tiny", None, ["plain"], [SHIFT])
    for r in rows:
        assert r["task_kind"] == "identity_shift" and r["config_key"] == peers_config.config_key(cfg)
        assert r["run_key"] == peers_config.run_key(cfg, r["method"], None)
    plain = next(r for r in rows if r["method"] == "plain")
    # the run trained on affirmed answers and was measured on them, with the budget for affirmation + answer
    task = json.loads((peers.train_dir(out, "plain", None, 0) / "validation" / "task.json").read_text())
    assert task and all(any(t["answer"].startswith(a) for a in AFFIRMATIONS) for t in task)
    opened = sum(any(t["prediction"].startswith(a) for a in AFFIRMATIONS) for t in task)
    assert plain["task_opening_rate"] == opened / len(task)
    _, tokenizer = loader()
    longest = max(len(tokenizer(t["prediction"], add_special_tokens=False)["input_ids"]) for t in task)
    assert longest > cfg.demo.task.answer_tokens  # a random model's answers run on past the content's 6 tokens
    marker = json.loads((out / "demo" / "gen_aligned_validation" / ".done.json").read_text())
    assert marker["settings"]["kind"] == "identity_shift"
    # an operations run is never resumed in (or mixed into) this file
    assert peers_cli.main([*argv, "--point", "validation:plain:none:0"], loader=loader) == 2
