"""The committed scaling run log (docs/results/scaling_runs.jsonl, measured by `benchmarks/scaling_sweep.py` on SmolLM2)
reproduces the published fits and plots with `agl-trl scaling --log`: `responses` in log space
(docs/results/scaling/), `general` in linear space (docs/results/scaling-general/: it is negative at small budgets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agl_trl.scaling.cli import main

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
LOG = RESULTS / "scaling_runs.jsonl"


@pytest.mark.parametrize(
    ("metric", "space", "folder"), [("responses", "log", "scaling"), ("general", "linear", "scaling-general")]
)
def test_committed_log_reproduces_the_published_fit(tmp_path: Path, metric: str, space: str, folder: str) -> None:
    assert main(["--log", str(LOG), "--metric", metric, "--space", space, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    published = json.loads((RESULTS / folder / "scaling.json").read_text())
    refit = json.loads((tmp_path / "scaling.json").read_text())
    assert published["metrics"].keys() == refit["metrics"].keys() == {metric}
    assert refit["settings"]["budget_unit"] == "examples"
    for name, block in published["metrics"].items():
        assert block["methods"].keys() == {"lora", "agl"}
        for method, expected in block["methods"].items():
            got = refit["metrics"][name]["methods"][method]
            assert [p["mean"] for p in got["points"]] == pytest.approx([p["mean"] for p in expected["points"]])
            assert len(got["points"]) == 6 and all(p["n_seeds"] >= 2 for p in got["points"])
            for key, param in expected["fit"]["params"].items():
                assert got["fit"]["params"][key]["value"] == pytest.approx(param["value"], rel=1e-6), (name, key)
            assert got["fit"]["r2"] == pytest.approx(expected["fit"]["r2"], rel=1e-6)
            assert got["heldout"]["rel_error"] == pytest.approx(expected["heldout"]["rel_error"], rel=1e-6)
        ratio = refit["metrics"][name]["ratio"]
        assert ratio["A_ratio_shared_beta"] == pytest.approx(block["ratio"]["A_ratio_shared_beta"], rel=1e-6)
