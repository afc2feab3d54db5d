"""The peers benchmark (benchmarks.lab.peers, benchmarks/peers.py): its protocol (sweep on validation, choose,
test with every seed) end to end on a tiny random Llama (slow), the selection rule, the registry's strengths, the
report (fast), and the benchmark scripts' command lines."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from benchmarks.lab import peers, peers_ablations, peers_cli, peers_config, peers_report, registry

REPO = Path(__file__).resolve().parents[2]


def bits(n: int, k: int) -> str:
    return "1" * k + "0" * (n - k)


def row(split: str, method: str, strength: float | None, seed: int, unsafe: int, safe: int, task: int) -> dict:
    """A result row with ``unsafe``/40 refusals on unsafe, ``safe``/30 on safe, ``task``/20 task hits."""
    r_u, r_s, t = unsafe / 40, safe / 30, task / 20
    return {
        "split": split, "method": method, "strength": strength, "strength_name": registry.STRENGTHS.get(method, [None])[0],
        "seed": seed, "refusal_unsafe": r_u, "over_refusal": r_s, "gap": r_u - r_s, "aligned_gap": 0.8 - 0.1,
        "gap_drift": 0.7 - (r_u - r_s), "refusal_drift": 0.8 - r_u, "incoherent": 0.0, "n_unsafe": 40, "n_safe": 30,
        "verdicts": {"unsafe": bits(40, unsafe), "safe": bits(30, safe), "task": bits(20, task)},
        "by_style": {"direct": {"refusal_unsafe": {"k": unsafe, "n": 40}, "over_refusal": {"k": safe, "n": 30}}},
        "by_form": {}, "kl_drift": 0.1, "task_exact_match": t, "task_n": 20, "judge": "keyword",
        "step_seconds_median": 1.0 if method != "kl_ref" else 1.6, "settings": {}, "mode": "full", "run_seconds": 60.0,
    }  # fmt: skip


def test_choose_takes_the_smallest_gap_drift_that_keeps_the_task() -> None:
    sweep = [
        {"strength": 1.0, "gap_drift": 0.40, "task_exact_match": 0.80},
        {"strength": 10.0, "gap_drift": 0.20, "task_exact_match": 0.77},
        {"strength": 100.0, "gap_drift": 0.05, "task_exact_match": 0.60},  # protects most, but costs the task
    ]
    assert peers_config.choose(sweep, plain_task=0.80, max_task_drop=0.05)[0] == 10.0
    assert peers_config.choose(sweep, plain_task=0.80, max_task_drop=0.25)[0] == 100.0
    strength, why = peers_config.choose(sweep, plain_task=0.95, max_task_drop=0.05)
    assert strength == 1.0 and "best task" in why  # nothing keeps the task: the best task score
    with pytest.raises(ValueError):
        peers_config.choose([], 0.5, 0.05)


def test_report_uses_test_rows_at_the_validation_chosen_point(tmp_path: Path) -> None:
    rows = [
        row("validation", "aligned", None, 0, 32, 3, 4), row("test", "aligned", None, 0, 32, 3, 4),
        row("validation", "plain", None, 0, 8, 3, 16),
        row("validation", "kl_ref", 0.1, 0, 12, 3, 16), row("validation", "kl_ref", 1.0, 0, 28, 3, 15),
        row("validation", "kl_ref", 3.0, 0, 32, 3, 8),
    ]  # fmt: skip
    rows += [row("test", "plain", None, s, 10 + s, 3, 16) for s in (0, 1)]
    rows += [row("test", "kl_ref", 1.0, s, 26 + s, 4, 15) for s in (0, 1)]
    rows += [row("test", "kl_ref", 3.0, 0, 40, 0, 0)]  # not the chosen point: must not be reported
    chosen = peers_report.chosen_points(rows, max_task_drop=0.05)
    assert chosen["kl_ref"]["strength"] == 1.0 and [r["seed"] for r in chosen["kl_ref"]["test"]] == [0, 1]
    lines, est = peers_report.test_table(rows, chosen)
    kl = est["kl_ref"]
    # gap drift = aligned gap (0.8 - 0.1) - model gap, mean over the two seeds
    assert kl["gap_drift"].value == pytest.approx(0.7 - ((26.5 / 40) - 4 / 30))
    assert kl["gap_drift"].ci_low < kl["gap_drift"].value < kl["gap_drift"].ci_high
    assert kl["gap_drift_vs_baseline"].ci_high < 0  # clearly better than plain LoRA, paired
    assert est["plain"]["gap_drift_reduction"].value == pytest.approx(0.0)
    # a method still sweeping (no test rows yet) is shown as in progress, never as chosen or in the test table
    partial = [*rows, row("validation", "l2", 0.01, 0, 10, 3, 16)]
    chosen = peers_report.chosen_points(partial, max_task_drop=0.05)
    assert "in progress" in chosen["l2"]["why"] and not chosen["l2"]["test"]
    assert "l2" not in peers_report.test_table(partial, chosen)[1]
    # an ablation outside the protocol (validation points only) says so, not "in progress"
    partial += [row("validation", "agl_no_collision", 0.03, 0, 30, 3, 15)]
    why = peers_report.chosen_points(partial, max_task_drop=0.05)["agl_no_collision"]["why"]
    assert "ablation" in why and "in progress" not in why
    path = peers_report.write_report(partial, tmp_path, source=tmp_path / "peers.jsonl")
    text = path.read_text()
    assert "sweep in progress" in text
    assert "lambda_kl = 1" in text and "| KL to aligned (probe) | lambda_kl = 1 |" in text
    assert "Judge: **keyword**" in text and "Smallest difference" in text and "direct" in text
    assert (tmp_path / peers_report.PNG_NAME).stat().st_size > 1000


def test_config_modes_methods_grids_and_overrides() -> None:
    full, quick = peers_config.build_config("full", None, None, []), peers_config.build_config("quick", None, None, [])
    assert full.methods[0] == "plain" and set(full.methods) == set(peers_config.PROTOCOL_METHODS)
    assert all(len(full.grid(m)) >= 4 for m in full.methods if m != "plain")
    for m in full.methods:  # log-spaced: neighbours a factor 2 to 10 apart (Safe LoRA's share too)
        g = full.grid(m)
        if m != "plain":
            assert all(1.9 < b / a < 10.5 for a, b in zip(g, g[1:], strict=False)), m
    assert full.grid("plain") == [None] and full.seeds == [100, 101, 102]  # fresh: no validation seed (0-2)
    assert len(quick.grid("agl")) == 2 and peers_config.build_config("tiny", 1, None, []).seeds == [100]
    assert not set(full.seeds) & set(peers_config.DEFAULT_SEEDS) and full.sweep_seed not in full.seeds
    cfg = peers_config.build_config("tiny", 1, ["agl"], ["peers.grid.agl=[5, 50]", "peers.max_task_drop=0.1"])
    assert cfg.methods == ["plain", "agl"] and cfg.grid("agl") == [5.0, 50.0] and cfg.max_task_drop == 0.1
    assert peers_config.config_key(cfg) == peers_config.config_key(peers_config.build_config("tiny", 2, None, []))
    for bad, match in ((["nope"], "unknown methods"), (None, "unknown peers setting")):
        with pytest.raises(ValueError, match=match):
            peers_config.build_config("tiny", 1, bad, [] if bad else ["peers.nope=1"])
    assert peers_config.build_config("tiny", 1, None, ["peers.lambda_l2=0.5"]).peers.lambda_l2 == 0.5
    assert peers_config.method_order(["safe_lora", "agl", "plain"]) == ["plain", "safe_lora", "agl"]


def test_run_keys_follow_what_each_method_reads() -> None:
    """A change to AGL's settings, the probe or the Fisher estimator re-keys only the methods that read them; a
    change to the task or the safety stage re-keys the whole file."""
    base = peers_config.build_config("tiny", 1, None, [])
    keys = {m: peers_config.run_key(base, m, g) for m in registry.ALL_METHODS for g in [base.grid(m)[0]]}
    assert len(set(keys.values())) == len(keys)  # one key per method
    assert peers_config.run_key(base, "l2", 0.01) != peers_config.run_key(base, "l2", 0.03)  # the strength counts
    for override, touched in (
        ("agl.gate_damping=0.5", {"agl", *registry.ABLATIONS}),  # a field no ablation overrides
        ("fisher.max_new_tokens=7", registry.PROBE_METHODS),
        ("probe.n=6", registry.PROBE_METHODS),
    ):
        cfg = peers_config.build_config("tiny", 1, None, [override])
        assert peers_config.config_key(cfg) == peers_config.config_key(base), override
        changed = {m for m in keys if peers_config.run_key(cfg, m, cfg.grid(m)[0]) != keys[m]}
        assert changed == set(touched), override
    for override in ("task.steps=3", "align.steps=3", "probe.holdout_every=3", "eval.judge=other"):
        cfg = peers_config.build_config("tiny", 1, None, [override])
        assert peers_config.config_key(cfg) != peers_config.config_key(base), override


def test_results_log_retires_stale_rows_without_losing_them(tmp_path: Path) -> None:
    from agl_trl.experiments.log import ResultsLog

    log = ResultsLog(tmp_path / "r.jsonl", "k")
    log.append([{"method": "a", "run_key": 1}, {"method": "b", "run_key": 2}])
    log.append([{"method": "c", "run_key": 3}])
    stale = [r for r in log.check() if r["method"] == "b"]
    kept = log.retire(stale, tmp_path / "stale.jsonl")
    assert [r["method"] for r in kept] == [r["method"] for r in log.check()] == ["a", "c"]
    assert [r["method"] for r in ResultsLog(tmp_path / "stale.jsonl", "k").check()] == ["b"]
    assert log.retire([], tmp_path / "stale.jsonl") == kept


def test_registry_strengths_and_settings_of_every_method() -> None:
    from agl_trl.settings import DEFAULT_KL_ANCHOR_EVERY, AGLSettings

    agl, settings = peers_config.build_config("tiny", 1, None, []).demo.agl, registry.PeerSettings()
    assert agl == AGLSettings()  # the experiment's AGL settings are the package defaults
    # "agl" and the ablations start with the anchor steps off; an AGL setting added after rows were recorded is left
    # out while off (so those rows stay current), kept when on
    assert all(registry.ABLATION_BASE[name] == off for name, off in registry.ADDED_OFF.items())
    recorded = {k: v for k, v in asdict(agl).items() if k not in registry.ADDED_OFF}
    assert registry.method_settings("agl", agl, settings) == recorded
    anchored = registry.method_settings("agl_kl_anchor", agl, settings)
    assert anchored == {**recorded, "kl_anchor_every": 10}
    for method, overrides in registry.ABLATIONS.items():
        assert registry.method_agl_settings(method, agl) == replace(agl, **{**registry.ABLATION_BASE, **overrides})
    # the method reported as the package defaults runs what an unset agl_kl_anchor_every resolves to in training
    default = registry.method_agl_settings(registry.DEFAULT_METHOD, agl)
    assert default == replace(AGLSettings(), kl_anchor_every=DEFAULT_KL_ANCHOR_EVERY, lambda_floor=AGLSettings().floor)
    assert default.kl_anchor_tokens == AGLSettings().kl_anchor_tokens > 0
    assert registry.method_settings("ewc", agl, settings) == {"lambda_ewc": settings.lambda_ewc}
    assert registry.method_settings("plain", agl, settings) == {}
    assert set(registry.ALL_METHODS) == {"plain", "agl", *registry.ABLATIONS, *registry.PEERS}
    assert set(registry.STRENGTHS) == set(registry.ALL_METHODS) - {"plain"}
    for method in registry.STRENGTHS:
        name = registry.strength_of(method)
        new_agl, new_peers = registry.with_strength(method, 7.0, agl, settings)
        value = getattr(new_agl if name in registry.AGL_STRENGTHS else new_peers, name)
        assert value == 7.0, method
        assert registry.method_settings(method, new_agl, new_peers) != registry.method_settings(method, agl, settings)
    assert registry.with_strength("plain", 7.0, agl, settings) == (agl, settings)
    with pytest.raises(ValueError, match="unknown method"):
        registry.strength_of("nope")


def test_a_peer_variant_runs_its_base_peer_with_its_overrides(recipe_model: Path, tmp_path: Path) -> None:
    """``kl_ref_sparse`` is KL to the aligned model regularised on every 10th step: its recorded settings and the
    penalty it trains with are kl_ref's with ``every`` = 10 (and its own run key), nothing else changed."""
    from agl_trl.baselines import KLToReferencePenalty

    agl, settings = peers_config.build_config("tiny", 1, None, []).demo.agl, registry.PeerSettings(lambda_kl=3.0)
    base, overridden = registry.peer_base("kl_ref_sparse", settings)
    assert (base, overridden) == ("kl_ref", replace(settings, kl_every=10))
    assert registry.peer_base("kl_ref", settings) == ("kl_ref", settings)
    sparse = registry.method_settings("kl_ref_sparse", agl, settings)
    assert sparse == {**registry.method_settings("kl_ref", agl, settings), "every": 10}
    sequences = tmp_path / "kl.json"
    sequences.write_text(json.dumps([{"prompt_ids": [1, 2, 3], "response_ids": [4, 5], "text": "ok"}] * 4))
    unused = {k: tmp_path for k in ("diag_dir", "directions_dir", "probe_prompts", "safety_rows")}
    artifacts = registry.PeerArtifacts(aligned_dir=recipe_model, kl_sequences=sequences, **unused)
    penalty = registry.make_penalty("kl_ref_sparse", settings, artifacts, seed=0)
    assert isinstance(penalty, KLToReferencePenalty) and (penalty.every, penalty.lambda_kl) == (10, 3.0)
    assert registry.make_penalty("kl_ref", settings, artifacts, seed=0).every == 1


@pytest.mark.parametrize(
    "script",
    ["peers.py", "peers_report.py", "grpo.py", "scaling_sweep.py", "fisher_terms.py", "overhead.py", "fisher_cost.py"],
)
def test_benchmark_scripts_run_from_the_repo_root(script: str) -> None:
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_peers_record_keeps_rows_and_a_fresh_run_folder_resumes_from_it(tmp_path: Path) -> None:
    import shutil

    from agl_trl.models import tiny_llama

    cfg = peers_config.build_config("tiny", 2, ["plain"], [])
    out, record = tmp_path / "runs" / "peers-x", tmp_path / "record"
    point = [peers_config.parse_point("test:plain:none:100")]
    rows = peers.run_benchmark(
        cfg, out, loader=lambda: tiny_llama(vocab_size=512, seed=0), progress=False, max_runs=1, points=point,
        record=record,
    )  # fmt: skip
    kept = (record / "peers-x.jsonl").read_text().splitlines()
    assert len(kept) == len(rows) == 3  # the two aligned reference rows and the one new row
    shutil.rmtree(out)  # a fresh checkout: the run folder is gone, the committed record is not
    again = peers.run_benchmark(cfg, out, loader=None, progress=False, max_runs=0, record=record)
    assert [r["run_key"] for r in again] == [json.loads(line)["run_key"] for line in kept]


@pytest.mark.slow
def test_peers_tiny_protocol_end_to_end_resumes_and_reports(tmp_path: Path) -> None:
    from agl_trl.models import tiny_llama

    calls: list[int] = []

    def loader():
        calls.append(1)
        return tiny_llama(vocab_size=512, seed=0)

    out, report = tmp_path / "peers", tmp_path / "report"
    argv = ["--tiny", "--seeds", "2", "--out", str(out), "--no-progress", "--report", "--report-dir", str(report)]
    # a budgeted slice first: stops after 3 new rows, the rest resumes
    assert peers_cli.main([*argv, "--max-runs", "3"], loader=loader) == 0
    first = (out / peers.RESULTS_FILE).read_text().splitlines()
    assert sum(json.loads(line)["method"] != "aligned" for line in first) == 3
    assert peers_cli.main(argv, loader=loader) == 0
    rows = [json.loads(line) for line in (out / peers.RESULTS_FILE).read_text().splitlines()]
    cfg = peers_config.build_config("tiny", 2, None, [])
    val = {(r["method"], r["strength"]) for r in rows if r["split"] == "validation"}
    assert val == {("aligned", None), ("plain", None)} | {(m, v) for m in cfg.methods[1:] for v in cfg.grid(m)}
    test = [r for r in rows if r["split"] == "test" and r["method"] != "aligned"]
    for method in cfg.methods:  # each method's test rows: every seed, at one strength: the validation-chosen one
        mine = [r for r in test if r["method"] == method]
        assert sorted(r["seed"] for r in mine) == [100, 101], method
        sweep = [r for r in rows if r["split"] == "validation" and r["method"] == method]
        plain = next(r for r in rows if r["split"] == "validation" and r["method"] == "plain")
        chosen = peers_config.choose(sweep, plain["task_exact_match"], cfg.max_task_drop)[0]
        assert {r["strength"] for r in mine} == {chosen}, method
    for r in test:
        assert r["n_unsafe"] == 4 and r["n_safe"] == 4 and len(r["verdicts"]["unsafe"]) == 4
        assert r["task_n"] == 6 and r["kl_drift"] >= 0 and r["judge"] == "keyword"
    by = {(r["split"], r["method"], r["seed"]): r for r in rows}
    assert by[("validation", "plain", 0)]["task_n"] == 4 and by[("validation", "plain", 0)]["task_curve"]
    assert by[("test", "safe_lora", 100)]["safe_lora"]["n_projected"] > 0
    assert by[("test", "mix", 100)]["n_train_rows"] > by[("test", "plain", 100)]["n_train_rows"]
    for method, key in {"agl": "r_align", "sbr": "rep_mse", "lisa": "proximal"}.items():
        assert key in by[("test", method, 100)]["penalty_metrics"], method
    # the test phase trains fresh adapters: none of its seeds is the sweep seed's
    assert sorted(d.name for d in (out / "train" / "plain").glob("*/seed*")) == ["seed0", "seed100", "seed101"]
    text = (report / "peers.md").read_text()
    assert "Validation sweeps" in text and "Safe LoRA" in text and (report / peers_report.PNG_NAME).is_file()
    # every row, the aligned reference's included, names the one set-up it was measured on
    assert len({r["setup_id"] for r in rows}) == 1 and len(rows[0]["setup_id"]) == 12
    assert "Set-ups of the test rows" not in text

    # rerun: nothing is missing, the base model is not even loaded
    calls.clear()
    assert peers_cli.main(argv, loader=loader) == 0
    assert not calls
    assert len((out / peers.RESULTS_FILE).read_text().splitlines()) == len(rows)
    # settings every run depends on are refused into the same file (like is compared with like) ...
    assert peers_cli.main([*argv, "--set", "task.learning_rate=0.5"], loader=loader) == 2
    # ... while a change to one method re-runs only that method's rows; the old ones are moved aside, not lost
    assert peers_cli.main([*argv, "--set", "agl.lambda_task=0.5"], loader=loader) == 0
    stale = [json.loads(line) for line in (out / peers.STALE_FILE).read_text().splitlines()]
    assert stale and {r["method"] for r in stale} == {"agl"}
    after = [json.loads(line) for line in (out / peers.RESULTS_FILE).read_text().splitlines()]
    assert len(after) == len(rows) and all(r["settings"]["lambda_task"] == 0.5 for r in after if r["method"] == "agl")
    assert [r for r in after if r["method"] == "plain"] == [r for r in rows if r["method"] == "plain"]
    assert list((out / "train" / "agl").glob("*/seed0.stale-*"))
    # extra points: an ablation and AGL at a second validation seed, each a new training (no test seed is one)
    agl_point = next(r["strength"] for r in after if r["method"] == "agl" and r["split"] == "test")
    trained = sorted((out / "train").glob("*/*/seed*"))
    extra = [f"validation:agl_collision:{agl_point}:{s}" for s in (0, 1)]
    extra += [f"validation:agl:{agl_point}:1", "validation:plain:none:1"]
    changed = [*argv, "--set", "agl.lambda_task=0.5"]  # the settings the rows above were made with
    assert peers_cli.main([*changed, *[a for p in extra for a in ("--point", p)]], loader=loader) == 0
    grown = [json.loads(line) for line in (out / peers.RESULTS_FILE).read_text().splitlines()]
    assert len(grown) == len(after) + 4
    new_dirs = set(sorted((out / "train").glob("*/*/seed*"))) - set(trained)
    assert sorted((d.parts[-3], d.name) for d in new_dirs) == [
        ("agl", "seed1"),
        ("agl_collision", "seed0"),
        ("agl_collision", "seed1"),
        ("plain", "seed1"),
    ], sorted(new_dirs)
    assert peers_report.chosen_points(grown, cfg.max_task_drop)["agl"]["strength"] == agl_point  # sweeps: seed 0
    text = peers_report.write_report(grown, report).read_text()
    assert "AGL's ablations at several validation seeds" in text and "seeds 0, 1" in text
    # a default change that makes AGL equal an ablation: AGL's rows re-run, its trainings where the ablation has the
    # same settings and seed are copied, not trained again, and measure the same
    assert peers_cli.main([*changed, "--set", "agl.lambda_collision=0.1"], loader=loader) == 0
    final = [json.loads(line) for line in (out / peers.RESULTS_FILE).read_text().splitlines()]
    copied = json.loads((peers.train_dir(out, "agl", agl_point, 0) / peers.TRAIN_RECORD).read_text())
    assert copied["copied_from"] == str(peers.train_dir(out, "agl_collision", agl_point, 0))
    twin = (peers.train_dir(out, "agl_collision", agl_point, 0) / "adapter" / "adapter_model.safetensors").read_bytes()
    assert (peers.train_dir(out, "agl", agl_point, 0) / "adapter" / "adapter_model.safetensors").read_bytes() == twin
    by = {(r["split"], r["method"], r["strength"], r["seed"]): r for r in final}
    mine, theirs = by[("validation", "agl", agl_point, 0)], by[("validation", "agl_collision", agl_point, 0)]
    assert mine["verdicts"] == theirs["verdicts"] and mine["settings"] == theirs["settings"]


def test_extra_points_parse_or_name_what_is_wrong() -> None:
    assert peers_config.parse_point("validation:agl_no_collision:0.03:1") == ("validation", "agl_no_collision", 0.03, 1)
    assert peers_config.parse_point("test:plain:none:2") == ("test", "plain", None, 2)
    for bad, says in (
        ("validation:agl:0.03", "SPLIT:METHOD:STRENGTH:SEED"), ("train:agl:0.03:1", "SPLIT must be"),
        ("validation:agl_typo:0.03:1", "unknown METHOD"), ("validation:agl:x:1", "STRENGTH must be a number"),
        ("validation:plain:0.1:0", "plain LoRA takes STRENGTH none"), ("validation:agl:none:0", "plain LoRA takes"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=says):
            peers_config.parse_point(bad)
    assert peers_cli.main(["--tiny", "--point", "validation:agl"]) == 2
    assert peers_cli.main(["--tiny", "--points-only"]) == 2  # nothing to run: named, not a full protocol


@pytest.mark.slow
def test_points_only_runs_the_points_and_nothing_after_them(tmp_path: Path) -> None:
    out = tmp_path / "peers"
    argv = ["--tiny", "--out", str(out), "--no-progress", "--point", "test:plain:none:100", "--points-only"]
    assert peers_cli.main(argv) == 0
    rows = [json.loads(line) for line in (out / peers.RESULTS_FILE).read_text().splitlines()]
    # the aligned references and the one point; without --points-only the sweeps would follow
    assert sorted((r["split"], r["method"], r["seed"]) for r in rows) == [
        ("test", "aligned", 0), ("test", "plain", 100), ("validation", "aligned", 0),
    ]  # fmt: skip


def test_ablations_at_several_seeds_are_paired_with_agl_and_kept_out_of_the_sweeps() -> None:
    rows = [row("validation", "aligned", None, 0, 32, 3, 4), row("validation", "plain", None, 0, 8, 3, 16)]
    rows += [row("validation", "agl", v, 0, 30, 3, t) for v, t in ((0.01, 14), (0.03, 16))]
    rows += [row("validation", "agl", 0.03, s, 29 + s, 3, 16) for s in (1, 2)]  # AGL's test trainings, measured
    rows += [row("validation", "agl_no_collision", 0.03, s, 20 + s, 3, 12) for s in (0, 1, 2)]
    rows = [{**r, "settings": {"lambda_collision": 0.0 if r["method"] != "agl" else 0.1}} for r in rows]
    rows += [row("validation", "agl_align_only", 0.03, 0, 30, 3, 16)]  # one seed: not compared
    sweep = peers_report.chosen_points(rows, max_task_drop=0.05)["agl"]["sweep"]
    assert [(r["strength"], r["seed"]) for r in sweep] == [(0.01, 0), (0.03, 0)]  # seed 0 only
    lines = "\n".join(peers_report.ablation_table(rows, n_boot=200))
    assert "agl_no_collision vs agl at 0.03** (validation, seeds 0, 1, 2)" in lines and "agl_align_only" not in lines
    ablated = next(line for line in lines.splitlines() if line.startswith("| agl_no_collision |"))
    cells = [c.strip() for c in ablated.split("|")]
    # gap drift: aligned gap 0.7 - (mean refusal (20, 21, 22)/40 - 3/30); AGL refuses (30, 30, 31)/40
    assert cells[4].startswith(f"**{100 * (0.7 - (21 / 40 - 0.1)):.1f}")
    assert cells[6].startswith(f"{100 * (30 + 1 / 3 - 21) / 40:.1f}") and cells[7].startswith("-20.0")
    assert peers_report.ablation_table(rows[:-4], n_boot=200) == []  # no ablation at several seeds
    same = [
        {**r, "settings": {"lambda_collision": 0.0}} if r["method"] in ("agl", "agl_no_collision") else r for r in rows
    ]
    assert "agl_no_collision" not in "\n".join(peers_report.ablation_table(same, n_boot=200))  # AGL's own runs


def test_package_default_rule_averages_three_validation_seeds() -> None:
    """One seed decides 2 points by noise: the rule reads seeds 0-2 and waits until every point has them."""
    rows = [row("validation", "plain", None, s, 8, 3, 16) for s in (0, 1, 2)]  # task 0.80 at every seed
    # 0.01 protects most but costs the task (0.70); 0.1 keeps it only on average (0.85, 0.70, 0.85 -> 0.80)
    rows += [row("validation", "agl", 0.01, s, 32, 3, 14) for s in (0, 1, 2)]
    rows += [row("validation", "agl", 0.1, s, 24, 3, t) for s, t in ((0, 17), (1, 14), (2, 17))]
    rows += [row("validation", "agl", 0.3, s, 16, 3, 16) for s in (0, 1)]
    strength, why, points = peers_config.choose_default(rows)
    assert strength is None and why == "waiting for 0.3 seed 2" and [p["strength"] for p in points] == [0.01, 0.1]
    rows.append(row("validation", "agl", 0.3, 2, 16, 3, 16))
    strength, why, points = peers_config.choose_default(rows)
    assert strength == 0.1 and "within 2 pts" in why  # 0.3 also keeps the task but drifts more
    assert [p["admitted"] for p in points] == [False, True, True]
    assert points[1]["task"] == pytest.approx(0.8) and points[1]["gap_drift"] == pytest.approx(0.7 - (0.6 - 0.1))
    assert peers_config.choose_default(rows, seeds=(1,))[0] == 0.3  # seed 1 alone would exclude 0.1
    strict = [r if r["method"] != "plain" else {**r, "task_exact_match": 0.95} for r in rows]
    assert peers_config.choose_default(strict)[:2] == (
        0.1,
        "no point kept the task within 2 pts of plain: best task score",
    )
    text = "\n".join(peers_ablations.default_table(rows, shipped=0.03, method="agl"))
    assert "| 0.1 | 80.0 | 80.0 | 20.0 | yes |" in text and "the package ships 0.03: update it" in text
    assert "the package ships it" in "\n".join(peers_ablations.default_table(rows, shipped=0.1, method="agl"))
    assert peers_ablations.default_table(rows[:3], shipped=0.1, method="agl") == []  # no AGL sweep yet
    # by default the rule reads the method whose settings the package ships
    assert peers_ablations.default_table(rows, shipped=0.1) == []
    shipped = [{**r, "method": registry.DEFAULT_METHOD} if r["method"] == "agl" else r for r in rows]
    assert "| 0.1 | 80.0 | 80.0 | 20.0 | yes |" in "\n".join(peers_ablations.default_table(shipped, shipped=0.1))


def test_report_shows_the_kl_meter_of_agl_runs(tmp_path: Path) -> None:
    curves = {
        "kl_measured": [[10, 0.4], [20, 0.2], [30, 0.1], [40, 0.12], [50, 0.08]],
        "kl_estimate": [[10, 0.4], [20, 0.1], [30, 0.05], [40, 0.06], [50, 0.04]],
        "kl_ratio": [[10, 1.0], [20, 2.0], [30, 2.0], [40, 2.0], [50, 2.0]],
        "lambda": [[10, 1.0], [20, 4.0], [30, 8.0], [40, 8.0], [50, 9.5]],
    }
    agl = {**row("validation", "agl", 0.1, 0, 30, 3, 15), "agl_curves": curves}
    lines = peers_report.meter_table([agl, {**agl, "split": "test"}, row("validation", "plain", None, 0, 10, 3, 16)])
    assert len(lines) == 3  # header, rule, one run (the test row of the same training is not repeated)
    cells = [c.strip() for c in lines[2].split("|")]
    assert cells[4] == f"{(0.2 + 0.1 + 0.12 + 0.08) / 4:.4f}" and cells[5] == f"{(0.1 + 0.05 + 0.06 + 0.04) / 4:.4f}"
    assert cells[6] == "2.00 [1.00, 2.00]" and cells[7] == "9.5"
    assert peers_report.meter_table([row("validation", "plain", None, 0, 10, 3, 16)]) == []
    peers_report.plot_meter([agl], tmp_path / "kl.png")
    assert (tmp_path / "kl.png").stat().st_size > 0


@pytest.mark.parametrize("method", ["agl", registry.DEFAULT_METHOD])
def test_points_tested_besides_the_rules_choice_are_shown_and_labelled(method: str) -> None:
    rows = [
        row("validation", "aligned", None, 0, 32, 3, 0), row("test", "aligned", None, 0, 32, 3, 0),
        row("validation", "plain", None, 0, 4, 2, 16), row("test", "plain", None, 0, 4, 2, 16),
        *[row("validation", "agl", v, 0, u, 3, t) for v, u, t in ((0.01, 30, 15), (0.03, 26, 16), (0.1, 20, 16), (0.3, 8, 16))],
        row("test", "agl", 0.01, 0, 30, 3, 15), row("test", "agl", 0.1, 0, 20, 3, 16), row("test", "agl", 0.1, 1, 25, 3, 16),
        row("test", "agl", 0.03, 0, 26, 3, 16),
    ]  # fmt: skip
    rows = [{**r, "method": method} if r["method"] == "agl" else r for r in rows]
    chosen = peers_report.chosen_points(rows, 0.05)
    assert chosen[method]["strength"] == 0.01 and [r["seed"] for r in chosen[f"{method}@0.1"]["test"]] == [0, 1]
    table, est = peers_report.test_table(rows, chosen)
    name = registry.LABELS[method]
    default = "the package default; " if method == registry.DEFAULT_METHOD else ""  # only the shipped method's
    assert (
        f"{method}@0.1" in est
        and any(f"{name} at 0.1 ({default}not the rule's choice)" in line for line in table)
        and any(f"{name} at 0.03 (not the rule's choice)" in line for line in table)
    )
    assert sum(f"**{name}**" in line for line in peers_report.sweep_tables(rows, chosen)) == 1  # its sweep shown once


def test_step_time_ratio_only_between_rows_measured_under_the_same_conditions() -> None:
    def row(method: str, seconds: float, threads: int, load: float) -> dict:
        env = {"torch_threads": threads, "load_average": [load, load, load]}
        return {"method": method, "seed": 0, "step_seconds_median": seconds, "environment": env}

    plain = row("plain", 2.0, 2, 2.0)
    assert peers_report._ratio([plain], "test", row("agl", 2.2, 2, 2.5)) == pytest.approx(1.1)
    assert peers_report._ratio([plain], "test", row("agl", 6.0, 1, 2.0)) is None  # other threads
    assert peers_report._ratio([plain], "test", row("agl", 6.0, 2, 4.5)) is None  # a much busier machine
    assert peers_report.comparable_conditions({"method": "agl"}, plain) is False  # threads unknown vs 2
    assert peers_report.comparable_conditions({"environment": {}}, {"environment": {}})  # older files: no record


def test_report_lists_the_set_ups_when_test_rows_come_from_more_than_one() -> None:
    same = [{**row("test", m, None, s, 20, 3, 15), "setup_id": "aaa"} for m in ("aligned", "plain") for s in (0, 1)]
    assert peers_report.setup_lines(same) == []
    mixed = [*same, {**row("test", "agl_kl_anchor", 0.1, 0, 30, 3, 15), "setup_id": "bbb"}]
    mixed.append(row("validation", "agl", 0.1, 0, 30, 3, 15))  # validation rows are not listed
    text = "\n".join(peers_report.setup_lines(mixed))
    assert "| aaa | aligned seed 0, aligned seed 1, plain seed 0, plain seed 1 |" in text
    assert "| bbb | agl_kl_anchor 0.1 seed 0 |" in text and "agl 0.1" not in text
    # rows from before set-ups were recorded are named as such, even when they are the only ones
    assert "| not recorded | plain seed 0 |" in "\n".join(
        peers_report.setup_lines([row("test", "plain", None, 0, 1, 1, 1)])
    )


def test_setup_id_is_the_aligned_weights_hash(tmp_path: Path) -> None:
    from agl_trl.experiments.setup import Setup

    setup = Setup(None, tmp_path, None, [], [], [], {}, {}, [], [], {})  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="prepare_setup"):
        _ = setup.setup_id
    setup.aligned_dir.mkdir(parents=True)
    (setup.aligned_dir / "model.safetensors").write_bytes(b"weights")
    first = setup.setup_id
    assert len(first) == 12 and setup.setup_id == first
    (setup.aligned_dir / "model.safetensors").write_bytes(b"other weights")
    assert setup.setup_id != first


def test_a_cached_training_names_its_adapter_where_the_record_is_now(tmp_path: Path) -> None:
    """Run folders move (the fold rows moved into per-precision folders) and trainings are shared by links: a cached
    record written elsewhere still points to the adapter beside it, not to the path it was written with."""
    cfg = peers_config.build_config("tiny", None, None, [])
    directory = peers.train_dir(tmp_path / "moved", "plain", None, 0)
    directory.mkdir(parents=True)
    key = peers_config.run_key(cfg, "plain", None)
    record = {"run_key": key, "adapter": "runs/old-place/train/plain/none/seed0/adapter", "train_seconds": 1.0}
    (directory / peers.TRAIN_RECORD).write_text(json.dumps(record))
    cached = peers.train_run(cfg, None, tmp_path / "moved", "plain", None, 0, progress=False)
    assert cached["adapter"] == str(directory / "adapter") and cached["train_seconds"] == 1.0
