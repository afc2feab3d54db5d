"""Axolotl with DeepSpeed ZeRO-3 and AGL: a real two-process ``axolotl train`` (torchrun, ``DS_ACCELERATOR=cpu``,
DeepSpeed's CPU accelerator on gloo) of the tiny SFT recipe with ``deepspeed:`` a stage-3 config in which every
parameter is partitioned (``stage3_param_persistence_threshold: 0``). No shim is needed: Axolotl's DeepSpeed path
runs on CPU as it is. The run trains with AGL (every term non-zero after the first step), writes the artifact, a ZeRO
checkpoint with one partition per rank and ``agl_state.json``. The regulariser's equality
with a single process under a real ZeRO-3 engine is tested through TRL in tests/trainers/test_deepspeed.py.

Skipped where ``deepspeed`` is not installed (``make venv-axolotl`` installs it).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from tests.helpers.axolotl import TWO_PROCESS_SFT, axolotl_torchrun, requires_axolotl, train_logs, write_config

pytestmark = [
    pytest.mark.axolotl,
    requires_axolotl,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed (make venv-axolotl)"),
    pytest.mark.timeout(1200),
]

ZERO3 = {
    "zero_optimization": {
        "stage": 3,
        "stage3_param_persistence_threshold": 0,  # partition the (small) LoRA factors too
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "bf16": {"enabled": False},
    "fp16": {"enabled": False},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
}


def test_axolotl_zero3_training_with_agl_writes_its_outputs(workspace: Path) -> None:
    (workspace / "zero3.json").write_text(json.dumps(ZERO3))
    settings = {**TWO_PROCESS_SFT, "deepspeed": "zero3.json", "max_steps": 3, "save_steps": 3}
    settings["agl_lambda_collision"] = 0.1  # the opt-in collision terms: every term under ZeRO-3
    config = write_config(workspace, "tiny-sft-cpu.yaml", "zero3-agl", **settings)
    axolotl_torchrun(workspace, config, {"DS_ACCELERATOR": "cpu"}, timeout=1100)

    out = workspace / "outputs" / "zero3-agl"
    checkpoint = out / "checkpoint-3"
    partitions = sorted(p.name for p in (checkpoint / "global_step3").glob("zero_pp_rank_*_model_states.pt"))
    assert len(partitions) == 2, f"not a two-rank ZeRO checkpoint: {partitions}"
    assert (out / "agl_fisher" / "fisher.json").is_file()
    # Axolotl 0.21 writes adapter_model.safetensors from every rank under ZeRO-3 here, with or without AGL: the
    # checkpoint's holds empty partitions and the final one is whole or empty by which rank writes last, so only its
    # presence is checked; the trained weights are in global_step3 (zero_to_fp32.py), and the terms below need them
    assert (out / "adapter_model.safetensors").is_file() and (checkpoint / "zero_to_fp32.py").is_file()
    state = json.loads((checkpoint / "agl_state.json").read_text())
    assert len(state["regularizer"]["budget"]["readings"]) == 3, "the KL meter read at every step"
    logs = train_logs(json.loads((checkpoint / "trainer_state.json").read_text())["log_history"])
    assert [e["step"] for e in logs] == [1, 2, 3]
    for key in ("agl/loss", "agl/r_align", "agl/r_task", "agl/e_riem", "agl/e_geo", "agl/kl_estimate"):
        assert all(math.isfinite(e[key]) for e in logs), (key, logs)
        assert logs[-1][key] > 0, (key, logs[-1])  # B = 0 at step 1; the penalty's gradient moved it after
