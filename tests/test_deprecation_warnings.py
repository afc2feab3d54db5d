"""The package's own recipes and configs warn about nothing deprecated: the tiny TRL recipes parse into their configs
without a FutureWarning or DeprecationWarning, and TRL's checkpointing default reaches transformers >= 5.23 under its
new name. (pyproject's filterwarnings hides both categories from pytest's summary, so these tests record them.)"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_TRL_RECIPES = sorted((REPO / "recipes" / "trl").glob("tiny-*.yaml"))


def _deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
    ]


@pytest.mark.parametrize("recipe", TINY_TRL_RECIPES, ids=[p.name for p in TINY_TRL_RECIPES])
def test_recipe_configs_parse_without_deprecation_warnings(
    recipe: Path, recipe_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The configs ``agl-trl <kind> --config <recipe>`` builds warn about nothing deprecated, and keep the recipe's
    ``gradient_checkpointing: false`` under whichever name the installed transformers reads."""
    import agl_trl.scripts.train as module
    from agl_trl.cli import parse_training_args

    assert yaml.safe_load(recipe.read_text()).get("gradient_checkpointing") is False, recipe.name
    name = re.search(r"agl-trl (\w+) --config", recipe.read_text()).group(1)  # the header comment's command
    argv = ["--config", recipe.relative_to(REPO).as_posix()]
    monkeypatch.chdir(REPO)  # the recipes' paths are relative to the repository root
    with warnings.catch_warnings():  # a first parse imports what parsing imports lazily (torch.jit's deprecation
        warnings.simplefilter("ignore")  # notes, ...): other packages' import-time warnings are not the recipe's
        parse_training_args(name, module, argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parsed, _, _ = parse_training_args(name, module, argv)
    assert not (found := _deprecations(caught)), "\n".join(found)
    training_args = parsed[1]
    assert training_args.gradient_checkpointing is False
    assert getattr(training_args, "activation_checkpointing", False) is False


def test_trl_defaults_keep_checkpointing_without_the_deprecation_warning(tmp_path: Path) -> None:
    """TRL's configs default ``gradient_checkpointing`` to True: an AGL config passes it on under the new name where
    transformers has one (no FutureWarning) and keeps transformers' rule that an explicit new name wins."""
    from dataclasses import fields

    from transformers import TrainingArguments
    from trl import SFTConfig

    from agl_trl.config import AGLSFTConfig, checkpointing_arguments

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default = AGLSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
        off = AGLSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **checkpointing_arguments(False))
        plain = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **checkpointing_arguments(False))
    assert not (found := _deprecations(caught)), "\n".join(found)  # (the experiments' plain configs: the last one)
    assert default.gradient_checkpointing is True and off.gradient_checkpointing is False
    assert plain.gradient_checkpointing is False
    if "activation_checkpointing" not in {f.name for f in fields(TrainingArguments)}:  # transformers < 5.23
        assert checkpointing_arguments(False) == {"gradient_checkpointing": False}
        return
    assert checkpointing_arguments(False) == {"activation_checkpointing": False}
    assert default.activation_checkpointing is True and off.activation_checkpointing is False
    args = {"output_dir": str(tmp_path), "use_cpu": True, "report_to": "none"}
    both = AGLSFTConfig(**args, gradient_checkpointing=True, activation_checkpointing=False)
    assert both.activation_checkpointing is False and both.gradient_checkpointing is False
