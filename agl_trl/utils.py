"""Small helpers shared across agl_trl (torch-free): JSONL files, the package version, lazy imports, derived classes,
the optional plotting backend."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def files_sha256(*paths: str | Path) -> str:
    """The SHA-256 (hex) of the files' bytes in the given order, read in 1 MiB blocks (weights do not fit twice in
    memory)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def package_version() -> str:
    """The installed agl-trl version (``"unknown"`` when not installed), recorded in result files."""
    try:
        from importlib.metadata import version

        return version("agl-trl")
    except Exception:
        return "unknown"


PLOT_EXTRA = 'pip install "agl-trl[plot]"'


@functools.cache
def load_pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None when matplotlib is missing.

    Plotting is the ``plot`` extra: training and the JSON/Markdown reports need none of it, so a report without
    matplotlib skips its PNGs and says so once per process (the log line names :data:`PLOT_EXTRA`).
    """
    try:
        import matplotlib
    except ImportError:
        logging.getLogger(__name__).warning(
            "matplotlib is not installed: skipping the plots (the JSON and Markdown reports are written); for the "
            "plots: %s",
            PLOT_EXTRA,
        )
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class JSONLError(ValueError):
    """A JSONL line that is not a JSON object; the message names the file and the 1-based line.

    ``json_error`` is the parser's message for a line that is not valid JSON; ``got`` the type name of a line
    that parsed to something other than an object. Callers with their own error type re-raise from these fields.
    """

    def __init__(self, path: str | Path, lineno: int, json_error: str | None = None, got: str | None = None):
        self.path, self.lineno, self.json_error, self.got = Path(path), lineno, json_error, got
        problem = f"invalid JSON ({json_error})" if json_error is not None else "expected a JSON object per line"
        super().__init__(f"{path}:{lineno}: {problem}")


def iter_jsonl(path: str | Path, *, skip_invalid: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, object)`` for each non-blank line of a JSONL file, lazily (1-based line numbers).

    A line that is not a JSON object raises :class:`JSONLError`, or is dropped with ``skip_invalid=True`` (a line
    cut by an interrupted append).
    """
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if skip_invalid:
                    continue
                raise JSONLError(path, lineno, json_error=exc.msg) from exc
            if not isinstance(row, dict):
                if skip_invalid:
                    continue
                raise JSONLError(path, lineno, got=type(row).__name__)
            yield lineno, row


def read_jsonl(path: str | Path, *, missing_ok: bool = False, skip_invalid: bool = False) -> list[dict[str, Any]]:
    """The objects of a JSONL file (blank lines skipped); see :func:`iter_jsonl` for bad lines.

    ``missing_ok=True``: a missing file reads as no rows (a results log not written yet).
    """
    if missing_ok and not Path(path).is_file():
        return []
    return [row for _, row in iter_jsonl(path, skip_invalid=skip_invalid)]


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Append ``rows`` as JSON lines in one write (creating parent directories); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, default=str) + "\n" for row in rows)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
    return path


def import_object(path: str) -> Any:
    """The object named ``"package.module:attribute"`` (imported on call: for classes built on first access)."""
    import importlib

    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def lazy_getattr(module_name: str, namespace: dict[str, Any], table: dict[str, Any], build: Any = None) -> Any:
    """A module ``__getattr__`` (PEP 562) that resolves ``table[name]`` on first access and caches it in ``namespace``.

    ``table`` maps a name to a submodule (``"judges"``: ``<module_name>.judges``), a module (``"agl_trl.generation"``)
    or an object path (``"trl.experimental.orpo:ORPOConfig"``); the value is the attribute of that name, or the named
    object, passed through ``build(value, name)`` when given (classes derived on first access).
    """

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        target = table[name]
        if ":" in target:
            value = import_object(target)
        else:
            import importlib

            module = importlib.import_module(target if "." in target else f"{module_name}.{target}")
            value = getattr(module, name)
        namespace[name] = value = build(value, name) if build is not None else value
        return value

    return __getattr__


def derived_class(name: str, bases: tuple[type, ...], module: str, doc: str, **members: Any) -> type:
    """``type(name, bases, members)`` placed in ``module`` (picklable, documented): AGL subclasses of TRL classes."""
    return type(name, bases, {"__module__": module, "__qualname__": name, "__doc__": doc, **members})


def derived_classes(module_name: str, namespace: dict[str, Any], table: dict[str, tuple[str, bool]], build: Any) -> Any:
    """Put ``build(<class at path>, name)`` into ``namespace`` for each ``name: (path, lazy)`` of ``table``: now, or on
    first access where ``lazy`` (a slow import); returns the module ``__getattr__`` (PEP 562) of the lazy ones."""
    for name, (path, lazy) in table.items():
        if not lazy:
            namespace[name] = build(import_object(path), name)
    return lazy_getattr(module_name, namespace, {name: path for name, (path, lazy) in table.items() if lazy}, build)
