"""The tables docs/trainers.md shows are the ones their owners generate (settings.py, kinds.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agl_trl.kinds import kinds_table
from agl_trl.settings import settings_table

PAGE = Path(__file__).resolve().parents[2] / "docs" / "trainers.md"


@pytest.mark.parametrize(("name", "generate"), [("settings-table", settings_table), ("kinds-table", kinds_table)])
def test_doc_table_is_the_generated_one(name, generate):
    match = re.search(rf"<!-- {name}:[^\n]*-->\n(.*?)<!-- /{name} -->", PAGE.read_text(encoding="utf-8"), re.S)
    assert match, f"docs/trainers.md has no <!-- {name}: ... --> block"
    assert match.group(1) == generate(), (
        f"docs/trainers.md's {name} is stale: paste {generate.__module__}.{generate.__name__}()"
    )
