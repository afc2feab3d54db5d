"""The prepared GPU check runs its whole path on the CPU with a tiny Llama: Fisher, alternating runs, the ratio."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "check.py"


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_steps_and_a_missing_gpu_are_refused(tmp_path: Path) -> None:
    import torch

    check = load_check()
    assert check.main(["--out", str(tmp_path), "--tiny", "--steps", "15"]) == 2
    if not torch.cuda.is_available():
        assert check.main(["--out", str(tmp_path)]) == 2  # the 8B shape never silently runs on a CPU


@pytest.mark.slow
def test_tiny_check_times_both_trainers_with_the_meter_inside(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    argv = ["--tiny", "--out", str(tmp_path), "--batch", "2", "--seq", "64", "--warmup", "1", "--steps", "10"]
    assert load_check().main(argv) == 0
    result = json.loads((tmp_path / "check.json").read_text())
    assert result["shape"] == "tiny" and result["fisher_seconds"] > 0 and (tmp_path / "fisher").is_dir()
    assert [r["agl"] for r in result["runs"]] == [False, True, True, False]  # the order reverses each round
    assert all(r["steps"] == 10 and r["mean_step_seconds"] > 0 for r in result["runs"])
    assert all(r["meter_readings_logged"] >= 1 for r in result["runs"] if r["agl"])  # the meter read in the steps
    assert not any(r["meter_readings_logged"] for r in result["runs"] if not r["agl"])
    ratios = [
        next(r for r in result["runs"] if r["round"] == i and r["agl"])["mean_step_seconds"]
        / next(r for r in result["runs"] if r["round"] == i and not r["agl"])["mean_step_seconds"]
        for i in (0, 1)
    ]
    assert result["ratios"] == pytest.approx(ratios) and result["step_time_ratio"] == pytest.approx(sum(ratios) / 2)
