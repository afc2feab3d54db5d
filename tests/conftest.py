"""Shared pytest fixtures. Tests never touch the model hub and use tiny random models (2 shared CPU cores)."""

from __future__ import annotations

import os
from pathlib import Path

# set before transformers / datasets are imported anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402

from tests.helpers.data import FIXTURE_PROMPTS, REPO, write_jsonl  # noqa: E402
from tests.helpers.zero3 import fake_deepspeed  # noqa: E402, F401 - a fixture (simulated ZeRO-3) for every test


@pytest.fixture
def driftcaps_file(tmp_path: Path) -> Path:
    """A small DriftCaps-format jsonl (8 prompts: 2 splits, 3 categories, both labels)."""
    return write_jsonl(tmp_path / "driftcaps_fixture.jsonl", FIXTURE_PROMPTS)


@pytest.fixture
def tiny_model_factory():
    """Factory for fresh random tiny Llama models: ``tiny_model_factory(seed=0, **kwargs) -> (model, tokenizer)``."""
    from agl_trl.models import tiny_llama

    def make(seed: int = 0, **kwargs):
        return tiny_llama(seed=seed, **kwargs)

    return make


@pytest.fixture
def tiny_model(tiny_model_factory):
    """A fresh random tiny Llama (hidden 32, 2 layers, vocab 512) and its chat tokenizer (left padding)."""
    return tiny_model_factory(seed=0)


@pytest.fixture(scope="session")
def recipe_model() -> Path:
    """``recipes/models/tiny-llama``, the model of the tiny CPU recipes (what ``make tiny-model`` writes), written
    here when missing so that the tests also run without ``make``."""
    from agl_trl.models import save_tiny_llama
    from agl_trl.preflight import TINY_RECIPE_MODEL

    return save_tiny_llama(REPO / TINY_RECIPE_MODEL)
