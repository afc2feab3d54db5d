"""A resumable results log: one JSON line per finished run, keyed by the settings it was made with.

A benchmark appends a run's rows when the run ends (all of them in one write), and a rerun skips the runs already in
the log. A log holds runs of one configuration only (``key_field``: a hash of everything the results depend on
except what may grow on resume, such as seeds and methods): a row made with other settings is refused with a clear
error, so a file always compares like with like.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agl_trl.utils import append_jsonl, read_jsonl


def settings_key(payload: Any) -> str:
    """A short stable hash of JSON-serialisable settings."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResultsLog:
    """The JSONL file ``path`` of runs made with settings ``key`` (stored in each row's ``key_field``)."""

    def __init__(self, path: str | Path, key: str, key_field: str = "config_key"):
        self.path, self.key, self.key_field = Path(path), key, key_field

    def rows(self) -> list[dict[str, Any]]:
        """Every row (a line cut by an interrupted write is dropped: its run is done again)."""
        return read_jsonl(self.path, missing_ok=True, skip_invalid=True)

    def check(self) -> list[dict[str, Any]]:
        """The rows, after checking that they were all made with this log's settings."""
        rows = self.rows()
        other = sorted({r.get(self.key_field) for r in rows} - {self.key}, key=str)
        if other:
            raise ValueError(
                f"{self.path} holds runs made with other settings ({self.key_field} {other}, now {self.key}): a "
                "results file must compare like with like. Use another --out for the new settings."
            )
        return rows

    def done(self, fields: Sequence[str]) -> set[tuple[Any, ...]]:
        """The ``fields`` tuples (e.g. ``("method", "seed")``) of the runs already logged."""
        return {tuple(r[f] for f in fields) for r in self.check()}

    def retire(self, stale: Sequence[dict[str, Any]], to: str | Path) -> list[dict[str, Any]]:
        """Move the rows ``stale`` (rows of this log, e.g. made by an older revision of one method) to the JSONL file
        ``to`` (appended: nothing is lost) and rewrite this log without them, atomically; returns the rows kept."""
        if not stale:
            return self.rows()
        drop = {json.dumps(r, sort_keys=True, default=str) for r in stale}
        kept = [r for r in self.rows() if json.dumps(r, sort_keys=True, default=str) not in drop]
        append_jsonl(to, stale)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(self.path)
        return kept

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Log one run's rows, stamped with the key, in a single write."""
        append_jsonl(self.path, [{**row, self.key_field: self.key} for row in rows])


__all__ = ["ResultsLog", "settings_key"]
