"""Fixtures for the trainer tests (helpers live in tests/helpers/trainers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.trainers import ANSWERS, PROMPTS, tiny_model_and_tokenizer, write_jsonl


@pytest.fixture
def probe_file(tmp_path: Path) -> Path:
    records = [{"prompt": PROMPTS[i], "response": ANSWERS[i % len(ANSWERS)]} for i in range(6)]
    return write_jsonl(tmp_path / "probe.jsonl", records)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model + tokenizer saved with save_pretrained (for the CLI / script tests)."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = tiny_model_and_tokenizer()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
