"""The experiment fine-tune names the rows TRL would drop: a prompt too long for ``max_length`` leaves no answer
token, which TRL drops silently (and fails with ``num_samples=0`` when it drops them all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agl_trl.experiments.training import check_rows_kept


def test_check_rows_kept_is_silent_when_every_row_is_kept_and_names_the_fix_otherwise() -> None:
    check_rows_kept(3, 3, 256)
    with pytest.warns(UserWarning, match=r"1 of 3 task rows dropped.*max_length=256.*training_overrides"):
        check_rows_kept(3, 2, 256)
    with pytest.raises(ValueError, match=r"none of the 3 task rows.*max_length=256"):
        check_rows_kept(3, 0, 256)


def test_train_lora_reports_rows_whose_answer_the_max_length_cuts_off(tmp_path: Path) -> None:
    from agl_trl.experiments.config import LoraSettings
    from agl_trl.experiments.training import train_lora
    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama()
    long = {"prompt": "word " * 300, "answer": "ok"}  # past 256 tokens before the answer starts
    short = {"prompt": "hi", "answer": "hello"}
    train = lambda rows, out: train_lora(  # noqa: E731
        model, tokenizer, rows, tmp_path / out, lora=LoraSettings(r=2, alpha=4), seed=0, steps=1, learning_rate=1e-3,
        batch_size=1, progress=False, precision="fp32",
    )  # fmt: skip
    with pytest.raises(ValueError, match="none of the 2 task rows"):
        train([long, long], "all")
    with pytest.warns(UserWarning, match="1 of 2 task rows dropped"):
        train([long, short], "some")
