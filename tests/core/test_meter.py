"""The drift meter's pieces outside a trainer: the anchor interval's one resolution, the meter's reading against
the evaluation's KL drift on the same sequences, and the regulariser reading the meter's weight."""

from __future__ import annotations

import pytest
import torch

from agl_trl.regularizers.meter import (
    OFF_UNDER_ZERO3,
    OFF_WITHOUT_PROBE,
    OFF_WITHOUT_RECORDS,
    DriftMeter,
    resolve_anchor_every,
)
from agl_trl.settings import DEFAULT_KL_ANCHOR_EVERY, AGLSettings
from tests.helpers.lora_models import PROBE, make_lora_model

# requested (None: unset), ZeRO-3, probe data, the anchor's own records (None: not known yet) -> (interval, why off)
ANCHOR_TABLE = [
    (None, False, True, None, (DEFAULT_KL_ANCHOR_EVERY, None)),
    (None, False, True, 3, (DEFAULT_KL_ANCHOR_EVERY, None)),
    (None, False, True, 0, (0, OFF_WITHOUT_RECORDS)),  # unset: off with a warning
    (None, True, True, None, (0, OFF_UNDER_ZERO3)),  # unset: off with a warning
    (None, True, False, None, (0, OFF_UNDER_ZERO3)),  # ZeRO-3 is said first, with or without probe data
    (None, False, False, None, (0, OFF_WITHOUT_PROBE)),  # unset: off, silently
    (0, True, False, 0, (0, None)),  # off is off anywhere
    (0, False, True, None, (0, None)),
    (5, False, True, 2, (5, None)),
    (5, False, True, None, (5, None)),
    (5, True, True, None, (0, OFF_UNDER_ZERO3)),  # set: refused at train start
    (5, True, False, None, (0, OFF_UNDER_ZERO3)),
    (5, False, False, None, (0, OFF_WITHOUT_PROBE)),  # set: refused (no probe data)
    (5, False, True, 0, (0, OFF_WITHOUT_RECORDS)),  # set: refused (no records of its own)
]


@pytest.mark.parametrize(("requested", "zero3", "has_probe", "own", "expected"), ANCHOR_TABLE)
def test_anchor_interval_is_resolved_by_one_table(requested, zero3, has_probe, own, expected) -> None:
    assert resolve_anchor_every(requested, zero3=zero3, has_probe=has_probe, own_records=own) == expected


def test_a_set_anchor_interval_is_refused_under_zero3_and_the_default_gives_way() -> None:
    from agl_trl.settings import AGLUserError, ArtifactSettings

    probe = ArtifactSettings(probe_dataset="driftcaps")
    with pytest.raises(AGLUserError, match=r"`agl_kl_anchor_every`=4 is not supported under DeepSpeed ZeRO-3"):
        DriftMeter(AGLSettings(kl_anchor_every=4), probe).start(zero3=True)
    default = DriftMeter(AGLSettings(), probe)
    default.start(zero3=True)
    assert default.anchor_every == 0
    default.start(zero3=False)
    assert default.anchor_every == DEFAULT_KL_ANCHOR_EVERY


def test_meter_reading_equals_the_evaluation_kl_on_the_same_sequences() -> None:
    """The drift meter (logits only where a response is predicted, one batch) and the judge-free KL drift (whole
    logits, length-sorted batches, token-weighted) compute the same KL(aligned || tuned) per response token."""
    from agl_trl.evaluation.kl import kl_on_generations
    from agl_trl.generation import Generation, encode_prompt
    from agl_trl.teacher_forcing import TokenSequence, collate, probe_kl

    model, tokenizer = make_lora_model()
    gens = [
        Generation(
            prompt_ids=encode_prompt(tokenizer, r["prompt"]),
            response_ids=list(tokenizer(r["response"], add_special_tokens=False)["input_ids"]),
            text=r["response"],
        )
        for r in PROBE[:5]
    ]
    pad = tokenizer.pad_token_id or 0
    batch = collate([TokenSequence.from_generation(g) for g in gens], pad, torch.device("cpu"))
    meter = probe_kl(model, batch)
    evaluation = kl_on_generations(model, gens, batch_size=2, pad_id=pad, progress=False)
    assert meter > 1e-4, "the adapters do not move the model: the test is blind"
    assert evaluation.n_tokens == int(batch["response_mask"].sum())
    assert meter == pytest.approx(evaluation.mean, rel=1e-5)


def test_the_regulariser_reads_the_meters_weight() -> None:
    from agl_trl.fisher import FisherSettings, estimate_fisher
    from agl_trl.regularizers import AGLRegularizer

    model, tokenizer = make_lora_model()
    artifact = estimate_fisher(model, tokenizer, PROBE, FisherSettings(max_rank=8), show_progress=False)
    meter = DriftMeter(AGLSettings())
    reg = AGLRegularizer(artifact, AGLSettings(), budget=meter.budget)
    _, before = reg(model, step=0)
    reading = meter.observe(measured=0.5, estimate=reg.raw_kl_estimate(model))  # 5x the budget: lambda rises
    assert set(reading) == {"kl_measured", "kl_ratio"} and meter.weight > before["lambda"]
    _, after = reg(model, step=1)
    assert after["lambda"] == meter.weight
