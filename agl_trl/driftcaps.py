"""DriftCaps: the project's own drift benchmark data (prompts only, never harmful answers).

Data files live in ``agl_trl/evaluation/data/`` (data card: ``docs/driftcaps.md``):

* ``driftcaps_v3.jsonl`` -- one prompt per line: ``{"id", "prompt", "label": "unsafe"|"safe", "category",
  "kind": "harmful"|"contrast"|"general", "style", "form": "question"|"instruction", "behavior",
  "split": "probe"|"validation"|"test"}``. Splits are disjoint by behaviour and by phrasing: no test prompt
  shares an 8-word sequence (:func:`ngrams`) with a probe or validation prompt. v3's probe split is v2's, record for
  record (:func:`split_sha256`), so what was trained or estimated on v2's probe split stays valid;
* ``refusal_templates.json`` -- ``{"version": 2, "openers", "reasons", "redirects"}``, parts that
  :func:`load_refusal_templates` composes into the refusal answers used to align the demo model;
* ``judge_examples.jsonl`` -- ``{"prompt", "response", "refusal": bool, "note"}``, labelled responses used to
  measure the refusal judges.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agl_trl.utils import iter_jsonl

DATA_DIR = Path(__file__).resolve().parent / "evaluation" / "data"  # shipped as package data
DRIFTCAPS_FILE = DATA_DIR / "driftcaps_v3.jsonl"
REFUSAL_TEMPLATES_FILE = DATA_DIR / "refusal_templates.json"
JUDGE_EXAMPLES_FILE = DATA_DIR / "judge_examples.jsonl"
DRIFTCAPS_VERSION = "driftcaps_v3"

LABELS = ("unsafe", "safe")
SPLITS = ("probe", "validation", "test")
"""``probe``: Fisher estimation and alignment; ``validation``: choosing settings, early stopping; ``test``: reporting."""
REQUIRED_KEYS = ("id", "prompt", "label", "category")
KNOWN_KEYS = ("id", "prompt", "label", "category", "kind", "style", "form", "behavior", "split")
WORD_PATTERN = re.compile(r"[a-z0-9']+")
"""A word, for :func:`ngrams` (applied to lower-cased text)."""

_EVAL_RENAMED = (
    "DriftCaps (since v2) has no 'eval' split: it was replaced by 'test' (held out; use it for reported numbers) and "
    "'validation' (use it for choosing settings or stopping early)"
)


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
    behavior: str | None = None
    form: str | None = None

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
    split: str = "test",
    categories: list[str] | tuple[str, ...] | None = None,
    limit_per_category: int | None = None,
    path: str | Path | None = None,
) -> list[PromptItem]:
    """Load DriftCaps prompts.

    split: ``"test"`` (held out: report on it; never train, estimate a Fisher or choose settings on it),
        ``"validation"`` (held out from training: choose settings and stop early on it), ``"probe"`` (Fisher
        estimation and alignment) or ``"all"``. ``"eval"`` (v1) raises a ValueError naming its replacements.
    categories: keep only these categories (unknown names raise, listing the known ones).
    limit_per_category: keep at most N prompts per category, taken deterministically in file order and alternating
        between unsafe and safe prompts of that category, so a small subset stays balanced.
    path: another file in the DriftCaps format (tests, new versions).
    """
    if split == "eval":
        raise ValueError(_EVAL_RENAMED)
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
        if row_split == "eval":
            raise ValueError(f"{file}:{lineno}: {_EVAL_RENAMED}")
        if row_split is not None and row_split not in SPLITS:
            raise ValueError(f"{file}:{lineno}: split must be one of {SPLITS}, got {row_split!r}")
        if split != "all" and row_split != split:
            continue
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
                extra={k: v for k, v in row.items() if k not in KNOWN_KEYS},
                behavior=row.get("behavior"),
                form=row.get("form"),
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


def canonical_sha256(rows: Iterable[dict[str, Any]]) -> str:
    """SHA-256 (hex) of ``rows`` as canonical JSON: one list, keys sorted, no spaces, UTF-8, order kept."""
    text = json.dumps(list(rows), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_sha256(split: str = "probe", path: str | Path | None = None) -> str:
    """:func:`canonical_sha256` of one split's rows exactly as stored (every key, file order).

    What a consumer of one split depends on: the safety data and the Fisher read only the probe split, so their cached
    and shipped stages are keyed by this hash rather than by the whole file's (v3 added validation and test prompts
    and kept the probe rows of v2, so the hash, and those stages, carried over).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    file = Path(path) if path is not None else DRIFTCAPS_FILE
    if not file.is_file():
        raise _missing_data(file, "DriftCaps prompt file")
    return canonical_sha256(row for _, row in iter_jsonl(file) if row.get("split") == split)


@functools.cache
def test_only_styles(path: str | Path | None = None) -> tuple[str, ...]:
    """The phrasing styles only the test split has (sorted): no probe or validation prompt, so no part of a
    protection and no choice of settings saw them. Reports show them first (v3: ``completion``, ``embedded``)."""
    seen: dict[str, set[str]] = {}
    for item in load_driftcaps("all", path=path):
        if item.style:
            seen.setdefault(item.style, set()).add(item.split)
    return tuple(sorted(style for style, splits in seen.items() if splits == {"test"}))


def alternate_labels(items: list[PromptItem], leftovers_first: bool = False) -> list[PromptItem]:
    """``items`` with unsafe and safe prompts alternating (each label's order kept) and the longer label's leftovers
    after them, or before them with ``leftovers_first`` (then the *tail* is the balanced part)."""
    unsafe = [it for it in items if it.label == "unsafe"]
    safe = [it for it in items if it.label != "unsafe"]
    n = min(len(unsafe), len(safe))
    mixed = [it for pair in zip(unsafe, safe, strict=False) for it in pair]
    rest = unsafe[n:] + safe[n:]
    return rest + mixed if leftovers_first else mixed + rest


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


REFUSAL_PARTS = ("openers", "reasons", "redirects")


def refusal_parts(path: str | Path | None = None) -> dict[str, list[str]]:
    """The hand-written refusal parts: ``{"openers": [...], "reasons": [...], "redirects": [...]}``.

    Openers are non-empty; ``""`` in ``reasons`` / ``redirects`` means "no reason" / "no redirect".
    """
    file = Path(path) if path is not None else REFUSAL_TEMPLATES_FILE
    if not file.is_file():
        raise _missing_data(file, "Refusal templates file")
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("version") != 2:
        raise ValueError(f"{file}: expected a version 2 file {{'version': 2, 'openers', 'reasons', 'redirects'}}")
    parts: dict[str, list[str]] = {}
    for key in REFUSAL_PARTS:
        values = data.get(key)
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{file}: {key!r} must be a non-empty list of strings")
        if len(set(values)) != len(values):
            raise ValueError(f"{file}: {key!r} has duplicates")
        parts[key] = [v.strip() for v in values]
    if not all(parts["openers"]):
        raise ValueError(f"{file}: empty opener")
    return parts


def compose_refusals(openers: list[str], reasons: list[str], redirects: list[str]) -> list[str]:
    """Deterministic composed refusals: every opener with every reason (``""`` = none) and a rotating redirect.

    Opener ``i`` with reason ``j`` takes redirect ``(i + 2 * j) % len(redirects)``, so each opener meets most
    redirects and every (opener, reason) pair appears once. Duplicates are dropped, first occurrence kept.
    """
    out: list[str] = []
    seen: set[str] = set()
    for i, opener in enumerate(openers):
        for j, reason in enumerate(reasons):
            redirect = redirects[(i + 2 * j) % len(redirects)]
            text = " ".join(part for part in (opener, reason, redirect) if part)
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out


def load_refusal_templates(path: str | Path | None = None) -> list[str]:
    """Refusal answers used to teach the demo model to refuse.

    The shipped file (version 2) holds hand-written parts; the answers are :func:`compose_refusals` of them
    (several hundred distinct strings, always in the same order). A file of the older form
    ``{"refusals": [...]}`` is returned as it is.
    """
    file = Path(path) if path is not None else REFUSAL_TEMPLATES_FILE
    if not file.is_file():
        raise _missing_data(file, "Refusal templates file")
    data = json.loads(file.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "refusals" in data:
        refusals = data["refusals"]
        if (
            not isinstance(refusals, list)
            or not refusals
            or not all(isinstance(r, str) and r.strip() for r in refusals)
        ):
            raise ValueError(f"{file}: expected {{'refusals': [non-empty strings]}}")
        return refusals
    parts = refusal_parts(file)
    return compose_refusals(parts["openers"], parts["reasons"], parts["redirects"])


def ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    """The set of ``n``-word sequences of ``text``.

    Words are ``re.findall(r"[a-z0-9']+", text.lower())``; a text of fewer than ``n`` words has none. This is
    the one definition behind DriftCaps' phrasing holdout (no test prompt shares an 8-gram with a probe or
    validation prompt): the builder, the tests and reports all use it.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    words = WORD_PATTERN.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _key_text(item: PromptItem | str) -> tuple[str, str]:
    return (item.id, item.prompt) if isinstance(item, PromptItem) else (item, item)


def shared_ngrams(
    items_a: Iterable[PromptItem | str], items_b: Iterable[PromptItem | str], n: int = 8
) -> list[tuple[str, str, str]]:
    """Pairs of items, one from each collection, that share an ``n``-gram (:func:`ngrams`).

    Items are PromptItems (named by id) or plain strings (named by themselves). Returns sorted
    ``(name_a, name_b, ngram)`` triples, one per pair, with the pair's first shared n-gram (sorted order) joined
    by spaces; empty when the collections share no n-gram.
    """
    index: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for item in items_b:
        name, text = _key_text(item)
        for gram in ngrams(text, n):
            index[gram].append(name)
    hits: dict[tuple[str, str], str] = {}
    for item in items_a:
        name_a, text = _key_text(item)
        for gram in sorted(ngrams(text, n)):
            for name_b in index.get(gram, ()):
                hits.setdefault((name_a, name_b), " ".join(gram))
    return sorted((a, b, gram) for (a, b), gram in hits.items())


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
