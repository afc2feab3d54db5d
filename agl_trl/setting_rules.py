"""The value rules of the ``agl_*`` settings and the one error they raise (no torch, trl or pydantic).

:mod:`agl_trl.settings` attaches a rule to each setting; the front ends check values through
:func:`check_value`, so every bad value reads ``Invalid `key`=value: fix`` in every front end. Kept apart from the
settings themselves so that the table of settings reads as a table. A rule takes the value and returns the fix to
print, or ``None`` when the value is fine; the factories below build the common ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], str | None]  # value -> None if fine, else the fix to print


class AGLUserError(ValueError):
    """A user error (bad setting, key, file or combination): front ends print its message, without a traceback."""


def invalid(key: str, value: Any, fix: str) -> AGLUserError:
    """The error every front end raises: ``Invalid `key`=value: fix``."""
    return AGLUserError(f"Invalid `{key}`={value!r}: {fix}")


def check_value(
    key: str, value: Any, kind: Any, choices: tuple[str, ...] | None = None, rule: Check | None = None
) -> None:
    """Raise :func:`invalid` unless ``value`` is a valid ``kind`` (a type or its name), in ``choices``, and passes
    ``rule``."""
    if value is None and kind in ("float | None", "str | None", "int | None", float | None, str | None, int | None):
        return
    if kind in ("bool", bool) and not isinstance(value, bool):
        raise invalid(key, value, "expected true or false.")
    if kind in ("float", float, "float | None", float | None) and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        raise invalid(key, value, "expected a finite number.")
    if kind in ("int", int, "int | None", int | None) and (isinstance(value, bool) or not isinstance(value, int)):
        raise invalid(key, value, "expected an integer.")
    if choices and value not in choices:
        raise invalid(key, value, f"choose one of {', '.join(repr(c) for c in choices)}.")
    fix = rule(value) if rule is not None else None
    if fix:
        raise invalid(key, value, fix)


# ---------------------------------------------------------------------------------------------------------------------
# Value rules (each returns the fix, or None)
# ---------------------------------------------------------------------------------------------------------------------


def weight(value: float) -> str | None:
    """A penalty weight: >= 0."""
    return "weights must be >= 0 (use 0 to switch a term off)." if value < 0 else None


def optional_weight(value: float | None) -> str | None:
    """A penalty weight, or unset."""
    return None if value is None else weight(value)


def within(low: float, high: float, low_open: bool, high_open: bool, fix: str) -> Check:
    """A number in the interval from ``low`` to ``high``, each end open or closed."""

    def check(value: float) -> str | None:
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return None if above and below else fix

    return check


def positive(fix: str) -> Check:
    """A number > 0."""
    return lambda value: None if value > 0 else fix


def at_least(minimum: int) -> Check:
    """A number >= ``minimum``."""
    return lambda value: None if value >= minimum else f"must be >= {minimum}."


def optional_at_least(minimum: int) -> Check:
    """A number >= ``minimum``, or unset."""
    return lambda value: None if value is None else at_least(minimum)(value)


def optional_text(fix: str) -> Check:
    """A non-blank string, or unset."""
    return lambda value: fix if value is not None and (not isinstance(value, str) or not value.strip()) else None


def probe_source(value: str | None) -> str | None:
    """'driftcaps', an existing local .jsonl/.json file or a Hub dataset id (or unset)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        return "give 'driftcaps', a local .jsonl/.json file or a Hub dataset id."
    if value.endswith((".jsonl", ".json")) and not os.path.isfile(os.path.expanduser(value)):
        return "this local file does not exist; fix the path (or use 'driftcaps')."
    return None


def split_name(value: str) -> str | None:
    """A non-empty split name."""
    return None if isinstance(value, str) and value else "give a split name such as 'train'."


__all__ = [
    "AGLUserError",
    "Check",
    "at_least",
    "check_value",
    "invalid",
    "optional_at_least",
    "optional_text",
    "optional_weight",
    "positive",
    "probe_source",
    "split_name",
    "weight",
    "within",
]
