"""Cached, resumable pipeline stages.

Each stage owns a folder ``<out>/<name>/``. When it finishes it writes ``<out>/<name>/.done.json`` holding its key
(a hash of its settings and of the keys of the stages it reads) and what it returned. A later run with the same key
skips the stage and returns the recorded result; a different key (changed settings or upstream) or a missing
marker (an interrupted run) clears the folder and runs the stage again. A ``source`` (a shipped set-up,
:mod:`agl_trl.experiments.shipped`) that holds the stage under the same key restores it instead of running it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

MARKER = ".done.json"


def stage_key(settings: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-serialisable settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The done-marker of the stage folder ``directory``, or None (missing or unreadable: not finished)."""
    try:
        return json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class StageSource(Protocol):
    """Finished stages to restore instead of running them (:class:`agl_trl.experiments.ShippedSetup`)."""

    version: str

    def has(self, stage: str, key: str) -> bool: ...

    def install(self, stage: str, directory: Path) -> dict[str, Any]: ...


class StageRunner:
    """Runs named stages under ``out``, skipping those whose done-marker carries the same key."""

    def __init__(self, out: str | Path, log: Callable[[str], None] | None = print):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log or (lambda _msg: None)
        self.keys: dict[str, str] = {}
        self.records: dict[str, dict[str, Any]] = {}

    def path(self, name: str) -> Path:
        return self.out / name

    def marker(self, name: str) -> dict[str, Any] | None:
        """The done-marker of ``name`` or None (missing or unreadable)."""
        return read_marker(self.path(name))

    def preview_key(self, settings: Mapping[str, Any], depends: tuple[str, ...] = (), name: str = "stage") -> str:
        """The key a stage with these settings and upstream stages gets (without running or recording it)."""
        missing = [d for d in depends if d not in self.keys]
        if missing:
            raise RuntimeError(f"stage {name!r} depends on {missing}, which have not run in this pipeline")
        return stage_key({"settings": dict(settings), "upstream": {d: self.keys[d] for d in depends}})

    def is_done(self, name: str, key: str) -> bool:
        marker = self.marker(name)
        return marker is not None and marker.get("key") == key

    def run(
        self,
        name: str,
        settings: Mapping[str, Any],
        fn: Callable[[Path], Mapping[str, Any] | None],
        depends: tuple[str, ...] = (),
        source: StageSource | None = None,
    ) -> dict[str, Any]:
        """Run ``fn(stage_dir)`` unless already done with the same settings and upstream keys; returns its result.

        ``depends`` names earlier stages whose keys enter this stage's key, so re-running an upstream stage with
        other settings invalidates everything downstream. ``source``: when it holds this stage under the same key,
        the stage is restored from it (its result then carries ``shipped``: the source's version).
        """
        key = self.preview_key(settings, depends, name)
        self.keys[name] = key
        directory = self.path(name)
        if self.is_done(name, key):
            marker = self.marker(name) or {}
            self.log(f"[{name}] cached ({directory})")
            record = {"cached": True, "seconds": marker.get("seconds", 0.0), "result": marker.get("result", {})}
            if "shipped" in record["result"]:
                record["shipped"] = record["result"]["shipped"]
            self.records[name] = record
            return record["result"]
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        started = time.perf_counter()
        if source is not None and source.has(name, key):
            self.log(f"[{name}] restoring from the shipped set-up {source.version} ...")
            result = {**source.install(name, directory), "shipped": source.version}
        else:
            self.log(f"[{name}] running ...")
            result = dict(fn(directory) or {})
        seconds = round(time.perf_counter() - started, 2)
        marker = {"key": key, "settings": dict(settings), "seconds": seconds, "result": result}
        tmp = directory / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker, indent=1, default=str), encoding="utf-8")
        tmp.replace(directory / MARKER)
        self.log(f"[{name}] done in {seconds:.1f} s")
        self.records[name] = {"cached": False, "seconds": seconds, "result": result}
        if "shipped" in result:
            self.records[name]["shipped"] = result["shipped"]
        return result
