"""docs/errors.md, Axolotl side: every bad input fails Axolotl's own config validation (no model is loaded), naming
the key and the fix; unknown ``agl_*`` keys are refused with the closest valid key instead of being dropped; Axolotl's
CLI prints AGL's errors as one line without a traceback (``agl_trl.integrations.axolotl.errors``).

The rows live in ``tests/helpers/bad_inputs.py`` (shared with tests/core/test_errors.py).
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.axolotl import axolotl_env, axolotl_train, load_recipe, requires_axolotl, write_config
from tests.helpers.bad_inputs import AXOLOTL_ROWS, BadInput, write_artifact_stub, write_probe
from tests.helpers.data import tail

pytestmark = [pytest.mark.axolotl, requires_axolotl]


def validate(**overrides: Any) -> Any:
    """Validate the tiny SFT recipe plus ``overrides`` the way ``axolotl train`` does (prepare_plugins +
    validate_config, with the plugin's args merged into Axolotl's schema)."""
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault({**copy.deepcopy(load_recipe("tiny-sft-cpu.yaml")), **overrides})
    prepare_plugins(cfg)
    return validate_config(cfg)


@pytest.mark.parametrize("row", AXOLOTL_ROWS, ids=[row.id for row in AXOLOTL_ROWS])
def test_every_row_fails_axolotl_validation(row: BadInput, tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        validate(**row.keys_for("axolotl", tmp_path))
    assert re.search(row.axolotl, str(info.value)), str(info.value)


def test_unknown_keys_are_refused_even_with_agl_off() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"unknown key agl_fisher_maxrank: did you mean agl_fisher_max_rank\?"):
        validate(agl_enabled=False, agl_fisher_maxrank=8)


def test_the_plugin_args_alone_refuse_unknown_keys() -> None:
    from pydantic import ValidationError

    from agl_trl.integrations.axolotl import AGLAxolotlArgs

    with pytest.raises(ValidationError, match=r"did you mean agl_lambda_align\?"):
        AGLAxolotlArgs(agl_lamda_align=100)
    assert AGLAxolotlArgs(learning_rate=0.1).agl_enabled is False  # Axolotl's own keys are Axolotl's business


def test_files_are_only_checked_with_agl_on(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-artifact")
    assert validate(agl_enabled=False, agl_fisher_path=missing).agl_enabled is False
    qa = write_probe(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    assert validate(agl_enabled=False, agl_probe_dataset=str(qa)).agl_enabled is False


def test_good_files_pass_and_every_agl_key_is_in_the_validated_cfg(tmp_path: Path) -> None:
    from agl_trl.settings import setting_fields

    artifact = write_artifact_stub(tmp_path / "artifact")
    cfg = validate(agl_fisher_path=str(artifact))
    assert cfg.agl_fisher_path == str(artifact)
    probe = write_probe(tmp_path / "probe.jsonl", [{"prompt": "hi"}, {"messages": [{"role": "user", "content": "x"}]}])
    cfg = validate(agl_probe_dataset=str(probe))
    assert cfg.agl_probe_dataset == str(probe)
    # dropped by exclude_none: fisher path, lambda, anchor interval and lambda floor (unset = the package default)
    unset = {f.key for f in setting_fields() if f.default is None}
    assert unset == {"agl_fisher_path", "agl_lambda_align", "agl_kl_anchor_every", "agl_lambda_floor"}
    assert {f.key for f in setting_fields()} - unset <= set(cfg)


@pytest.mark.parametrize("row", AXOLOTL_ROWS, ids=[row.id for row in AXOLOTL_ROWS])
def test_every_row_is_one_line_for_axolotls_cli(row: BadInput, tmp_path: Path) -> None:
    """What ``report_validation_error`` prints for each row: one line, naming the key."""
    from pydantic import ValidationError

    from agl_trl.integrations.axolotl.errors import agl_messages

    keys = row.keys_for("axolotl", tmp_path)
    with pytest.raises(ValidationError) as info:
        validate(**keys)
    lines = agl_messages(info.value)
    assert lines is not None and len(lines) == 1, (lines, str(info.value))
    key = "adapter" if row.id == "no-lora" else next(iter(keys))
    assert key in lines[0] and "\n" not in lines[0], lines


def test_errors_that_are_not_only_agls_are_left_to_axolotl() -> None:
    from pydantic import ValidationError

    from agl_trl.integrations.axolotl.errors import agl_messages

    with pytest.raises(ValidationError) as info:
        validate(micro_batch_size="two")
    assert agl_messages(info.value) is None, str(info.value)
    assert agl_messages(ValueError("not pydantic")) is None and agl_messages(None) is None


def test_report_exits_2_with_one_line_unless_a_traceback_is_asked_for(capsys, monkeypatch) -> None:
    from pydantic import ValidationError

    from agl_trl.integrations.axolotl.errors import report_validation_error

    monkeypatch.delenv("AGL_TRL_TRACEBACK", raising=False)
    report_validation_error()  # no exception being handled: nothing to do
    try:
        validate(agl_mu=1.5)
    except ValidationError:
        with pytest.raises(SystemExit) as stop:
            report_validation_error()
        assert stop.value.code == 2
        monkeypatch.setenv("AGL_TRL_TRACEBACK", "1")
        report_validation_error()  # returns: Axolotl re-raises with its traceback
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "agl-trl: error: Invalid `agl_mu`=1.5: must lie in [0, 1] (1 = Riemannian overlap only, 0 = geodesic only)."
    ], err


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("agl-trl: error:")]


def test_axolotl_train_refuses_a_typo_in_one_line_before_loading_the_model(workspace: Path) -> None:
    config = write_config(workspace, "tiny-sft-cpu.yaml", "typo", agl_lamda_align=100)
    proc = axolotl_train(workspace, config, timeout=300)
    assert proc.returncode == 2, tail(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, tail(proc)
    assert error_lines(proc) == ["agl-trl: error: unknown key agl_lamda_align: did you mean agl_lambda_align?"]
    assert not (workspace / "outputs" / "typo").exists() or not any((workspace / "outputs" / "typo").iterdir())


def test_axolotl_preprocess_reports_a_bad_probe_file_in_one_line(workspace: Path) -> None:
    probe = write_probe(workspace / "qa-probe.jsonl", [{"question": "q?", "answer": "a."}])
    config = write_config(workspace, "tiny-sft-cpu.yaml", "bad-probe", agl_probe_dataset=str(probe))
    exe = Path(sys.executable).parent / "axolotl"
    proc = subprocess.run(
        [str(exe), "preprocess", str(config)],
        cwd=workspace,
        env=axolotl_env(workspace),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, tail(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, tail(proc)
    (line,) = error_lines(proc)
    assert "Invalid `agl_probe_dataset`=" in line and "record 1 has the columns ['answer', 'question']" in line


NO_GPU = {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": None}


def test_fused_lora_kernels_without_a_gpu_are_refused_at_config_time() -> None:
    """What Axolotl's CLI detects on a CPU machine (gpu_capabilities): the kernels would fail inside AGL's probe
    generation; unknown capabilities (Python callers) or AGL off leave the keys to Axolotl."""
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault
    from pydantic import ValidationError

    from agl_trl.integrations.axolotl.errors import agl_messages

    def check(capabilities: Any, **overrides: Any) -> Any:
        cfg = DictDefault({**copy.deepcopy(load_recipe("tiny-sft-cpu.yaml")), **overrides})
        prepare_plugins(cfg)
        env = {"torch_version": "2.13.0"} if capabilities is not None else None
        return validate_config(cfg, capabilities=capabilities, env_capabilities=env)

    with pytest.raises(ValidationError) as info:
        check(NO_GPU, lora_mlp_kernel=True, lora_o_kernel=True)
    (line,) = agl_messages(info.value)
    assert line.startswith(
        "`agl_enabled: true` with `lora_mlp_kernel: true`, `lora_o_kernel: true` on a machine without a CUDA GPU"
    ), line
    assert "set them to false to train on the CPU" in line, line
    assert check(NO_GPU).agl_enabled is True  # the recipe switches them off
    assert check(None, lora_mlp_kernel=True).lora_mlp_kernel is True
    assert check(NO_GPU, lora_mlp_kernel=True, agl_enabled=False).lora_mlp_kernel is True
