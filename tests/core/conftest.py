"""Tiny LoRA models and probe records for the core tests."""

from __future__ import annotations

import pytest

from tests.helpers.lora_models import PROBE, make_lora_model


@pytest.fixture
def probe_records():
    return [dict(r) for r in PROBE]


@pytest.fixture
def lora_model():
    return make_lora_model()
