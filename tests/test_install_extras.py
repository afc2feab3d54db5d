"""Plotting is the ``plot`` extra: the core install (no matplotlib) imports ``agl_trl``, trains the tiny SFT recipe and
writes the JSON/Markdown reports, skipping the PNGs with one line that names the extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.data import repo_like_root, tail

REPO = Path(__file__).resolve().parents[1]

# a meta-path finder first on sys.path's search: matplotlib is "not installed" for the whole process
BLOCK_MATPLOTLIB = """
import importlib.abc
import sys


class NoMatplotlib(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, NoMatplotlib())
"""


def _requirement_name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("~")[0].strip()


def test_matplotlib_is_an_extra_not_a_core_dependency() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the project's venvs)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {_requirement_name(r).lower() for r in project["dependencies"]}
    assert "matplotlib" not in core, project["dependencies"]
    extras = project["optional-dependencies"]
    for extra in ("plot", "demo", "test"):  # the demo's and the tests' installs keep the plots
        assert "matplotlib" in {_requirement_name(r).lower() for r in extras[extra]}, (extra, extras[extra])


@pytest.mark.timeout(600)
def test_trains_and_reports_without_matplotlib(tmp_path: Path, recipe_model: Path) -> None:
    root = repo_like_root(tmp_path)
    script = BLOCK_MATPLOTLIB + textwrap.dedent(
        """
        import json
        from pathlib import Path

        import agl_trl
        from agl_trl.cli import main
        from agl_trl.evaluation.report import write_report

        rc = main(["sft", "--config", "recipes/trl/tiny-sft.yaml"])
        results = {
            "judge": {"name": "keyword"},
            "reference": "base",
            "models": {"base": {"role": "reference", "overall": {}, "by_category": {}, "kl": None}},
        }
        paths = write_report(results, Path("drift"), plots=True)
        print("REPORT", json.dumps(sorted(paths)))
        print("MATPLOTLIB_LOADED", "matplotlib" in sys.modules)
        raise SystemExit(rc)
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_DATASETS_CACHE=str(root / ".hf-cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])  # this checkout's agl_trl
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, tail(proc)
    out = root / "runs" / "tiny-sft"
    assert (out / "adapter_model.safetensors").is_file(), tail(proc)
    assert "agl/r_align" in proc.stdout + proc.stderr, tail(proc)
    report_line = next(line for line in proc.stdout.splitlines() if line.startswith("REPORT "))
    assert json.loads(report_line.split(" ", 1)[1]) == ["json", "markdown"], tail(proc)  # no PNG paths
    assert (root / "drift" / "drift.json").is_file() and (root / "drift" / "drift.md").is_file()
    assert not list((root / "drift").glob("*.png"))
    assert "MATPLOTLIB_LOADED False" in proc.stdout, tail(proc)
    hints = [line for line in proc.stderr.splitlines() if 'pip install "agl-trl[plot]"' in line]
    assert len(hints) == 1, tail(proc)  # one line for the two skipped plots
