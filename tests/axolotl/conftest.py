"""Fixtures of the Axolotl plugin tests (helpers in ``helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.axolotl import axolotl_available, write_workspace


@pytest.fixture(scope="session", autouse=True)
def _tiny_recipe_model(recipe_model: Path) -> Path:
    """The tiny recipes name ``recipes/models/tiny-llama``; AGL's validation checks that it exists."""
    return recipe_model


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not axolotl_available():
        pytest.skip("needs Axolotl: run in .venv-axolotl (`make test-axolotl`)")
    return write_workspace(tmp_path_factory.mktemp("axolotl-ws"))
