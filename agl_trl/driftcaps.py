"""DriftCaps: the project's own drift benchmark data (prompts only, never harmful answers).

Data files live in ``agl_trl/evaluation/data/``:

* ``driftcaps_v1.jsonl`` -- one prompt per line: ``{"id", "prompt", "label": "unsafe"|"safe", "category",
  "kind": "harmful"|"contrast"|"general", "style", "split": "probe"|"eval"}``;
* ``refusal_templates.json`` -- ``{"refusals": [...]}``, refusal answers used to align the demo model;
* ``judge_examples.jsonl`` -- ``{"prompt", "response", "refusal": bool, "note"}``, labelled responses used to
  measure the refusal judges.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agl_trl.utils import iter_jsonl

DATA_DIR = Path(__file__).resolve().parent / "evaluation" / "data"  # shipped as package data
DRIFTCAPS_FILE = DATA_DIR / "driftcaps_v1.jsonl"
REFUSAL_TEMPLATES_FILE = DATA_DIR / "refusal_templates.json"
JUDGE_EXAMPLES_FILE = DATA_DIR / "judge_examples.jsonl"
DRIFTCAPS_VERSION = "driftcaps_v1"

LABELS = ("unsafe", "safe")
SPLITS = ("probe", "eval")
REQUIRED_KEYS = ("id", "prompt", "label", "category")


@dataclass
class PromptItem:
    """One evaluation prompt. ``label`` is ``"unsafe"`` (should be refused) or ``"safe"`` (should be answered)."""

    id: str
    prompt: str
    label: str
    category: str = "uncategorized"
    kind: str | None = None
    style: str | None = None
    split: str | None = None
    source: str = DRIFTCAPS_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"PromptItem {self.id!r}: label must be one of {LABELS}, got {self.label!r}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"PromptItem {self.id!r}: empty prompt")

    @property
    def unsafe(self) -> bool:
        return self.label == "unsafe"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _missing_data(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found at {path}. The DriftCaps data ships inside the agl-trl package "
        "(agl_trl/evaluation/data/); reinstall agl-trl, or pass path=... to a file of the same format."
    )


def load_driftcaps(
    split: str = "eval",
    categories: list[str] | tuple[str, ...] | None = None,
    limit_per_category: int | None = None,
    path: str | Path | None = None,
) -> list[PromptItem]:
    """Load DriftCaps prompts.

    split: ``"eval"`` (held out: never train or estimate a Fisher on it), ``"probe"`` or ``"all"``.
    categories: keep only these categories (unknown names raise, listing the known ones).
    limit_per_category: keep at most N prompts per category, taken deterministically in file order and alternating
        between unsafe and safe prompts of that category, so a small subset stays balanced.
    path: another file in the DriftCaps format (tests, new versions).
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {(*SPLITS, 'all')}, got {split!r}")
    file = Path(path) if path is not None else DRIFTCAPS_FILE
    if not file.is_file():
        raise _missing_data(file, "DriftCaps prompt file")
    items: list[PromptItem] = []
    seen: set[str] = set()
    for lineno, row in iter_jsonl(file):
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise ValueError(f"{file}:{lineno}: missing keys {missing}")
        if row["id"] in seen:
            raise ValueError(f"{file}:{lineno}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        row_split = row.get("split")
        if row_split is not None and row_split not in SPLITS:
            raise ValueError(f"{file}:{lineno}: split must be one of {SPLITS}, got {row_split!r}")
        if split != "all" and row_split != split:
            continue
        known = {"id", "prompt", "label", "category", "kind", "style", "split"}
        try:
            item = PromptItem(
                id=str(row["id"]),
                prompt=row["prompt"],
                label=row["label"],
                category=str(row["category"]),
                kind=row.get("kind"),
                style=row.get("style"),
                split=row_split,
                source=file.stem,
                extra={k: v for k, v in row.items() if k not in known},
            )
        except ValueError as exc:
            raise ValueError(f"{file}:{lineno}: {exc}") from exc
        items.append(item)
    if categories is not None:
        available = sorted({it.category for it in items})
        unknown = sorted(set(categories) - set(available))
        if unknown:
            raise ValueError(f"unknown DriftCaps categories {unknown}; available in split {split!r}: {available}")
        items = [it for it in items if it.category in set(categories)]
    if limit_per_category is not None:
        items = limit_items(items, limit_per_category)
    return items


def limit_items(items: list[PromptItem], limit_per_category: int) -> list[PromptItem]:
    """At most ``limit_per_category`` items per category, alternating labels (unsafe first), file order kept."""
    if limit_per_category < 1:
        raise ValueError("limit_per_category must be >= 1")
    by_cat: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, it in enumerate(items):
        by_cat[it.category][it.label].append(i)
    keep: set[int] = set()
    for labels in by_cat.values():
        queues = [list(labels[lab]) for lab in LABELS if labels.get(lab)]
        chosen: list[int] = []
        while len(chosen) < limit_per_category and any(queues):
            for q in queues:
                if q and len(chosen) < limit_per_category:
                    chosen.append(q.pop(0))
        keep.update(chosen)
    return [it for i, it in enumerate(items) if i in keep]


def load_refusal_templates(path: str | Path | None = None) -> list[str]:
    """Refusal answers (``{"refusals": [...]}``) used to teach the demo model to refuse."""
    file = Path(path) if path is not None else REFUSAL_TEMPLATES_FILE
    if not file.is_file():
        raise _missing_data(file, "Refusal templates file")
    data = json.loads(file.read_text(encoding="utf-8"))
    refusals = data.get("refusals") if isinstance(data, dict) else None
    if not isinstance(refusals, list) or not all(isinstance(r, str) and r.strip() for r in refusals) or not refusals:
        raise ValueError(f"{file}: expected {{'refusals': [non-empty strings]}}")
    return refusals


def load_judge_examples(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Labelled judge examples: ``{"prompt", "response", "refusal": bool, "note"}`` per line."""
    file = Path(path) if path is not None else JUDGE_EXAMPLES_FILE
    if not file.is_file():
        raise _missing_data(file, "Judge examples file")
    rows = []
    for lineno, row in iter_jsonl(file):
        if not isinstance(row.get("response"), str) or not isinstance(row.get("refusal"), bool):
            raise ValueError(f"{file}:{lineno}: need a string 'response' and a boolean 'refusal'")
        rows.append({"prompt": row.get("prompt", ""), **row})
    return rows
