"""QLoRA on CPU: Fisher estimation and the regulariser on a bitsandbytes 4-bit base with bf16 adapters."""

from __future__ import annotations

import pytest
import torch

from agl_trl.fisher import FisherSettings, estimate_fisher
from agl_trl.lora import find_lora_modules
from agl_trl.regularizers import AGLRegularizer
from agl_trl.settings import AGLSettings

bnb = pytest.importorskip("bitsandbytes")


def _make_qlora_model(directory):
    """A tiny Llama saved to disk, reloaded in NF4 4-bit, LoRA on all linear layers, adapters cast to bf16 (as TRL)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from agl_trl.models import tiny_llama

    # hidden 64: bitsandbytes' CPU kernels need dimensions that are multiples of its 64-wide blocks
    model, tokenizer = tiny_llama(hidden_size=64, intermediate_size=128, initializer_range=0.2)
    model.save_pretrained(directory)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    base = AutoModelForCausalLM.from_pretrained(directory, quantization_config=quantization, device_map={"": "cpu"})
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            if "lora_B" in name:
                param.data = 0.05 * torch.randn(param.shape, generator=generator)
            param.data = param.data.to(torch.bfloat16)
    return peft_model, tokenizer


@pytest.fixture
def qlora_model(tmp_path):
    return _make_qlora_model(tmp_path)


def test_fisher_on_4bit_base_with_generated_probe_responses(qlora_model):
    """Probe records without responses make the estimator generate first (a no-grad eval pass). On AVX512-BF16 CPUs
    bitsandbytes would then repack the 4-bit weights for inference and backward would yield no gradient."""
    model, tokenizer = qlora_model
    records = [{"prompt": f"tell me about the sea, part {i}"} for i in range(4)]
    artifact = estimate_fisher(model, tokenizer, records, FisherSettings(max_rank=8, max_new_tokens=6), False)
    assert len(artifact.modules) == len(find_lora_modules(model)) == 14
    for module in artifact.modules.values():
        assert module.trace_out > 0 and module.trace_in > 0
    artifact.verify(model)
    loss, metrics = AGLRegularizer(artifact, AGLSettings(lambda_collision=0.1))(model, step=0)
    loss.backward()
    assert loss.dtype == torch.float32
    assert metrics["r_align"] > 0 and metrics["e_geo"] > 0 and metrics["e_riem"] > 0
    for module in find_lora_modules(model):
        assert module.lora_B.grad is not None and module.lora_B.grad.dtype == torch.bfloat16


def test_training_gradients_are_unchanged_by_an_evaluation_pass(qlora_model):
    """An evaluation (no-grad, eval mode) between training steps must not change the 4-bit layers' backward."""
    from agl_trl.generation import generate_responses

    model, tokenizer = qlora_model
    ids = torch.tensor([tokenizer("the sea is blue and deep")["input_ids"]])

    def lora_grads() -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        return [m.lora_A.grad.float().clone() for m in find_lora_modules(model)]

    before = lora_grads()
    generate_responses(model, tokenizer, ["hello there"], max_new_tokens=4, progress=False)
    after = lora_grads()
    for reference, got in zip(before, after, strict=True):
        torch.testing.assert_close(got, reference)
