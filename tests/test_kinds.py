"""The table of trainer kinds (agl_trl/kinds.py) is what the configs, trainers, script, CLI and package export."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from agl_trl.kinds import KINDS_BY_NAME, TRAINER_KINDS, TrainerKind, trainer_kind
from agl_trl.utils import import_object

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", TRAINER_KINDS, ids=lambda k: k.name)
def test_every_row_has_its_config_trainer_command_and_parser(kind: TrainerKind) -> None:
    import agl_trl.config
    import agl_trl.trainers
    from agl_trl import cli
    from agl_trl.scripts.train import make_parser
    from agl_trl.trainers import AGLLossMixin

    config = getattr(agl_trl.config, kind.config_name)
    assert issubclass(config, import_object(kind.trl_config)) and issubclass(config, agl_trl.config.AGLArgs)
    trainer = getattr(agl_trl.trainers, kind.trainer_name)
    assert issubclass(trainer, import_object(kind.trl_trainer)) and issubclass(trainer, AGLLossMixin)
    assert trainer.__module__ == "agl_trl.trainers" and trainer.__name__ == kind.trainer_name
    assert kind.config_name in agl_trl.__all__ and kind.trainer_name in agl_trl.__all__
    assert kind.config_name in agl_trl.config.__all__ and kind.trainer_name in agl_trl.trainers.__all__
    assert cli.TRAINING_COMMANDS[kind.name] == kind.summary
    parser = make_parser(kind.name)
    assert parser.dataclass_types[:2] == [import_object(kind.script_arguments), config]
    script_fields = {f.name for f in fields(import_object(kind.script_arguments))}
    assert ("reward_funcs" in script_fields) == kind.rewards
    assert ("ignore_bias_buffers" in script_fields) or not kind.ignore_bias_buffers


def test_rows_are_unique_and_looked_up_by_name() -> None:
    assert len(KINDS_BY_NAME) == len(TRAINER_KINDS)
    assert trainer_kind("dpo").trainer_name == "AGLDPOTrainer"
    with pytest.raises(ValueError, match="unknown trainer kind 'ppo'; choose one of sft, dpo"):
        trainer_kind("ppo")
    assert [k.name for k in TRAINER_KINDS if k.experimental] == ["orpo", "cpo"]


@pytest.mark.parametrize(
    ("path", "suffix", "extra_base"),
    [("agl_trl/config.py", "Config", "AGLArgs"), ("agl_trl/trainers/__init__.py", "Trainer", "AGLLossMixin")],
)
def test_type_checker_declarations_are_the_rows(path: str, suffix: str, extra_base: str) -> None:
    """What IDEs and type checkers read (the ``if TYPE_CHECKING:`` classes) is exactly the classes the rows build."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    declared = {
        node.name: [ast.unparse(base) for base in node.bases] for node in block.body if isinstance(node, ast.ClassDef)
    }
    expected = {}
    for kind in TRAINER_KINDS:
        trl_class = f"{kind.trl_name}{suffix}"
        bases = [trl_class, extra_base] if suffix == "Config" else [extra_base, trl_class]
        expected[f"AGL{kind.trl_name}{suffix}"] = bases
    assert declared == expected


def test_no_kind_is_listed_outside_the_table() -> None:
    """The modules that iterate the table name no kind themselves (adding a TRL trainer is one row)."""
    names = {k.name for k in TRAINER_KINDS} | {k.config_name for k in TRAINER_KINDS}
    names |= {k.trainer_name for k in TRAINER_KINDS}
    files = ["agl_trl/__init__.py", "agl_trl/cli.py", "agl_trl/config.py", "agl_trl/trainers/__init__.py"]
    files += [p.relative_to(ROOT).as_posix() for p in (ROOT / "agl_trl" / "scripts").glob("*.py")]
    found = []
    for file in files:
        for node in ast.walk(ast.parse((ROOT / file).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{file}:{node.lineno}: {node.value!r}")
    assert not found, found
