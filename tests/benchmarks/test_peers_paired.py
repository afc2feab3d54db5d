"""Paired verdicts against the package default (benchmarks.lab.peers_paired): the sign convention, pairing by
prompt and seed (and refusing otherwise), and that docs/peers.md and README's headline block are the ones the report
generates from docs/results/peers.jsonl."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from agl_trl.evaluation.selectivity import Estimate, compare
from agl_trl.settings import AGLSettings
from benchmarks.lab import peers_paired, peers_report
from benchmarks.lab.peers_ablations import row_verdicts
from benchmarks.lab.registry import DEFAULT_METHOD

REPO = Path(__file__).resolve().parents[2]
SHIPPED = AGLSettings().kl_budget
N_UNSAFE, N_SAFE, N_TASK = 40, 20, 20
IDS = [f"u-{i}" for i in range(N_UNSAFE)] + [f"s-{i}" for i in range(N_SAFE)]


def _bits(ones: set[int], n: int) -> str:
    return "".join("1" if i in ones else "0" for i in range(n))


def _row(method: str, seed: int, unsafe: set[int], safe: set[int] = frozenset(), task: set[int] = frozenset(),
         strength: float | None = None, ids: list[str] = IDS) -> dict[str, Any]:  # fmt: skip
    verdicts = {"unsafe": _bits(unsafe, N_UNSAFE), "safe": _bits(safe, N_SAFE), "task": _bits(task, N_TASK)}
    return {"split": "test", "method": method, "strength": strength, "seed": seed, "verdicts": verdicts,
            "prompt_ids": list(ids)}  # fmt: skip


def _setup(peer_unsafe: set[int], peer_task: set[int] = frozenset(range(12)), seeds: tuple[int, ...] = (0, 1),
           ids: list[str] = IDS) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:  # fmt: skip
    """The aligned model (every unsafe prompt refused, no safe one), the default (the first 20 unsafe prompts
    refused, 12 task items right) and a peer, at seeds 0 and 1 (the peer's: ``seeds``)."""
    aligned = _row("aligned", 0, set(range(N_UNSAFE)))
    default = [_row(DEFAULT_METHOD, s, set(range(20)), task=set(range(12)), strength=SHIPPED) for s in (0, 1)]
    peer = [_row("peer", s, peer_unsafe, task=peer_task, strength=1.0, ids=ids) for s in seeds]
    chosen = {
        DEFAULT_METHOD: {"strength": SHIPPED, "test": default},
        "peer": {"strength": 1.0, "test": peer},
    }
    return [aligned, *default, *peer], chosen


def _overlap(a: Estimate, b: Estimate) -> bool:
    return a.ci_low <= b.ci_high and b.ci_low <= a.ci_high


def test_paired_interval_resolves_what_overlapping_marginal_intervals_do_not() -> None:
    # the peer refuses 14 of the default's 20 refused prompts and nothing else: 15 points more gap drift, on 6 prompts
    rows, chosen = _setup(set(range(14)))
    key, paired = peers_paired.paired_against_default(rows, chosen, n_boot=2000)
    marginal = compare(
        {name: [row_verdicts(r) for r in c["test"]] for name, c in chosen.items()}, row_verdicts(rows[0]), n_boot=2000
    )
    assert _overlap(marginal[DEFAULT_METHOD]["gap_drift"], marginal["peer"]["gap_drift"])  # marginally: "a tie"
    p = paired["peer"]
    assert key == DEFAULT_METHOD and isinstance(p, peers_paired.Paired)
    assert math.isclose(p.differences["gap drift"].value, 0.15)  # peer - default
    assert p.differences["gap drift"].ci_low > 0
    assert p.verdicts == {"gap drift": "win", "task": "tie", "over-refusal": "tie"}
    assert peers_paired.verdict_counts(paired)["gap drift"] == {"win": 1, "tie": 0, "loss": 0}


def test_a_peer_that_differs_both_ways_ties_and_a_better_task_is_the_defaults_loss() -> None:
    # two of the default's refusals dropped, two others added: the same gap, on other prompts; 6 more task items right
    rows, chosen = _setup(set(range(2, 22)), peer_task=set(range(18)))
    _, paired = peers_paired.paired_against_default(rows, chosen, n_boot=2000)
    p = paired["peer"]
    assert isinstance(p, peers_paired.Paired)
    gap = p.differences["gap drift"]
    assert gap.value == 0 and gap.ci_low < 0 < gap.ci_high
    assert p.verdicts == {"gap drift": "tie", "task": "loss", "over-refusal": "tie"}
    assert p.differences["task"].ci_low > 0


def test_verdict_sign_convention() -> None:
    above, below, across = Estimate(0.1, 0.02, 0.2, 0.05), Estimate(-0.1, -0.2, -0.02, 0.05), Estimate(0, -0.1, 0.1, 1)
    lower_is_better, higher_is_better = False, True  # gap drift and over-refusal; task
    assert peers_paired.verdict(above, lower_is_better) == "win"  # the point drifts more than the default
    assert peers_paired.verdict(below, lower_is_better) == "loss"
    assert peers_paired.verdict(above, higher_is_better) == "loss"  # the point's task score is higher
    assert peers_paired.verdict(below, higher_is_better) == "win"
    assert peers_paired.verdict(across, lower_is_better) == peers_paired.verdict(across, higher_is_better) == "tie"
    assert peers_paired.verdict(Estimate(math.nan, math.nan, math.nan, math.nan), True) == "-"


@pytest.mark.parametrize(
    ("seeds", "ids", "reason"),
    [((0, 2), IDS, "test seeds [0, 2]"), ((0,), IDS, "test seeds [0]"), ((0, 1), IDS[::-1], "prompt ids")],
)
def test_rows_on_other_seeds_or_prompts_are_not_paired(seeds: tuple[int, ...], ids: list[str], reason: str) -> None:
    rows, chosen = _setup(set(range(14)), seeds=seeds, ids=ids)
    _, paired = peers_paired.paired_against_default(rows, chosen, n_boot=200)
    assert isinstance(paired["peer"], peers_paired.NotPaired) and reason in str(paired["peer"])
    section = "\n".join(peers_paired.paired_section(rows, chosen, n_boot=200))
    assert "| peer | not paired |" in section and "not paired: peer (" in section
    with pytest.raises(peers_paired.NotPaired, match=reason.replace("[", r"\[").replace("]", r"\]")):
        peers_paired.check_paired(chosen[DEFAULT_METHOD]["test"], chosen["peer"]["test"], "peer")


def test_the_same_draws_serve_every_point() -> None:
    """A point's differences do not depend on which other points are compared in the same call."""
    rows, chosen = _setup(set(range(14)))
    other = [_row("other", s, set(range(5)), task=set(range(3)), strength=2.0) for s in (0, 1)]
    _, alone = peers_paired.paired_against_default(rows, chosen, n_boot=500)
    _, together = peers_paired.paired_against_default(
        rows + other, {**chosen, "other": {"strength": 2.0, "test": other}}, n_boot=500
    )
    assert alone["peer"] == together["peer"]


def test_readme_block_replacement_needs_its_markers() -> None:
    text = f"a\n{peers_paired.README_START}\nold\n{peers_paired.README_END}\nb\n"
    new = peers_paired.replace_readme_block(text, "new\n")
    assert new == f"a\n{peers_paired.README_START}\nnew\n{peers_paired.README_END}\nb\n"
    assert peers_paired.readme_block_of(new) == "new\n"
    with pytest.raises(ValueError, match="no <!-- peers:headline:start"):
        peers_paired.replace_readme_block("a\nb\n", "new\n")


def test_docs_peers_md_and_readme_headline_are_the_generated_ones(tmp_path: Path) -> None:
    """docs/peers.md and README's headline block, regenerated from docs/results/peers.jsonl, are the committed
    ones (the plots are not compared)."""
    source = Path("docs/results/peers.jsonl")  # as the command line names it: the report prints the path
    rows = peers_report.read_rows(REPO / source)
    readme = tmp_path / "README.md"
    shutil.copyfile(REPO / "README.md", readme)
    page = peers_report.write_report(rows, tmp_path / "docs", source=source, readme=readme)
    regenerate = "python benchmarks/peers_report.py docs/results/peers.jsonl --out docs --readme README.md"
    assert page.read_text(encoding="utf-8") == (REPO / "docs" / "peers.md").read_text(encoding="utf-8"), (
        f"docs/peers.md is stale: {regenerate}"
    )
    committed = peers_paired.readme_block_of((REPO / "README.md").read_text(encoding="utf-8"))
    assert peers_paired.readme_block_of(readme.read_text(encoding="utf-8")) == committed, (
        f"README's headline block is stale: {regenerate}"
    )


def test_rows_without_task_verdicts_get_no_task_verdict() -> None:
    rows, chosen = _setup(set(range(14)))
    for r in rows:
        r["verdicts"]["task"] = ""
    _, paired = peers_paired.paired_against_default(rows, chosen, n_boot=200)
    p = paired["peer"]
    assert isinstance(p, peers_paired.Paired) and p.verdicts["task"] == "-" and p.verdicts["gap drift"] == "win"
