"""The shipped aligned set-up: the experiment set-up as versioned data, restored instead of rebuilt.

Training the set-up (:func:`~agl_trl.experiments.prepare_setup`: safety data, the safety LoRA, the aligned model's
answers, its Fisher) is the longest part of ``make demo``, and rebuilt on another CPU it gives other weights. So the
package ships one build of it under ``agl_trl/setups/<name>/<version>/``:

* ``manifest.json`` -- the version, how it was built (machine, precision, package versions), each stage's done-marker
  (its key, settings and result, exactly as :class:`~agl_trl.experiments.StageRunner` wrote it) and the SHA-256 of
  every file;
* ``align_data/``, ``gen_aligned/``, ``gen_aligned_validation/``, ``fisher/`` -- those stages' folders as built;
* ``aligned/adapter/`` -- the safety LoRA (bf16 safetensors, a few MB); the aligned model *is* the base model with this
  adapter merged, which :meth:`ShippedSetup.install` does at load;
* ``CARD.md`` -- how it was built and what it measures.

:class:`ShippedSetup` plugs into :meth:`StageRunner.run` (``source=``): a stage whose key equals the shipped
marker's is restored (files checked against the manifest, copied) instead of run; a changed setting makes the key
differ, and that stage (and everything downstream) is built as before. :func:`export_setup` writes a built set-up
folder in this form (``tools/export_setup.py``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agl_trl.utils import files_sha256

SETUPS_ROOT = Path(__file__).resolve().parents[1] / "setups"
"""Where the package's shipped set-ups live: ``<name>/<version>/``."""

DEFAULT_SETUP = "smollm2-135m-instruct/v1"
"""The shipped set-up of the default model (what ``make demo`` and the benchmarks restore)."""

MANIFEST = "manifest.json"
STAGES = ("align_data", "aligned", "gen_aligned", "gen_aligned_validation", "fisher")
"""The set-up stages a shipped set-up may hold, in build order."""


class ShippedSetupError(RuntimeError):
    """A shipped set-up that is missing, incomplete or whose files do not match their checksums."""


def _stage_files(directory: Path, stage: str) -> list[Path]:
    """The files of a built stage folder that a shipped set-up keeps (the aligned stage: only its adapter)."""
    if stage == "aligned":  # the adapter's weights and config (not PEFT's model-card stub)
        return sorted(p for p in (directory / "adapter").glob("adapter_*") if p.is_file())
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".done"))


class ShippedSetup:
    """One shipped set-up folder: its manifest, checksums and the restore of its stages."""

    def __init__(self, root: str | Path, loader: Callable[[], tuple[Any, Any]] | None = None):
        self.root = Path(root)
        self.loader = loader
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise ShippedSetupError(
                f"no shipped set-up at {self.root} ({MANIFEST} missing): pass an existing set-up folder, or build "
                "the set-up from scratch with `agl-trl demo --rebuild-setup`"
            )
        self.manifest: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
        self._verified: set[str] = set()

    @property
    def version(self) -> str:
        """``<name>/<version>``: what results record as their set-up."""
        return f"{self.manifest['name']}/{self.manifest['version']}"

    @property
    def model(self) -> str | None:
        """The base model this set-up was built on (its ``align_data`` stage's ``model`` setting; None: unrecorded)."""
        return self.manifest.get("stages", {}).get("align_data", {}).get("settings", {}).get("model")

    def safe_answers(self) -> dict[str, str]:
        """Prompt -> answer of the safe rows of this set-up's safety data (``align_data/rows.json``, checked)."""
        self.verify("align_data")
        rows = json.loads((self.root / "align_data" / "rows.json").read_text(encoding="utf-8"))
        return {r["prompt"]: r["answer"] for r in rows if r["label"] == "safe"}

    def key_of(self, stage: str) -> str | None:
        marker = self.manifest.get("stages", {}).get(stage)
        return None if marker is None else marker["key"]

    def has(self, stage: str, key: str) -> bool:
        """This set-up holds ``stage`` built with the settings and upstream stages that ``key`` hashes."""
        return self.key_of(stage) == key

    def verify(self, stage: str | None = None) -> None:
        """Check the files of ``stage`` (None: every stage) against the manifest's SHA-256; raise on any mismatch."""
        files: dict[str, str] = self.manifest["files"]
        prefix = None if stage is None else stage + "/"
        for rel, expected in sorted(files.items()):
            if prefix is not None and not rel.startswith(prefix):
                continue
            path = self.root / rel
            if not path.is_file():
                raise ShippedSetupError(
                    f"shipped set-up {self.version}: {rel} is missing from {self.root}: restore it from git "
                    "(`git checkout -- agl_trl/setups`) or rebuild with `agl-trl demo --rebuild-setup`"
                )
            actual = files_sha256(path)
            if actual != expected:
                raise ShippedSetupError(
                    f"shipped set-up {self.version}: {rel} has SHA-256 {actual[:12]}..., the manifest says "
                    f"{expected[:12]}... (a changed or truncated file, e.g. a Git LFS pointer): restore it from git "
                    "or rebuild with `agl-trl demo --rebuild-setup`"
                )

    def install(self, stage: str, directory: Path) -> dict[str, Any]:
        """Restore ``stage`` into ``directory`` (checked, copied; the aligned stage also merges its adapter into the
        base model) and return the stage's recorded result."""
        if stage not in self._verified:
            self.verify(stage)
            self._verified.add(stage)
        source = self.root / stage
        for path in source.rglob("*"):
            if path.is_file():
                target = directory / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        if stage == "aligned":
            from agl_trl.experiments.aligned import default_loader, merge_adapter

            merge_adapter(self.loader or default_loader, directory / "adapter", directory / "model")
        return dict(self.manifest["stages"][stage].get("result", {}))


def shipped_setup(name: str = DEFAULT_SETUP, loader: Callable[[], tuple[Any, Any]] | None = None) -> ShippedSetup:
    """The shipped set-up ``name`` (``<model>/<version>`` under :data:`SETUPS_ROOT`, or a folder path)."""
    path = Path(name)
    return ShippedSetup(path if path.is_dir() else SETUPS_ROOT / name, loader)


def export_setup(built: str | Path, dest: str | Path, name: str, version: str, build: dict[str, Any]) -> Path:
    """Write the set-up stages built under ``built`` (by ``prepare_setup``) to ``dest`` as a shipped set-up.

    ``build``: how it was built (machine, precision, versions), recorded in the manifest. Stages that did not run
    under ``built`` are left out. The manifest is written last, so an interrupted export has none.
    """
    built, dest = Path(built), Path(dest)
    stages: dict[str, Any] = {}
    files: dict[str, str] = {}
    if dest.exists():
        shutil.rmtree(dest)
    for stage in STAGES:
        marker_file = built / stage / ".done.json"
        if not marker_file.is_file():
            continue
        stages[stage] = json.loads(marker_file.read_text(encoding="utf-8"))
        for path in _stage_files(built / stage, stage):
            rel = path.relative_to(built)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
            files[rel.as_posix()] = files_sha256(path)
    if "aligned" not in stages:
        raise ShippedSetupError(f"{built} holds no finished `aligned` stage: run prepare_setup on it first")
    manifest = {"name": name, "version": version, "build": build, "stages": stages, "files": files}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n", encoding="utf-8")
    return dest


__all__ = [
    "DEFAULT_SETUP",
    "SETUPS_ROOT",
    "STAGES",
    "ShippedSetup",
    "ShippedSetupError",
    "export_setup",
    "shipped_setup",
]
