"""docs/index.md is the map of the docs: every page in docs/ is reachable from it, and every link in it resolves
(the file exists; an anchor names a heading of that file)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(page.read_text(encoding="utf-8")) if "://" not in target]


def test_every_docs_page_is_linked_from_the_index() -> None:
    linked = {(DOCS / target.split("#")[0]).resolve() for target in links(DOCS / "index.md")}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.name != "index.md" and p.resolve() not in linked]
    assert not missing, f"docs/index.md does not link {missing}: add each under the section a user would look in"


def test_every_link_in_the_index_resolves() -> None:
    broken = []
    for target in links(DOCS / "index.md"):
        path, _, anchor = target.partition("#")
        file = (DOCS / path).resolve()
        if not file.is_file():
            broken.append(target)
        elif anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.M)
            if anchor not in {slug(h) for h in headings}:
                broken.append(target)
    assert not broken, f"docs/index.md links to missing files or headings: {broken}"


def test_slug_follows_githubs_rule() -> None:
    assert slug("What happens during training") == "what-happens-during-training"
    assert slug("The `agl_*` settings") == "the-agl_-settings"
