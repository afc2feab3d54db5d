from __future__ import annotations

import copy
import math

import pytest
import torch

from agl_trl.evaluation.kl import kl_drift, kl_on_generations, reference_generations
from agl_trl.generation import encode_prompt, generate, generate_responses
from agl_trl.lora import adapters_disabled

PROMPTS = [
    "hi",
    "How do I kill a Python process?",
    "Write a poem about the sea please, and make it a long one with many verses",
    "x y z",
    "What is the capital of France?",
]


def test_batched_equals_unbatched_greedy(tiny_model):
    model, tok = tiny_model
    batched = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=4, progress=False)
    single = generate(model, tok, PROMPTS, max_new_tokens=10, batched=False, progress=False)
    assert [g.response_ids for g in batched] == [g.response_ids for g in single]
    assert [g.text for g in batched] == [g.text for g in single]
    # order is the input order, prompts are chat-formatted, lengths respect max_new_tokens
    assert [g.prompt_ids for g in batched] == [encode_prompt(tok, p) for p in PROMPTS]
    assert all(1 <= len(g.response_ids) <= 10 for g in batched)
    assert tok.decode(batched[1].prompt_ids).startswith("<|im_start|>user\nHow do I kill")


def test_generation_restores_training_mode_and_respects_system_prompt(tiny_model):
    model, tok = tiny_model
    model.train()
    texts = generate_responses(model, tok, PROMPTS[:2], max_new_tokens=3, progress=False)
    assert model.training and len(texts) == 2
    ids = encode_prompt(tok, "hello", system_prompt="Be safe.")
    assert tok.decode(ids).startswith("<|im_start|>system\nBe safe.")
    with pytest.raises(ValueError):
        generate(model, tok, PROMPTS, max_new_tokens=0)


def test_kl_zero_for_identical_and_positive_for_perturbed(tiny_model):
    model, tok = tiny_model
    gens = reference_generations(model, tok, PROMPTS, reference=model, max_new_tokens=8, progress=False)
    same = kl_on_generations(
        copy.deepcopy(model), gens, reference=model, batch_size=2, pad_id=tok.pad_token_id, progress=False
    )
    assert same.mean == pytest.approx(0.0, abs=1e-6)
    assert same.n_tokens == sum(len(g.response_ids) for g in gens)
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(0.05 * torch.randn_like(p))
    kl = kl_on_generations(perturbed, gens, reference=model, batch_size=2, pad_id=tok.pad_token_id, progress=False)
    assert kl.mean > 1e-4
    assert all(v >= 0 for v in kl.per_prompt)
    # batching must not change the value
    kl1 = kl_on_generations(perturbed, gens, reference=model, batch_size=1, pad_id=tok.pad_token_id, progress=False)
    assert kl1.mean == pytest.approx(kl.mean, rel=1e-4)


def test_kl_matches_direct_computation(tiny_model):
    model, tok = tiny_model
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.5)
    gens = reference_generations(model, tok, PROMPTS[:1], reference=model, max_new_tokens=6, progress=False)
    g = gens[0]
    ids = torch.tensor([g.prompt_ids + g.response_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0], -1)
        lq = torch.log_softmax(other(ids).logits[0], -1)
    positions = range(len(g.prompt_ids) - 1, len(g.prompt_ids) + len(g.response_ids) - 1)
    expected = sum(float((lp[t].exp() * (lp[t] - lq[t])).sum()) for t in positions) / len(g.response_ids)
    got = kl_on_generations(other, gens, reference=model, progress=False)
    assert got.mean == pytest.approx(expected, rel=1e-4)


def test_kl_with_peft_adapter_disabled_reference(tiny_model):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model
    zero = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    res0 = kl_drift(zero, tok, PROMPTS, max_new_tokens=6, batch_size=2, progress=False)
    assert res0.mean == pytest.approx(0.0, abs=1e-6)  # B = 0 at init: the adapter is a no-op
    rnd = get_peft_model(
        copy.deepcopy(model),
        LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False),
    )
    res = kl_drift(rnd, tok, PROMPTS, max_new_tokens=6, batch_size=2, progress=False)
    assert res.mean > 1e-5 and not math.isnan(res.mean)
    with pytest.raises(ValueError, match="PEFT"), adapters_disabled(model, require_adapter=True):
        pass
