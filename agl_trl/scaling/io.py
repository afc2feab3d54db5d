"""Run logs for the forgetting scaling law: one fine-tuning run (method, budget, seed, ...) and its forgetting per row.

Format: ``.jsonl`` (one JSON object per line) or ``.csv`` (header row). Columns:

=========  ========  =====================================================================================
column     required  meaning
=========  ========  =====================================================================================
method     yes       e.g. ``lora`` or ``agl``
budget     yes       fine-tuning tokens (or steps; be consistent), > 0
loss       yes       forgetting: mean per-token NLL increase vs the aligned model (finite; may be <= 0)
metric     no        which forgetting: ``responses`` (aligned model's own responses), ``general`` (held-out
                     text), ...; default ``forgetting``
rank       no        LoRA rank (trainable parameters are proportional to it), integer > 0
seed       no        seed of the run; rows that differ only in seed are averaged
=========  ========  =====================================================================================

Other columns are ignored by the fit; a ``budget_unit`` column with one value for every row (e.g. ``examples``)
labels the budget axis (:func:`budget_unit_of`). :func:`aggregate` averages seeds per (method, metric, budget, rank) with their spread.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agl_trl.utils import JSONLError, append_jsonl, iter_jsonl, read_jsonl

REQUIRED_COLUMNS = ("method", "budget", "loss")
OPTIONAL_COLUMNS = ("metric", "rank", "seed")
DEFAULT_METRIC = "forgetting"


class RunLogError(ValueError):
    """A run log that cannot be read: the message names the file, the line and the fix."""


@dataclass(frozen=True)
class RunRecord:
    """One fine-tuning run and one forgetting measurement of it."""

    method: str
    budget: float
    loss: float
    metric: str = DEFAULT_METRIC
    rank: int | None = None
    seed: int | str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class BudgetPoint:
    """The runs of one method at one (budget, rank): mean loss, sample std over seeds (0 for one run), count."""

    budget: float
    rank: int | None
    mean: float
    std: float
    n_seeds: int
    losses: tuple[float, ...]

    @property
    def sem(self) -> float:
        return self.std / math.sqrt(self.n_seeds)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _number(value: Any, column: str, where: str) -> float:
    if isinstance(value, bool) or _blank(value):
        raise RunLogError(f"{where}: column {column!r} is empty or not a number ({value!r}); give a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RunLogError(f"{where}: column {column!r} is not a number ({value!r}); give a number") from None
    if not math.isfinite(number):
        raise RunLogError(f"{where}: column {column!r} is {value!r} (NaN/inf); drop the run or re-measure it")
    return number


def parse_rows(rows: Iterable[tuple[int, Mapping[str, Any]]], source: str) -> list[RunRecord]:
    """Validate ``(line_number, row)`` pairs into :class:`RunRecord` (the shared checks of both file formats)."""
    records: list[RunRecord] = []
    seen: set[tuple[Any, ...]] = set()
    for line, row in rows:
        where = f"{source}:{line}"
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
        if missing:
            raise RunLogError(
                f"{where}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, row)) or 'none'}); "
                f"every row needs {', '.join(REQUIRED_COLUMNS)}"
            )
        method = str(row["method"]).strip() if not _blank(row["method"]) else ""
        if not method:
            raise RunLogError(f"{where}: column 'method' is empty; name the method (e.g. lora, agl)")
        budget = _number(row["budget"], "budget", where)
        if budget <= 0:
            raise RunLogError(f"{where}: budget must be > 0 (fine-tuning tokens or steps), got {row['budget']!r}")
        loss = _number(row["loss"], "loss", where)
        metric = DEFAULT_METRIC if _blank(row.get("metric")) else str(row["metric"]).strip()
        rank = None
        if not _blank(row.get("rank")):
            value = _number(row["rank"], "rank", where)
            if value <= 0 or value != int(value):
                raise RunLogError(f"{where}: rank must be a positive integer, got {row['rank']!r}")
            rank = int(value)
        seed = None if _blank(row.get("seed")) else row["seed"]
        if isinstance(seed, str):
            seed = int(seed) if seed.strip().lstrip("-").isdigit() else seed.strip()
        if seed is not None:
            key = (method, metric, budget, rank, seed)
            if key in seen:
                raise RunLogError(f"{where}: duplicate run {key}; each (method, metric, budget, rank, seed) once")
            seen.add(key)
        records.append(RunRecord(method, budget, loss, metric, rank, seed))
    if not records:
        raise RunLogError(f"{source}: no runs; the log needs at least one row with {', '.join(REQUIRED_COLUMNS)}")
    return records


def _is_csv(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return False
    if suffix in (".csv", ".tsv"):
        return True
    head = path.read_text(encoding="utf-8").lstrip()[:1]
    return head != "{"


def read_run_log(path: str | Path) -> list[RunRecord]:
    """Read a ``.jsonl`` or ``.csv`` run log (format in the module docstring); raises :class:`RunLogError`."""
    path = Path(path)
    if not path.is_file():
        raise RunLogError(f"run log {path} does not exist; pass --log PATH to a .jsonl or .csv file")
    if _is_csv(path):
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            if reader.fieldnames is None:
                raise RunLogError(f"{path}: empty CSV; the first row must be a header ({', '.join(REQUIRED_COLUMNS)})")
            missing = [c for c in REQUIRED_COLUMNS if c not in reader.fieldnames]
            if missing:
                raise RunLogError(
                    f"{path}: header lacks column(s) {', '.join(missing)} (found: {', '.join(reader.fieldnames)}); "
                    f"add them (required: {', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)})"
                )
            return parse_rows(((i, r) for i, r in enumerate(reader, start=2)), str(path))

    def rows() -> Iterable[tuple[int, Mapping[str, Any]]]:
        try:
            yield from iter_jsonl(path)
        except JSONLError as exc:
            if exc.json_error is not None:
                raise RunLogError(
                    f"{path}:{exc.lineno}: not valid JSON ({exc.json_error}); one JSON object per line"
                ) from None
            raise RunLogError(f"{path}:{exc.lineno}: expected a JSON object per line, got {exc.got}") from None

    return parse_rows(rows(), str(path))


def budget_unit_of(path: str | Path) -> str | None:
    """The log's ``budget_unit`` column when every row has the same one (e.g. ``examples``), else None."""
    path = Path(path)
    if _is_csv(path):
        with path.open(newline="", encoding="utf-8") as handle:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            units = {row.get("budget_unit") for row in csv.DictReader(handle, delimiter=delimiter)}
    else:
        units = {row.get("budget_unit") for row in read_jsonl(path)}
    unit = units.pop() if len(units) == 1 else None
    return unit if isinstance(unit, str) and unit.strip() else None


def write_run_log(path: str | Path, records: Sequence[RunRecord], append: bool = True) -> Path:
    """Write (by default append) ``records`` to a ``.jsonl`` run log; returns the path."""
    path = Path(path)
    if not append and path.exists():
        path.write_text("", encoding="utf-8")
    return append_jsonl(path, [record.to_dict() for record in records])


def metrics_in(records: Sequence[RunRecord]) -> list[str]:
    """The metric names in ``records``, in first-seen order."""
    return list(dict.fromkeys(r.metric for r in records))


def aggregate(records: Sequence[RunRecord], metric: str) -> dict[str, list[BudgetPoint]]:
    """``{method: [BudgetPoint sorted by (rank, budget)]}`` for ``metric``, seeds averaged."""
    groups: dict[str, dict[tuple[int | None, float], list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.metric == metric:
            groups[r.method][(r.rank, r.budget)].append(r.loss)
    if not groups:
        raise RunLogError(f"no runs with metric {metric!r}; the log has: {', '.join(metrics_in(records))}")
    out: dict[str, list[BudgetPoint]] = {}
    for method, cells in groups.items():
        points = []
        for (rank, budget), losses in sorted(cells.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
            n = len(losses)
            mean = sum(losses) / n
            std = math.sqrt(sum((x - mean) ** 2 for x in losses) / (n - 1)) if n > 1 else 0.0
            points.append(BudgetPoint(budget, rank, mean, std, n, tuple(losses)))
        out[method] = points
    return out
