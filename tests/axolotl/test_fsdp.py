"""Axolotl with FSDP2 and AGL at config validation: the 70B FSDP2 + QLoRA recipe validates with AGL on, FSDP2 on the
tiny recipe validates, FSDP2 parameter offload is refused with the fix (the training path itself is tested through
TRL / accelerate in tests/trainers/test_fsdp.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.axolotl.helpers import PLUGIN, load_recipe, requires_axolotl

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
