"""The generated parts of the docs are the ones their owners generate: docs/trainers.md's tables (settings.py,
kinds.py) and docs/settings.md's reference (settings_docs.py, from settings.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agl_trl.kinds import kinds_table
from agl_trl.settings import SETTING_KEYS
from agl_trl.settings_docs import main, settings_reference, settings_table, updated_page

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGE = DOCS / "trainers.md"
REFERENCE = DOCS / "settings.md"


@pytest.mark.parametrize(("name", "generate"), [("settings-table", settings_table), ("kinds-table", kinds_table)])
def test_doc_table_is_the_generated_one(name, generate):
    match = re.search(rf"<!-- {name}:[^\n]*-->\n(.*?)<!-- /{name} -->", PAGE.read_text(encoding="utf-8"), re.S)
    assert match, f"docs/trainers.md has no <!-- {name}: ... --> block"
    assert match.group(1) == generate(), (
        f"docs/trainers.md's {name} is stale: paste {generate.__module__}.{generate.__name__}()"
    )


def test_settings_reference_is_the_generated_one():
    page = REFERENCE.read_text(encoding="utf-8")
    assert updated_page(page) == page, "docs/settings.md is stale: run `python -m agl_trl.settings_docs --write`"


def test_settings_reference_lists_every_key_once():
    listed = re.findall(r"^\| `(agl_\w+)` \|", settings_reference(), re.M)
    assert sorted(listed) == sorted(SETTING_KEYS)


def test_writing_the_reference_keeps_the_hand_written_text(tmp_path):
    page = tmp_path / "settings.md"
    page.write_text("intro\n<!-- settings-reference: generated -->\nstale\n<!-- /settings-reference -->\nend\n")
    main(["--write", "--page", str(page)])
    expected = (
        f"intro\n<!-- settings-reference: generated -->\n{settings_reference()}<!-- /settings-reference -->\nend\n"
    )
    assert page.read_text() == expected
    with pytest.raises(ValueError, match="no <!-- settings-reference"):
        updated_page("a page without the block\n")


def test_trainers_page_links_the_reference():
    assert "(settings.md)" in PAGE.read_text(encoding="utf-8")
