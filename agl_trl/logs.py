"""AGL's own lines where the user sees them: the start-up plan, what a resumed run restored, the end-of-run summary.

They are INFO records of the library's own ``agl_trl`` logger (:func:`say`), which an application's logging usually
drops: Python's default shows warnings only, and Axolotl filters other libraries' INFO records out at each logger
(its logger class) and at its console (they reach its debug file only).
:func:`show_info_lines` (called when AGL is attached to a trainer) makes them visible without doubling anything: the
``agl_trl`` logger is set to INFO unless the user set its level; where no handler exists at all it gets one on
stderr; a front end whose console drops them (Axolotl) passes its own stream and format.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

LIBRARY_LOGGER = "agl_trl"


class _BelowWarning(logging.Filter):
    """Only records below WARNING: warnings and errors keep the route the application gave them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _AGLHandler(logging.StreamHandler):
    """The handler :func:`show_info_lines` adds (recognised, so that it is added once)."""


class _LevelFormatter(logging.Formatter):
    """AGL's lines as they are; warnings and errors named as such (``WARNING AGL: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname} {message}"


def show_info_lines(stream: IO[str] | None = None, formatter: logging.Formatter | None = None) -> None:
    """Make the ``agl_trl`` logger's INFO lines visible (idempotent; see the module docstring).

    Args:
        stream: the console of a front end that drops other libraries' INFO records (Axolotl): a handler on it
            prints AGL's INFO lines (its warnings still go through the front end's own handlers), and the front
            end's filters on the ``agl_trl`` logger itself are removed.
        formatter: that front end's console format.
    """
    library = logging.getLogger(LIBRARY_LOGGER)
    if stream is not None:
        library.filters.clear()  # Axolotl's logger class gives every other library's logger an INFO filter
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO)
    if any(isinstance(handler, _AGLHandler) for handler in library.handlers):
        return
    if stream is not None:
        handler = _AGLHandler(stream)
        handler.addFilter(_BelowWarning())
    elif not logging.getLogger().handlers and not library.handlers:  # nothing would print them (nor warnings)
        handler = _AGLHandler(sys.stderr)
    else:
        return  # the application's handlers print what reaches them
    handler.setFormatter(formatter or _LevelFormatter("%(message)s"))
    library.addHandler(handler)


def say(message: str, *args: object) -> None:
    """Log one of AGL's lines for the user (INFO on the ``agl_trl`` logger: see :func:`show_info_lines`), on a line
    of its own even while a progress bar is drawn."""
    from tqdm.auto import tqdm

    with tqdm.external_write_mode():
        logging.getLogger(LIBRARY_LOGGER).info(message, *args)


__all__ = ["LIBRARY_LOGGER", "say", "show_info_lines"]
