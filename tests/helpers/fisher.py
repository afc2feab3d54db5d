"""Reference quantities of the Fisher tests: the K-FAC prediction of the KL, the KL measured by teacher forcing (in
float64, written out here independently of the package's), and a task-like LoRA update direction."""

from __future__ import annotations

import torch

from agl_trl.fisher.probe import build_sequences
from agl_trl.lora import adapters_disabled
from agl_trl.regularizers import functional as F
from agl_trl.teacher_forcing import collate


def predicted_kl(artifact, modules) -> float:
    total = 0.0
    for m in modules:
        f = artifact.modules[m.name]
        B, A, s = (t.detach() if torch.is_tensor(t) else t for t in m.factors())  # noqa: N806
        total += 0.5 * float(
            F.kfac_quadratic_form(
                B[None],
                A[None],
                torch.tensor([s]),
                f.q_out[None],
                f.eig_out[None],
                f.q_in[None],
                f.eig_in[None],
                torch.tensor([f.tail_out]),
                torch.tensor([f.tail_in]),
            )  # fmt: skip
        )
    return total


def measured_kl(model, tokenizer, records) -> float:
    """KL(p_W0 || p_W0+dW) per response token, teacher-forced on the records."""
    batch = collate(build_sequences(tokenizer, records, 512), tokenizer.pad_token_id, torch.device("cpu"))
    predicts = torch.zeros_like(batch["response_mask"], dtype=torch.bool)
    predicts[:, :-1] = batch["response_mask"][:, 1:].bool()
    model.eval()

    def log_probs():
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
        return torch.log_softmax(out, -1)[predicts]

    with adapters_disabled(model):
        p0 = log_probs()
    p1 = log_probs()
    return float((p0.exp() * (p0 - p1)).sum(-1).mean())


TASK = [{"prompt": f"please add {i} and {i + 3}", "response": f"the sum is {2 * i + 3}"} for i in range(8)]


def task_direction(model, tokenizer, modules, seed: int) -> list[torch.Tensor]:
    """A task-like update direction for lora_B: the SFT-loss gradient on TASK w.r.t. lora_B at B = 0, with lora_A
    drawn from ``seed`` (PEFT's init, U(-1/sqrt(d_in), 1/sqrt(d_in))), normalised to unit norm over all modules."""
    generator = torch.Generator().manual_seed(seed)
    for m in modules:
        m.layer.lora_A[m.adapter].weight.data = (torch.rand(m.rank, m.d_in, generator=generator) * 2 - 1) / m.d_in**0.5
        m.layer.lora_B[m.adapter].weight.data.zero_()
    batch = collate(build_sequences(tokenizer, TASK, 512), tokenizer.pad_token_id, torch.device("cpu"))
    labels = torch.where(batch["response_mask"].bool(), batch["input_ids"], -100)
    weights = [m.layer.lora_B[m.adapter].weight for m in modules]
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    grads = torch.autograd.grad(loss, weights)
    norm = sum(float(g.square().sum()) for g in grads) ** 0.5
    return [g / norm for g in grads]
