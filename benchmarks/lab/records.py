"""Committed results records: a protocol's rows kept in git beside its (ignored) run folder, so that a fresh checkout
resumes a multi-session run where the last session stopped.

A protocol that runs in ``<root>/<name>/peers.jsonl`` (one results file per fold or scenario) keeps a copy of each
file as ``<record>/<name>.jsonl``. :func:`sync_results` moves rows in whichever direction has more: a run folder
without rows starts from the record; the record takes the run's rows when the run has more. Rows only: trainings are
not committed, so a resumed run re-trains only what has no row.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "results"  # where the committed records live


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0


def sync_results(root: Path, record: Path, names: Iterable[str], results_file: str = "peers.jsonl") -> None:
    """Keep ``<root>/<name>/<results_file>`` and ``<record>/<name>.jsonl`` in step, for each of ``names``."""
    for name in names:
        run, kept = root / name / results_file, record / f"{name}.jsonl"
        n_run, n_kept = _lines(run), _lines(kept)
        if n_kept > n_run:
            run.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kept, run)
        elif n_run > n_kept:
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run, kept)


def training_precision() -> str:
    """The precision this machine's protocol runs train in (``auto``: bf16 only on a CPU with fast bf16). Rows of one
    precision never mix with another's: a protocol keeps each in its own run folder and record (``<...>/<precision>``)."""
    from agl_trl.precision import use_bf16

    return "bf16" if use_bf16("auto", on_cpu=True) else "fp32"


__all__ = ["RESULTS_DIR", "sync_results", "training_precision"]
