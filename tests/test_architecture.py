"""docs/architecture.md matches the tree: every path and public name it lists exists, and imports follow its layers."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _tree_paths() -> list[str]:
    block = DOC.split("## The tree", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def _public_names() -> list[str]:
    section = DOC.split("## Public names", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`(agl_trl(?:\.\w+)+)`", section)


def _layers() -> dict[str, int]:
    comment = re.search(r"<!-- layers: (.*?) -->", DOC, re.S).group(1)
    return {name: int(rank) for name, rank in (item.split("=") for item in comment.split())}


@pytest.mark.parametrize("path", _tree_paths())
def test_every_listed_path_exists(path: str) -> None:
    assert (ROOT / path).exists(), f"docs/architecture.md lists {path}, which is not in the tree"


def test_every_package_module_is_listed() -> None:
    listed = _tree_paths()
    for file in sorted((ROOT / "agl_trl").rglob("*.py")):
        rel = file.relative_to(ROOT).as_posix()
        assert any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in listed), f"{rel} is not in the tree"


@pytest.mark.parametrize("dotted", _public_names())
def test_every_public_name_imports(dotted: str) -> None:
    module, _, name = dotted.rpartition(".")
    try:
        target = importlib.import_module(dotted)  # a module named in the list
    except ImportError:
        target = getattr(importlib.import_module(module), name, None)
    assert target is not None, f"docs/architecture.md names {dotted}, which does not exist"


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(file: Path) -> list[str]:
    module = file.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name.startswith("agl_trl.")]


def test_imports_point_down_the_layers() -> None:
    layers = _layers()
    upward = []
    for file in sorted((ROOT / "agl_trl").rglob("*.py")):
        src = _unit(file.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."))
        if src == "__init__":
            continue
        for name in _imports(file):
            dst = _unit(name)
            if dst != src and layers[dst] > layers[src]:
                upward.append(f"{file.relative_to(ROOT)} (layer {layers[src]}) imports {name} (layer {layers[dst]})")
    assert not upward, "\n".join(upward)


def test_no_private_name_is_imported_across_packages() -> None:
    crossing = []
    for file in sorted((ROOT / "agl_trl").rglob("*.py")):
        src = _unit(file.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."))
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("agl_trl.") and _unit(module) != src:
                crossing += [f"{file.relative_to(ROOT)}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not crossing, crossing


def test_the_package_never_imports_the_lab() -> None:
    """The lab (benchmarks/, benchmarks/lab/) drives the package; the installed package never reaches back into it."""
    reaching = []
    for file in sorted((ROOT / "agl_trl").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            reaching += [f"{file.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("benchmarks", "tests")]
    assert not reaching, reaching


def _module_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (lazy imports inside functions included; ``from p import m``
    with ``m`` a module counts as importing ``p.m``)."""
    files = {
        f.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."): f for f in (ROOT / "agl_trl").rglob("*.py")
    }
    modules = {name.removesuffix(".__init__"): file for name, file in files.items()}
    graph: dict[str, set[str]] = {}
    for module, file in modules.items():
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" for a in node.names]
                edges |= {n for n in names if n in modules} or ({target} if target in modules else set())
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
        graph[module] = edges - {module}
    return graph


def test_the_import_graph_has_no_circle() -> None:
    """No two package modules import each other, directly or through others (lazy imports count)."""
    graph, circles = _module_graph(), []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, circles


def test_tests_share_fixtures_only_through_the_helpers_package() -> None:
    """A test module imports what tests share from ``tests.helpers``, never from another test module or conftest."""
    crossing = []
    for file in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("tests."):
                last = node.module.rsplit(".", 1)[-1]
                if last.startswith("test_") or last == "conftest" or not node.module.startswith("tests.helpers"):
                    crossing.append(f"{file.relative_to(ROOT)}: from {node.module}")
    assert not crossing, crossing
