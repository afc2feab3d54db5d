"""The held-out-style protocol: fold scores read only the fold's styles, and the rule reads the worst fold."""

from __future__ import annotations

import pytest

from benchmarks.lab import peers_folds as pf
from tests.helpers.folds import ALIGNED, FOLDS, GROUPS, IDS, fold_rows, row


def test_held_out_gap_drift_reads_only_the_folds_styles():
    model = row("m", 0.1, "1111", "0000", safe_b="1100")  # keeps style a, loses style b and over-refuses there
    assert pf.held_out_gap_drift(model, ALIGNED, GROUPS, ("a",)) == pytest.approx(0.0)
    assert pf.held_out_gap_drift(model, ALIGNED, GROUPS, ("b",)) == pytest.approx(1.0 + 0.5)
    assert pf.held_out_gap_drift(model, ALIGNED, GROUPS, ("a", "b")) == pytest.approx(0.5 + 0.25)
    other = {**model, "prompt_ids": IDS[::-1]}
    with pytest.raises(ValueError, match="other prompts"):
        pf.held_out_gap_drift(other, ALIGNED, GROUPS, ("a",))


def test_the_rule_reads_the_worst_fold_not_the_mean():
    rows = fold_rows(
        # keeps everything on fold a's styles, nothing on b's: mean held-out drift 0.5, worst 1.0
        uneven={"fa": ("1111", "0000", 0.8, 1.0), "fb": ("1111", "0000", 0.8, 1.0)},
        # keeps half everywhere: mean 0.5, worst 0.5
        even={"fa": ("1100", "1100", 0.8, 1.0), "fb": ("1100", "1100", 0.8, 1.0)},
    )
    scores, plain_task, missing = pf.score_folds(rows, [("uneven", 0.1), ("even", 0.1)], FOLDS, GROUPS)
    assert not missing and plain_task == pytest.approx(0.8)
    by_name = {s.method: s for s in scores}
    assert by_name["uneven"].held_out_gap_drift == {"fa": 0.0, "fb": 1.0}
    assert by_name["even"].worst == pytest.approx(0.5)
    chosen, why = pf.choose_by_folds(scores, plain_task)
    assert chosen.method == "even" and "worst-fold" in why


def test_ties_go_to_the_earlier_candidate_and_cost_and_task_exclude():
    rows = fold_rows(
        first={"fa": ("1100", "1100", 0.8, 1.0), "fb": ("1100", "1100", 0.8, 1.0)},  # worst 0.5
        better={"fa": ("1110", "1110", 0.8, 1.0), "fb": ("1110", "1110", 0.8, 1.0)},  # worst 0.25
        costly={"fa": ("1111", "1111", 0.8, 2.0), "fb": ("1111", "1111", 0.8, 2.0)},  # worst 0, 2x step time
        lossy={"fa": ("1111", "1111", 0.5, 1.0), "fb": ("1111", "1111", 0.5, 1.0)},  # worst 0, task -30 pts
    )
    order = [("first", 0.1), ("better", 0.1), ("costly", 0.1), ("lossy", 0.1)]
    scores, plain_task, _ = pf.score_folds(rows, order, FOLDS, GROUPS)
    chosen, _ = pf.choose_by_folds(scores, plain_task)
    assert chosen.method == "better"  # 25 pts better than the earlier candidate: not a tie
    chosen, _ = pf.choose_by_folds(scores, plain_task, margin=0.3)
    assert chosen.method == "first"  # within the margin: the earlier candidate keeps it
    chosen, _ = pf.choose_by_folds(scores, plain_task, cost_limit=3.0, max_task_drop=0.5)
    assert chosen.method == "costly"


def test_a_candidate_missing_a_fold_is_not_scored():
    rows = fold_rows(done={"fa": ("1111", "1111", 0.8, 1.0), "fb": ("1111", "1111", 0.8, 1.0)})
    rows["fb"] = [r for r in rows["fb"] if r["method"] != "done"]
    scores, _, missing = pf.score_folds(rows, [("done", 0.1)], FOLDS, GROUPS)
    assert scores == [] and missing == ["fb: done 0.1"]
    progress, _, _ = pf.score_folds(rows, [("done", 0.1)], FOLDS, GROUPS, partial=True)  # tables only
    assert [s.held_out_gap_drift for s in progress] == [{"fa": 0.0}]


def test_every_fold_excludes_its_styles_from_the_probe_and_keeps_a_meter():
    from agl_trl.experiments.config import apply_overrides, default_config
    from agl_trl.experiments.setup import meter_items, probe_items

    base = default_config(0)
    assert base.to_dict()["probe"] == {"kind": "mixed", "n": 64, "holdout_every": 4}  # keys made before folds hold
    seen: set[str] = set()
    for fold, styles in pf.FOLDS.items():
        cfg = apply_overrides(default_config(0), pf.fold_config_overrides(fold))
        fisher, meter = probe_items(cfg), meter_items(cfg)
        assert len(fisher) == pf.FOLD_PROBE_N and len(meter) >= base.agl.kl_sequences, fold
        assert not {it.style for it in fisher + meter} & set(styles), fold
        assert cfg.to_dict()["probe"]["exclude_styles"] == list(styles)
        seen |= set(styles)
    from agl_trl.driftcaps import load_driftcaps

    assert seen == {it.style for it in load_driftcaps(split="validation")}  # every validation style is held out once


def test_rows_sync_between_the_run_folder_and_the_committed_record(tmp_path):
    root, record = tmp_path / "runs", tmp_path / "record"
    first, second = sorted(pf.FOLDS)[:2]
    (record).mkdir()
    (record / f"{first}.jsonl").write_text('{"a": 1}\n{"a": 2}\n')  # a fresh checkout: only the record
    (root / second).mkdir(parents=True)
    (root / second / "peers.jsonl").write_text('{"b": 1}\n')  # a run that has rows the record lacks
    pf.sync_rows(root, record)
    assert (root / first / "peers.jsonl").read_text() == '{"a": 1}\n{"a": 2}\n'  # resumed from the record
    assert (record / f"{second}.jsonl").read_text() == '{"b": 1}\n'  # recorded
    (root / first / "peers.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    pf.sync_rows(root, record)
    assert (record / f"{first}.jsonl").read_text().count("\n") == 3


def test_rows_of_different_precisions_are_refused():
    rows = fold_rows(m={"fa": ("1111", "1111", 0.8, 1.0), "fb": ("1111", "1111", 0.8, 1.0)})
    pf.score_folds(rows, [("m", 0.1)], FOLDS, GROUPS)  # no precision recorded: fine
    rows["fa"][-1]["environment"] = {"precision": "bf16"}
    rows["fb"][-1]["environment"] = {"precision": "fp32"}
    with pytest.raises(ValueError, match="different precisions"):
        pf.score_folds(rows, [("m", 0.1)], FOLDS, GROUPS)


def test_a_peers_strength_is_chosen_by_its_worst_fold_within_its_own_task_tolerance():
    def grid(points):  # strength -> (unsafe_a, unsafe_b, task), the same in both folds
        rows = {fold: [ALIGNED, row("plain", None, "0000", "0000", task=0.8)] for fold in FOLDS}
        for strength, (unsafe_a, unsafe_b, task) in points.items():
            for fold in FOLDS:
                rows[fold].append(row("peer", strength, unsafe_a, unsafe_b, task=task))
        return rows, [("peer", s) for s in points]

    # 1.0 keeps half on both styles (worst 0.5), 10.0 everything (worst 0) but 4 task points lower: inside the
    # peers' 5-point tolerance, so the folds choose 10.0; 0.1 has the best task but loses style b entirely (worst 1.0)
    rows, order = grid({0.1: ("1111", "0000", 0.82), 1.0: ("1100", "1100", 0.8), 10.0: ("1111", "1111", 0.76)})
    scores, plain_task, _ = pf.score_folds(rows, order, FOLDS, GROUPS)
    chosen, why = pf.choose_peer_by_folds(scores, plain_task)
    assert chosen.strength == 10.0 and "worst-fold" in why
    chosen, _ = pf.choose_peer_by_folds(scores, plain_task, max_task_drop=0.02)  # 10.0 now costs too much task
    assert chosen.strength == 1.0
    chosen, why = pf.choose_peer_by_folds(scores, 0.95)  # no point keeps the task: the best task score
    assert chosen.strength == 0.1 and "best task" in why


def test_a_dangling_link_to_plain_loras_training_is_replaced(tmp_path, monkeypatch):
    from benchmarks.lab import peers

    asked = []

    def fake_run_benchmark(cfg, out, **kwargs):  # trains plain LoRA where it has no training yet
        asked.append([method for _split, method, _strength, _seed in kwargs["points"]])
        trained = peers.train_dir(out, "plain", None, cfg.sweep_seed)
        if not trained.exists():
            trained.mkdir(parents=True)
        return []

    monkeypatch.setattr(peers, "run_benchmark", fake_run_benchmark)
    root = tmp_path / "bf16"
    first, second = list(pf.FOLDS)[:2]
    dangling = peers.train_dir(root / second, "plain", None, 0)
    dangling.parent.mkdir(parents=True)
    dangling.symlink_to(tmp_path / "moved-away", target_is_directory=True)  # its target moved (an older layout)
    pf.run_folds(root, 1, None, False, record=tmp_path / "record")
    assert dangling.is_symlink() and dangling.resolve() == peers.train_dir(root / first, "plain", None, 0).resolve()
    # every fold runs plain LoRA and the candidates the rule can choose first, then every fold the reported-only peer
    rule = sorted(m for m, _ in pf.CANDIDATES if m not in pf.REPORTED_ONLY)
    assert len(asked) == 2 * len(pf.FOLDS)
    assert all(a[0] == "plain" and sorted(a[1:]) == rule for a in asked[: len(pf.FOLDS)])
    assert all(a == ["plain", *pf.REPORTED_ONLY] for a in asked[len(pf.FOLDS) :])


def test_a_verdict_is_provisional_only_while_an_untimed_candidate_could_change_it():
    from dataclasses import replace

    rows = fold_rows(
        first={"fa": ("1100", "1100", 0.8, 1.0), "fb": ("1100", "1100", 0.8, 1.0)},  # worst 0.5
        better={"fa": ("1110", "1110", 0.8, 1.0), "fb": ("1110", "1110", 0.8, 1.0)},  # worst 0.25
    )
    scores, plain_task, _ = pf.score_folds(rows, [("first", 0.1), ("better", 0.1)], FOLDS, GROUPS)
    first, better = scores
    # the worse candidate untimed: at any cost the better one is chosen
    chosen, why = pf.choose_by_folds([replace(first, step_ratio=None), better], plain_task)
    assert chosen.method == "better" and "final" in why and "PROVISIONAL" not in why
    # the chosen one untimed: over the limit it would lose the choice
    chosen, why = pf.choose_by_folds([first, replace(better, step_ratio=None)], plain_task)
    assert chosen.method == "better" and "PROVISIONAL" in why
