"""``AGLAxolotlArgs`` (pure pydantic): same keys, defaults, help and value rules as ``agl_trl.config.AGLArgs``.

Runs in both environments (no Axolotl needed).
"""

from __future__ import annotations

import subprocess
import sys
import typing
from dataclasses import MISSING, fields

import pytest
from pydantic import ValidationError

from agl_trl.integrations.axolotl.args import AGLAxolotlArgs
from agl_trl.settings import SETTING_KEYS, AGLTrainingSettings
from tests.helpers.bad_inputs import write_artifact_stub

config = pytest.importorskip("agl_trl.config")

# (field, invalid value) pairs that both AGLArgs and AGLAxolotlArgs must refuse.
INVALID = [
    ("agl_lambda_align", -1.0),
    ("agl_lambda_task", -0.5),
    ("agl_lambda_collision", -1),
    ("agl_beta", -2.0),
    ("agl_lambda_align", float("nan")),
    ("agl_lambda_task", float("inf")),
    ("agl_mu", 1.5),
    ("agl_mu", -0.1),
    ("agl_gate", "medium"),
    ("agl_gate_damping", 0.0),
    ("agl_riem_block", 0),
    ("agl_tau_quantile", 1.0),
    ("agl_tau_quantile", 0.0),
    ("agl_tau_momentum", 1.0),
    ("agl_fisher_estimator", "full"),
    ("agl_fisher_targets", "random"),
    ("agl_fisher_sketch", "svd"),
    ("agl_fisher_max_rank", 0),
    ("agl_fisher_max_samples", 0),
    ("agl_fisher_batch_size", -4),
    ("agl_fisher_max_length", 1),
    ("agl_fisher_max_new_tokens", 0),
    ("agl_fisher_seed", -1),
    ("agl_fisher_explained_variance", 0.0),
    ("agl_fisher_explained_variance", 1.5),
    ("agl_fisher_memory_budget_gb", 0.0),
    ("agl_fisher_path", "  "),
    ("agl_probe_dataset", ""),
    ("agl_probe_dataset", "no/such/file.jsonl"),
    ("agl_probe_split", ""),
]


def test_same_fields_defaults_and_help_as_agl_args() -> None:
    dataclass_fields = {f.name: f for f in fields(config.AGLArgs)}
    assert tuple(dataclass_fields) == tuple(AGLAxolotlArgs.model_fields)
    for name, info in AGLAxolotlArgs.model_fields.items():
        f = dataclass_fields[name]
        default = f.default if f.default is not MISSING else f.default_factory()
        if name == "agl_enabled":  # the one deliberate difference: listing the plugin alone changes nothing
            assert default is True and info.default is False
            assert info.description.startswith(f.metadata["help"].split(" (")[0])
        else:
            assert info.default == default, name
            assert info.description == f.metadata["help"].removesuffix("%(default).0s"), name


def test_declared_fields_equal_the_settings() -> None:
    """Every setting, in order, with the type (choices as ``Literal``), default and help of settings.py."""
    from agl_trl.integrations.axolotl.args import AXOLOTL_OVERRIDES
    from agl_trl.settings import setting_fields

    hints = typing.get_type_hints(AGLAxolotlArgs)
    assert tuple(AGLAxolotlArgs.model_fields) == SETTING_KEYS
    for spec in setting_fields():
        info = AGLAxolotlArgs.model_fields[spec.key]
        kind = typing.Literal[spec.choices] if spec.choices else spec.type
        assert hints[spec.key] == kind, spec.key
        assert (info.default, info.description) == AXOLOTL_OVERRIDES.get(spec.key, (spec.default, spec.described_help))


def test_choices_match() -> None:
    hints = typing.get_type_hints(AGLAxolotlArgs)
    for name, choices in [
        ("agl_gate", config.GATE_CHOICES),
        ("agl_fisher_estimator", config.ESTIMATOR_CHOICES),
        ("agl_fisher_targets", config.TARGETS_CHOICES),
        ("agl_fisher_sketch", config.SKETCH_CHOICES),
    ]:
        assert typing.get_args(hints[name]) == tuple(choices), name


def test_defaults_validate_and_agree_with_core_settings() -> None:
    args = AGLAxolotlArgs(agl_enabled=True)
    # the validated Axolotl values build the core settings objects (what attach_agl does with an Axolotl cfg)
    core = AGLTrainingSettings.from_prefixed(args.model_dump()).to_prefixed()
    assert core["agl_enabled"] is True
    assert {name: core[name] for name in SETTING_KEYS} == args.model_dump()


@pytest.mark.parametrize(("name", "value"), INVALID, ids=[f"{n}={v!r}" for n, v in INVALID])
def test_invalid_values_refused_by_both(name: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc_info:
        AGLAxolotlArgs(**{name: value})
    assert name in str(exc_info.value)
    with pytest.raises(ValueError):
        config.AGLArgs(**{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("agl_mu", 0.0),
        ("agl_mu", 1.0),
        ("agl_lambda_align", 0.0),
        ("agl_tau_momentum", 0.0),
        ("agl_fisher_explained_variance", 1.0),
        ("agl_fisher_seed", 0),
        ("agl_gate", "hard"),
        ("agl_fisher_estimator", "diagonal"),
        ("agl_probe_dataset", "org/some-probe-set"),
    ],
)
def test_boundary_values_accepted_by_both(name: str, value: object) -> None:
    assert getattr(AGLAxolotlArgs(**{name: value}), name) == value
    assert getattr(config.AGLArgs(**{name: value}), name) == value


def test_error_message_names_value_and_fix() -> None:
    with pytest.raises(ValidationError, match=r"Invalid `agl_mu`=1\.5: must lie in \[0, 1\]"):
        AGLAxolotlArgs(agl_mu=1.5)


def test_enabled_needs_probe_or_fisher_path(tmp_path) -> None:
    with pytest.raises(ValidationError, match="a probe dataset is needed"):
        AGLAxolotlArgs(agl_enabled=True, agl_probe_dataset=None)
    AGLAxolotlArgs(agl_enabled=False, agl_probe_dataset=None)  # fine when off
    artifact = write_artifact_stub(tmp_path / "artifact")  # a saved artifact is checked at validation
    AGLAxolotlArgs(agl_enabled=True, agl_probe_dataset=None, agl_fisher_path=str(artifact))
    probe = tmp_path / "probe.jsonl"
    probe.write_text('{"prompt": "hi"}\n')
    assert AGLAxolotlArgs(agl_probe_dataset=str(probe)).agl_probe_dataset == str(probe)


def test_args_module_imports_no_torch_trl_or_axolotl() -> None:
    code = (
        "import sys, agl_trl.integrations.axolotl as m; m.AGLAxolotlArgs(); "
        "bad = [k for k in ('torch', 'trl', 'transformers', 'axolotl') if k in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plugin_import_without_axolotl_says_how_to_install(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "axolotl" or m.startswith("axolotl.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "axolotl", None)  # makes `import axolotl...` raise ImportError
    monkeypatch.delitem(sys.modules, "agl_trl.integrations.axolotl.plugin", raising=False)
    import agl_trl.integrations.axolotl as package

    with pytest.raises(ImportError, match="needs Axolotl.*pip install axolotl"):
        package.AGLPlugin  # noqa: B018
