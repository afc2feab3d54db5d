"""Axolotl with FSDP2 and AGL: the 70B FSDP2 + QLoRA recipe validates with AGL on, FSDP2 on the tiny recipe validates,
FSDP2 parameter offload is refused with the fix, and a real two-process ``axolotl train`` (torchrun, gloo, CPU) with
``fsdp_version: 2`` trains with AGL, writes adapter, artifact and state, and resumes from its checkpoint. On CPU the
run needs ``cpu_fsdp/sitecustomize.py``, which bends two CUDA assumptions of Axolotl and accelerate (the device mesh's
device type, accelerate's FSDP-needs-an-accelerator check); the regulariser's equality with a single process is
tested through TRL in tests/trainers/test_fsdp.py."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.axolotl import (
    PLUGIN,
    TWO_PROCESS_SFT,
    axolotl_torchrun,
    load_recipe,
    requires_axolotl,
    train_logs,
    write_config,
)

pytestmark = [pytest.mark.axolotl, requires_axolotl]

FSDP2 = {
    "fsdp_version": 2,
    "fsdp_config": {
        "offload_params": False,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
        "state_dict_type": "FULL_STATE_DICT",
        "reshard_after_forward": True,
    },
}


def validate(raw: dict[str, Any]) -> Any:
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault(copy.deepcopy(raw))
    prepare_plugins(cfg)
    return validate_config(cfg)


def test_the_70b_fsdp2_qlora_recipe_validates_with_agl_on() -> None:
    recipe = load_recipe("llama31-70b-qlora-fsdp2-sft-agl.yaml")
    assert recipe["plugins"] == [PLUGIN] and recipe["agl_enabled"] is True
    cfg = validate(recipe)
    assert cfg.agl_enabled is True and cfg.adapter == "qlora" and cfg.load_in_4bit is True
    assert cfg.fsdp_version == 2 and not cfg.fsdp_config.offload_params


def test_fsdp2_validates_with_agl_and_its_param_offload_is_refused() -> None:
    raw = dict(load_recipe("tiny-sft-cpu.yaml"), **copy.deepcopy(FSDP2))
    assert validate(raw).agl_enabled is True
    raw["fsdp_config"]["offload_params"] = True
    with pytest.raises(ValueError, match="offload_params"):
        validate(raw)
    validate(dict(raw, agl_enabled=False))  # only with AGL on


def _train_fsdp2(workspace: Path, run_name: str, **overrides: Any) -> subprocess.CompletedProcess:
    """``axolotl train --launcher torchrun -- --nproc_per_node 2`` on the tiny SFT recipe with FSDP2."""
    settings = {**TWO_PROCESS_SFT, "max_steps": 4, "save_steps": 2, **copy.deepcopy(FSDP2), **overrides}
    config = write_config(workspace, "tiny-sft-cpu.yaml", run_name, **settings)
    here = Path(__file__)
    shim = os.pathsep.join([str(here.parent / "cpu_fsdp"), str(here.parents[2]), os.environ.get("PYTHONPATH", "")])
    # ACCELERATE_USE_CPU: accelerate's multi-CPU (gloo) state, which the shim turns into FSDP
    return axolotl_torchrun(workspace, config, {"PYTHONPATH": shim, "ACCELERATE_USE_CPU": "1"})


@pytest.mark.timeout(1200)
def test_axolotl_fsdp2_training_with_agl_writes_its_outputs_and_resumes(workspace: Path) -> None:
    _train_fsdp2(workspace, "fsdp2-agl")
    out = workspace / "outputs" / "fsdp2-agl"
    assert (out / "agl_fisher" / "fisher.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    for step in (2, 4):
        checkpoint = out / f"checkpoint-{step}"
        assert (checkpoint / "pytorch_model_fsdp.bin").is_file(), "the run was not sharded by FSDP"
        state = json.loads((checkpoint / "agl_state.json").read_text())
        assert state["regularizer"]["budget"]["readings"], "the KL meter read under FSDP2"
    history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    first = train_logs(history)
    assert [e["step"] for e in first] == [1, 2, 3, 4]
    assert all(math.isfinite(e["agl/r_align"]) for e in first) and first[-1]["agl/r_align"] > 0
    assert any("agl/kl_measured" in e for e in first)

    # resumed from checkpoint-2 into a fresh output dir: the state is restored and steps 3-4 are the same
    resumed_dir = workspace / "outputs" / "fsdp2-resumed"
    shutil.copytree(out / "checkpoint-2", resumed_dir / "checkpoint-2")
    shutil.copytree(out / "agl_fisher", resumed_dir / "agl_fisher")
    _train_fsdp2(workspace, "fsdp2-resumed", resume_from_checkpoint="./outputs/fsdp2-resumed/checkpoint-2")
    readings = json.loads((resumed_dir / "checkpoint-4" / "agl_state.json").read_text())["regularizer"]["budget"]
    assert len(readings["readings"]) == 4, "the meter's readings of steps 1-2 were restored, then 3-4 added"
    history = json.loads((resumed_dir / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    second = [e for e in train_logs(history) if e["step"] > 2]
    assert [e["step"] for e in second] == [3, 4]
    for before, after in zip(first[2:], second, strict=True):
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-4)
        assert after["agl/r_align"] == pytest.approx(before["agl/r_align"], rel=1e-4)
        assert after["agl/lambda"] == pytest.approx(before["agl/lambda"], rel=1e-6)
