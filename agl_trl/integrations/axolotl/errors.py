"""AGL's user errors in Axolotl's CLI: one line each and exit status 2, instead of Axolotl's traceback.

Axolotl validates the YAML with the plugin's args merged into its schema; a rejected config is a pydantic
``ValidationError`` that ``axolotl train`` / ``axolotl preprocess`` print with a traceback. Just before re-raising,
Axolotl calls every configured plugin's ``on_config_validation_error(cfg)`` inside its ``except`` block;
``AGLPlugin`` answers with :func:`report_validation_error`: when every error of the exception being handled is AGL's
(an :class:`~agl_trl.setting_rules.AGLUserError` raised by a validator, or a type error of an ``agl_*`` key), it prints
``agl-trl: error: <message>`` per error and exits with status 2. Any other error (Axolotl's own keys) is left to
Axolotl. ``AGL_TRL_TRACEBACK=1`` keeps the traceback. No torch, trl or axolotl import.

Under ``accelerate launch`` (``axolotl train``'s default launcher) the line comes from the training process; the
launcher then reports the process's exit status with its own ``CalledProcessError`` traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from agl_trl.setting_rules import AGLUserError

PREFIX = "agl-trl: error: "


def agl_messages(error: BaseException | None) -> list[str] | None:
    """The one-line messages of a pydantic ``ValidationError`` whose every error is AGL's, else ``None``."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return None
    try:
        items = errors()
    except Exception:  # noqa: BLE001 - not a pydantic error after all
        return None
    lines: list[str] = []
    for item in items:
        cause = (item.get("ctx") or {}).get("error")
        location = item.get("loc") or ()
        if isinstance(cause, AGLUserError):
            lines.append(str(cause))
        elif location and str(location[0]).startswith("agl_"):  # pydantic's own type check of an agl_* key
            lines.append(f"Invalid `{location[0]}`={item.get('input')!r}: {item.get('msg')}.")
        else:
            return None
    return [" ".join(line.split()) for line in lines] or None


def report_validation_error(cfg: Any = None) -> None:
    """Print AGL's messages for the validation error being handled and exit with status 2 (no traceback); do
    nothing when it is not (only) AGL's, when no exception is being handled, or with ``AGL_TRL_TRACEBACK`` set."""
    lines = agl_messages(sys.exc_info()[1])
    if not lines or os.environ.get("AGL_TRL_TRACEBACK"):
        return
    for line in lines:
        print(PREFIX + line, file=sys.stderr, flush=True)
    raise SystemExit(2)


__all__ = ["PREFIX", "agl_messages", "report_validation_error"]
