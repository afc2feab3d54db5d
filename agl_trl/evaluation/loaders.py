"""Prompt sets beyond DriftCaps: public benchmarks by hub id (never vendored) and local jsonl/csv files.

Every loader returns :class:`~agl_trl.driftcaps.PromptItem` objects with ``label`` "unsafe"/"safe", so
the same metrics and reports apply. Public sets need hub access (``datasets.load_dataset``); offline
(``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``) a clear error says so and suggests a local file instead.

| name | hub id | label |
|---|---|---|
| jailbreakbench | JailbreakBench/JBB-Behaviors (config "behaviors", splits harmful/benign) | harmful -> unsafe, benign -> safe |
| xstest | walledai/XSTest | its ``label`` column (safe/unsafe) |
| xstest-v2 | natolambert/xstest-v2-copy | ``label``/``final_label`` column, else type ``contrast_*`` -> unsafe |
| advbench | walledai/AdvBench | all unsafe |
| harmbench | walledai/HarmBench (config "standard") | all unsafe |
| strongreject | walledai/StrongREJECT | all unsafe |
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agl_trl.driftcaps import DRIFTCAPS_VERSION, PromptItem, limit_items, load_driftcaps
from agl_trl.utils import read_jsonl

PROMPT_COLUMNS = (
    "prompt",
    "Goal",
    "goal",
    "behavior",
    "Behavior",
    "forbidden_prompt",
    "question",
    "instruction",
    "text",
)
LABEL_COLUMNS = ("label", "final_label", "labels", "is_unsafe", "unsafe", "harmful")
CATEGORY_COLUMNS = ("category", "Category", "type", "semantic_category", "focus")
UNSAFE_VALUES = {"unsafe", "harmful", "1", "true", "yes", "bad", "malicious"}
SAFE_VALUES = {"safe", "benign", "0", "false", "no", "good", "harmless"}


@dataclass(frozen=True)
class HubSet:
    hub_id: str
    config: str | None = None
    splits: tuple[tuple[str, str | None], ...] = (("train", None),)  # (split, forced label or None = from columns)
    default_label: str = "unsafe"
    license: str = ""


HUB_SETS: dict[str, HubSet] = {
    "jailbreakbench": HubSet(
        "JailbreakBench/JBB-Behaviors", "behaviors", (("harmful", "unsafe"), ("benign", "safe")), license="MIT"
    ),
    "xstest": HubSet("walledai/XSTest", None, (("train", None),), license="CC-BY-4.0"),
    "xstest-v2": HubSet("natolambert/xstest-v2-copy", None, (("prompts", None),), license="CC-BY-4.0"),
    "advbench": HubSet("walledai/AdvBench", None, (("train", "unsafe"),), license="MIT"),
    "harmbench": HubSet("walledai/HarmBench", "standard", (("train", "unsafe"),), license="MIT"),
    "strongreject": HubSet("walledai/StrongREJECT", None, (("train", "unsafe"),), license="MIT"),
}
_HUB_ALIASES = {s.hub_id.lower(): name for name, s in HUB_SETS.items()}


def _find(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def _label(value: Any, default: str, row: Mapping[str, Any]) -> str:
    if value is None or value == "":
        kind = str(row.get("type", ""))
        if kind.startswith("contrast_"):  # XSTest v2 naming: unsafe contrast prompts
            return "unsafe"
        return default
    v = str(value).strip().lower()
    if v in UNSAFE_VALUES:
        return "unsafe"
    if v in SAFE_VALUES:
        return "safe"
    raise ValueError(f"cannot map label value {value!r} to safe/unsafe (known: {sorted(UNSAFE_VALUES | SAFE_VALUES)})")


def rows_to_items(
    rows: Sequence[Mapping[str, Any]],
    source: str,
    prompt_column: str | None = None,
    label_column: str | None = None,
    category_column: str | None = None,
    default_label: str = "unsafe",
    forced_label: str | None = None,
    id_prefix: str | None = None,
) -> list[PromptItem]:
    """Map table rows to PromptItems; columns are detected from common names unless given."""
    if not rows:
        return []
    columns = list(rows[0].keys())
    pcol = prompt_column or _find(columns, PROMPT_COLUMNS)
    if pcol is None or pcol not in columns:
        raise ValueError(f"{source}: no prompt column (looked for {prompt_column or PROMPT_COLUMNS}; have {columns})")
    lcol = label_column or _find(columns, LABEL_COLUMNS)
    if label_column is not None and label_column not in columns:
        raise ValueError(f"{source}: label column {label_column!r} not in {columns}")
    ccol = category_column or _find(columns, CATEGORY_COLUMNS)
    items = []
    for i, row in enumerate(rows):
        label = forced_label or _label(row.get(lcol) if lcol else None, default_label, row)
        items.append(
            PromptItem(
                id=f"{id_prefix or source}-{i:04d}",
                prompt=str(row[pcol]),
                label=label,
                category=str(row[ccol]) if ccol and row.get(ccol) not in (None, "") else "uncategorized",
                source=source,
                extra={
                    k: v for k, v in row.items() if k not in {pcol, lcol, ccol} and isinstance(v, (str, int, float))
                },
            )
        )
    return items


def load_local(
    path: str | Path,
    prompt_column: str | None = None,
    label_column: str | None = None,
    category_column: str | None = None,
    default_label: str = "unsafe",
) -> list[PromptItem]:
    """Prompts from a local ``.jsonl``/``.json`` (list of objects) or ``.csv``; label column optional."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"prompt file {file} not found")
    suffix = file.suffix.lower()
    if suffix == ".csv":
        with open(file, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    elif suffix == ".jsonl":
        rows = read_jsonl(file)
    elif suffix == ".json":
        rows = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{file}: expected a JSON list of objects")
    else:
        raise ValueError(f"{file}: unsupported file type {suffix!r} (use .jsonl, .json or .csv)")
    return rows_to_items(rows, file.stem, prompt_column, label_column, category_column, default_label)


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub_set(name: str, limit_per_category: int | None = None) -> list[PromptItem]:
    """A public set by short name (``jailbreakbench`` ...) or hub id (``walledai/XSTest`` ...)."""
    key = _HUB_ALIASES.get(name.lower(), name.lower())
    if key not in HUB_SETS:
        raise ValueError(f"unknown public set {name!r}; known: {sorted(HUB_SETS)} (or their hub ids)")
    spec = HUB_SETS[key]
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover
        raise ImportError("loading public sets needs `datasets` (pip install datasets)") from exc
    items: list[PromptItem] = []
    for split, forced in spec.splits:
        try:
            ds = datasets.load_dataset(spec.hub_id, spec.config, split=split)
        except Exception as exc:
            hint = " The hub is disabled (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)." if _offline() else ""
            raise RuntimeError(
                f"could not load {spec.hub_id} (split {split!r}) from the Hugging Face hub: {exc}.{hint} "
                "Public sets are never vendored: run with hub access once (datasets caches them), or export the "
                "prompts to a local .jsonl/.csv and pass that file instead."
            ) from exc
        rows = [dict(r) for r in ds]
        items += rows_to_items(
            rows, key, default_label=spec.default_label, forced_label=forced, id_prefix=f"{key}-{split}"
        )
    return limit_items(items, limit_per_category) if limit_per_category else items


def load_prompts(
    spec: str = "driftcaps",
    split: str = "test",
    categories: Sequence[str] | None = None,
    limit_per_category: int | None = None,
) -> list[PromptItem]:
    """One entry point: ``"driftcaps"``, a public set name / hub id, or a local file path.

    split: the DriftCaps split (``"test"``, ``"validation"``, ``"probe"`` or ``"all"``); ignored for other sets.
    """
    if spec in ("driftcaps_v1", "driftcaps_v2"):
        raise ValueError(
            f"{spec} is no longer shipped (it is in the git history); use 'driftcaps' ({DRIFTCAPS_VERSION}, splits "
            f"probe/validation/test) or pass the {spec} file's path"
        )
    if spec in ("driftcaps", DRIFTCAPS_VERSION):
        return load_driftcaps(
            split=split, categories=list(categories) if categories else None, limit_per_category=limit_per_category
        )
    if Path(spec).suffix.lower() in (".jsonl", ".json", ".csv") or Path(spec).is_file():
        items = load_local(spec)
    else:
        items = load_hub_set(spec)
    if categories:
        items = [it for it in items if it.category in set(categories)]
    return limit_items(items, limit_per_category) if limit_per_category else items
