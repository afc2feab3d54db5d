"""The aligned model's probe answers: generated once per prompt, stored atomically, read back only where they fit;
generation halves a batch that runs out of memory; AGL's INFO lines reach the user."""

from __future__ import annotations

import io
import logging

import pytest

import agl_trl.generation
from agl_trl.fisher.answers import ANSWERS_FILE, ProbeAnswers, prompt_key
from agl_trl.generation import generate
from agl_trl.logs import LIBRARY_LOGGER, show_info_lines
from tests.helpers.lora_models import make_lora_model

PROMPTS = ["question one about the sea", "question two about the sky", [{"role": "user", "content": "hello"}]]


def test_answers_are_generated_once_per_prompt_and_fill_only_missing_responses():
    model, tokenizer = make_lora_model()
    records = [{"prompt": PROMPTS[0]}, {"prompt": PROMPTS[0], "response": None}, {"prompt": PROMPTS[2]}]
    records.append({"prompt": PROMPTS[1], "response": "its own answer"})
    answers = ProbeAnswers(max_new_tokens=3)
    assert [r["prompt"] for r in answers.missing(records)] == [PROMPTS[0], PROMPTS[2]]
    assert answers.generate(model, tokenizer, records, show_progress=False) == 2
    assert answers.generate(model, tokenizer, records, show_progress=False) == 0 and answers.generated == 2
    filled = answers.fill(records)
    assert filled[0]["response"] == filled[1]["response"] == answers.answers[prompt_key(PROMPTS[0])]
    assert filled[3]["response"] == "its own answer" and "response" not in records[0]  # copies


def test_stored_answers_are_read_back_only_for_the_same_model_and_length(tmp_path, caplog):
    model, tokenizer = make_lora_model()
    answers = ProbeAnswers(max_new_tokens=3)
    answers.generate(model, tokenizer, [{"prompt": p} for p in PROMPTS], show_progress=False)
    answers.save(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    assert ProbeAnswers.load(tmp_path, model, 3).answers == answers.answers
    assert ProbeAnswers.load(tmp_path, model, 4).answers == {}  # another agl_fisher_max_new_tokens
    other, _ = make_lora_model(seed=5)
    assert ProbeAnswers.load(tmp_path, other, 3).answers == {}  # another model
    assert ProbeAnswers.load(tmp_path / "none", model, 3).answers == {}
    (tmp_path / ANSWERS_FILE).write_text('{"max_new_tokens": 3, "model_fingerprint"')  # cut short
    with caplog.at_level(logging.WARNING, logger="agl_trl"):
        assert ProbeAnswers.load(tmp_path, model, 3).answers == {}
    assert "ignoring the stored probe answers" in caplog.text


def test_a_batch_that_runs_out_of_memory_is_halved(monkeypatch, caplog):
    model, tokenizer = make_lora_model()
    prompts = [f"prompt number {i}" for i in range(7)]
    expected = [g.text for g in generate(model, tokenizer, prompts, max_new_tokens=3, batch_size=2, progress=False)]
    original, sizes = agl_trl.generation._generate_batch, []

    def small_memory(model, tokenizer, encoded, *args):
        sizes.append(len(encoded))
        if len(encoded) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(model, tokenizer, encoded, *args)

    monkeypatch.setattr(agl_trl.generation, "_generate_batch", small_memory)
    with caplog.at_level(logging.WARNING, logger="agl_trl"):
        got = generate(model, tokenizer, prompts, max_new_tokens=3, batch_size=8, progress=False)
    assert [g.text for g in got] == expected
    assert sizes == [7, 4, 2, 2, 2, 1], sizes  # halved until it fits, then kept
    assert "retrying with batches of 2 prompts" in caplog.text


def test_other_errors_in_generation_are_not_retried(monkeypatch):
    model, tokenizer = make_lora_model()

    def broken(*args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(agl_trl.generation, "_generate_batch", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        generate(model, tokenizer, PROMPTS[:2], max_new_tokens=3, progress=False)


@pytest.fixture
def clean_logging():
    """The agl_trl logger and the root handlers as they were, after the test."""
    library, root = logging.getLogger(LIBRARY_LOGGER), logging.getLogger()
    saved = (library.level, list(library.handlers), list(root.handlers))
    yield library, root
    library.setLevel(saved[0])
    library.handlers[:] = saved[1]
    root.handlers[:] = saved[2]


def test_info_lines_are_shown_where_nothing_would_show_them(clean_logging):
    library, root = clean_logging
    library.setLevel(logging.NOTSET)
    library.handlers[:] = []
    root.handlers[:] = [logging.StreamHandler(io.StringIO())]  # the application prints what reaches it
    show_info_lines()
    assert library.level == logging.INFO and library.handlers == []
    root.handlers[:] = []  # no logging configured (a user's script): AGL's own handler, added once
    show_info_lines()
    show_info_lines()
    assert len(library.handlers) == 1


def test_a_front_end_console_gets_the_info_lines_and_keeps_its_warnings(clean_logging):
    library, _ = clean_logging
    library.setLevel(logging.WARNING)  # the user's choice is kept
    library.handlers[:] = []
    console = io.StringIO()
    show_info_lines(console, logging.Formatter("[console] %(message)s"))
    assert library.level == logging.WARNING
    library.setLevel(logging.INFO)
    logging.getLogger("agl_trl.fisher.resolve").info("AGL start-up: plan")
    logging.getLogger("agl_trl.fisher.resolve").warning("AGL: a warning")
    assert console.getvalue() == "[console] AGL start-up: plan\n"  # the warning goes the application's way
