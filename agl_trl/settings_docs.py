"""docs/settings.md, the reference of every ``agl_*`` setting, generated from :mod:`agl_trl.settings`.

The page's hand-written introduction stays; only the block between ``<!-- settings-reference: ... -->`` and
``<!-- /settings-reference -->`` is generated: one section per settings dataclass (:data:`SETTING_GROUPS`), one row
per key with its type, default, unit, choices and help. tests/docs/test_tables.py fails when the page drifts from
the settings. Regenerate from the repository root with ``python -m agl_trl.settings_docs --write``.
"""

from __future__ import annotations

import argparse
import re
import typing
from dataclasses import fields
from pathlib import Path

from agl_trl.settings import (
    SETTING_GROUPS,
    SETTINGS_BY_KEY,
    AGLSettings,
    ArtifactSettings,
    FisherSettings,
    SettingField,
    setting_fields,
)

PAGE = Path("docs/settings.md")
MARKER = "settings-reference"
BLOCK = re.compile(rf"(<!-- {MARKER}:[^\n]*-->\n)(.*?)(<!-- /{MARKER} -->)", re.S)
TITLES = {
    ArtifactSettings: "Training switch and artifact source",
    AGLSettings: "Regulariser",
    FisherSettings: "Fisher estimation",
}


def type_name(spec: SettingField) -> str:
    """``float``, ``int``, ``str`` or ``bool``; ``(optional)`` where ``None`` (YAML ``null``) is allowed."""
    kinds = [k for k in typing.get_args(spec.type) if k is not type(None)] or [spec.type]
    return kinds[0].__name__ + (" (optional)" if type(None) in typing.get_args(spec.type) else "")


def _section(title: str, intro: str, keys: list[str]) -> list[str]:
    rows = [
        f"## {title}",
        "",
        intro,
        "",
        "| key | type | default | unit | choices | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for spec in (SETTINGS_BY_KEY[key] for key in keys):
        choices = ", ".join(f"`{c}`" for c in spec.choices or ())
        cells = [f"`{spec.key}`", type_name(spec), spec.markdown_default, spec.unit or "", choices, spec.markdown_help]
        rows.append(f"| {' | '.join(cells)} |")
    return [*rows, ""]


def settings_reference() -> str:
    """The generated block of docs/settings.md: a table per settings dataclass, ``agl_enabled`` opening the first."""
    grouped = {cls.KEY_PREFIX + f.name for cls in SETTING_GROUPS for f in fields(cls)}
    switches = [spec.key for spec in setting_fields() if spec.key not in grouped]  # agl_enabled: no dataclass
    lines: list[str] = []
    for i, cls in enumerate(SETTING_GROUPS):
        keys = [*(switches if i == 0 else []), *(cls.KEY_PREFIX + f.name for f in fields(cls))]
        intro = f"Keys `{cls.KEY_PREFIX}<name>`; in Python, `agl_trl.settings.{cls.__name__}(<name>=...)`."
        if i == 0:
            intro += "\n`agl_enabled` (no dataclass) is `AGLTrainingSettings.enabled`."
        lines += _section(TITLES[cls], intro, keys)
    return "\n".join(lines)


def updated_page(text: str) -> str:
    """``text`` (docs/settings.md) with its generated block replaced by :func:`settings_reference`."""
    if not BLOCK.search(text):
        raise ValueError(f"no <!-- {MARKER}: ... --> ... <!-- /{MARKER} --> block in the page")
    return BLOCK.sub(lambda m: m.group(1) + settings_reference() + m.group(3), text, count=1)


def main(argv: list[str] | None = None) -> None:
    """Print the generated block, or with ``--write`` rewrite it in the page (docs/settings.md by default)."""
    parser = argparse.ArgumentParser(prog="python -m agl_trl.settings_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the generated block of the page in place")
    parser.add_argument("--page", type=Path, default=PAGE, help=f"the page (default: {PAGE})")
    args = parser.parse_args(argv)
    if not args.write:
        print(settings_reference(), end="")
        return
    args.page.write_text(updated_page(args.page.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()


def settings_table() -> str:
    """The Markdown table of every ``agl_*`` key (default, meaning) that docs/trainers.md shows (a test keeps the
    page equal to it; regenerate with ``python -c "from agl_trl.settings_docs import settings_table as t; print(t())"``)."""
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for spec in setting_fields():
        rows.append(f"| `{spec.key}` | {spec.markdown_default} | {spec.markdown_help} |")
    return "\n".join(rows) + "\n"


__all__ = ["PAGE", "main", "settings_reference", "settings_table", "type_name", "updated_page"]
