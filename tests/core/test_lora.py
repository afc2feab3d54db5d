"""LoRA introspection across layer kinds: fan_in_fan_out (GPT-2 Conv1D), rsLoRA, several adapters, 8-bit bases."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from agl_trl.fisher import FisherSettings, estimate_fisher
from agl_trl.lora import adapters_disabled, find_lora_modules
from agl_trl.regularizers import AGLRegularizer


def _check_update_is_s_b_a(model) -> None:
    """The function-space update of every module equals s * B @ A (what the regulariser uses)."""
    for module in find_lora_modules(model):
        B, A, s = module.factors()  # noqa: N806
        x = torch.randn(3, module.d_in)
        with torch.no_grad():
            full = module.layer(x)
            with adapters_disabled(model):
                base = module.layer(x)
        torch.testing.assert_close(full - base, x @ (s * B @ A).T, rtol=1e-4, atol=1e-5)


def test_fan_in_fan_out_gpt2_conv1d():
    from transformers import GPT2Config, GPT2LMHeadModel

    from agl_trl.models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, lora_dropout=0.0)
    model = get_peft_model(model, lora)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = 0.1 * torch.randn(param.shape)
    modules = find_lora_modules(model)
    shapes = {m.name.rsplit(".", 1)[-1]: (m.d_out, m.d_in) for m in modules}
    assert shapes == {"c_attn": (96, 32), "c_fc": (128, 32)}  # function space (out x in), not Conv1D storage
    _check_update_is_s_b_a(model)
    records = [{"prompt": "the sea", "response": "is blue and deep"}] * 4
    artifact = estimate_fisher(model, tokenizer, records, FisherSettings(max_rank=8), show_progress=False)
    loss, metrics = AGLRegularizer(artifact)(model, step=0)
    assert metrics["r_align"] > 0 and torch.isfinite(loss)


def test_rslora_scaling_is_read_from_the_layer():
    from agl_trl.models import tiny_llama

    model, _ = tiny_llama()
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_rslora=True))
    modules = find_lora_modules(model)
    assert all(m.scaling == pytest.approx(8 / math.sqrt(4)) for m in modules)
    for m in modules:
        m.lora_B.data = torch.randn(m.lora_B.shape)
    _check_update_is_s_b_a(model)


def test_only_the_active_adapter_is_found():
    from agl_trl.models import tiny_llama

    model, _ = tiny_llama()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.add_adapter("other", LoraConfig(r=2, target_modules=["q_proj"]))
    assert {m.adapter for m in find_lora_modules(model)} == {"default"}
    assert len(find_lora_modules(model)) == 4
    model.set_adapter("other")
    found = find_lora_modules(model)
    assert {m.adapter for m in found} == {"other"} and len(found) == 2 and all(m.rank == 2 for m in found)
    assert len(find_lora_modules(model, adapter="default")) == 4


def test_int8_base_layers_are_found_and_regularised(tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from agl_trl.models import tiny_llama

    model, tokenizer = tiny_llama(hidden_size=64, intermediate_size=128)
    model.save_pretrained(tmp_path)
    try:
        base = AutoModelForCausalLM.from_pretrained(
            tmp_path, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": "cpu"}
        )
    except Exception as err:  # noqa: BLE001 - an environment without int8 CPU kernels is reported, not hidden
        pytest.fail(f"bitsandbytes int8 could not load on this machine: {err}")
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in base.modules())
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    modules = find_lora_modules(model)
    assert len(modules) == 14
    assert {type(m.layer).__name__ for m in modules} == {"Linear8bitLt"}
    for m in modules:
        m.lora_B.data = 0.05 * torch.randn(m.lora_B.shape)
    records = [{"prompt": "the sea", "response": "is blue and deep"}] * 4
    artifact = estimate_fisher(model, tokenizer, records, FisherSettings(max_rank=8), show_progress=False)
    loss, metrics = AGLRegularizer(artifact)(model, step=0)
    loss.backward()
    assert metrics["r_align"] > 0 and all(float(m.lora_B.grad.abs().sum()) > 0 for m in modules)


@pytest.mark.parametrize("modules_to_save", [None, ["lm_head"]])
def test_adapters_disabled_matches_peft_disable_adapter(modules_to_save):
    """The one switch gives PEFT's ``disable_adapter()`` forward, keeps ``requires_grad`` and restores the state."""
    from agl_trl.models import tiny_llama

    model, _ = tiny_llama()
    config = LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, modules_to_save=modules_to_save
    )
    model = get_peft_model(model, config)
    if modules_to_save:  # make the trained copy differ from the original module
        wrapper = model.base_model.model.lm_head
        wrapper.modules_to_save["default"].weight.data += 0.5
    model.eval()
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            expected = model(input_ids=ids).logits
        with adapters_disabled(model) as base:
            assert base is model
            got = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(got, expected) and not torch.equal(got, adapted)
    assert torch.equal(after, adapted)
    for name, param in model.named_parameters():
        if name in grads and "lora_" in name:
            assert param.requires_grad == grads[name]


def test_adapters_disabled_without_adapter():
    from agl_trl.models import tiny_llama

    model, _ = tiny_llama()
    with adapters_disabled(model) as base:  # a plain model is its own base model
        assert base is model
    with (
        pytest.raises(ValueError, match="reference=None needs a PEFT model"),
        adapters_disabled(model, require_adapter=True),
    ):
        pass
