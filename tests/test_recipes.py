"""Every CPU recipe in recipes/ runs as written: the command in its header comment, from the repository root.

A CPU recipe is a TRL recipe with ``use_cpu: true`` or an Axolotl recipe whose name ends in ``-cpu.yaml``. Each
names its command in its first comment lines (``#   agl-trl sft --config recipes/trl/tiny-sft.yaml``); the test runs
that line as a subprocess, unchanged, in a directory laid out as the repository root (``recipes/`` is this checkout's,
linked), so the relative paths resolve exactly as for a user while the outputs (``runs/...``) stay out of the
checkout. The model is ``recipes/models/tiny-llama`` (``make tiny-model``; the ``recipe_model`` fixture writes it
the same way when missing); the data ships in ``recipes/data/``.

A recipe run must also be clean: no AGL warning and no Python warning outside :data:`TOLERATED_WARNINGS` in its
output (:func:`recipe_warnings`), and a non-zero gradient norm at every logged step (:func:`logged_grad_norms`), so
that a recipe that shrinks AGL's probe below what its defaults need, or whose reward gives no gradient, fails here.
"""

from __future__ import annotations

import ast
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.axolotl import requires_axolotl
from tests.helpers.data import repo_like_root, tail
from tests.helpers.recipes import recipe_warnings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def is_cpu_recipe(path: Path) -> bool:
    if path.parent.name == "axolotl":
        return path.name.endswith("-cpu.yaml")
    return bool(yaml.safe_load(path.read_text()).get("use_cpu"))


CPU_RECIPES = sorted(path for path in (REPO / "recipes").glob("*/*.yaml") if is_cpu_recipe(path))


def documented_command(recipe: Path) -> list[str]:
    """The command line of the recipe's header comment that names the recipe (``VAR=value`` prefixes kept)."""
    relative = recipe.relative_to(REPO).as_posix()
    for line in recipe.read_text().splitlines():
        if not line.startswith("#"):
            break
        if relative in line and re.search(r"\b(agl-trl|axolotl) ", line):
            return shlex.split(line.lstrip("#").strip())
    raise AssertionError(f"{relative}: no header comment line runs it (e.g. `#   agl-trl sft --config {relative}`)")


def run_documented(recipe: Path, root: Path, timeout: float) -> subprocess.CompletedProcess:
    words = documented_command(recipe)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_DATASETS_CACHE=str(root / ".hf-cache"))
    env.pop("AGL_TRL_TRACEBACK", None)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # `VAR=value cmd ...`, as a shell would
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    words[0] = str(BIN / words[0])  # this environment's console script
    return subprocess.run(words, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def output_dir(recipe: Path) -> str:
    return yaml.safe_load(recipe.read_text())["output_dir"]


def logged_grad_norms(output: str) -> list[float]:
    """The ``grad_norm`` of each logged step: the Trainer's printed log dicts (``{'loss': '6.25', 'grad_norm':
    '0.2013', ...}``, values as numbers or formatted strings)."""
    norms = []
    for line in output.splitlines():
        start = line.find("{'")
        if start >= 0 and "'grad_norm'" in line:
            norms.append(float(ast.literal_eval(line[start:].strip())["grad_norm"]))
    return norms


def test_the_output_checks_catch_warnings_and_zero_gradients() -> None:
    """:func:`recipe_warnings` and :func:`logged_grad_norms` on lines as the two front ends print them."""
    clean = "\n".join(
        [
            "[2026-01-01 00:00:00,000] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.",
            "[2026-01-01 00:00:00,000] [INFO] [agl_trl] AGL: saved the Fisher artifact to runs/x",
            "AGL: saved the Fisher artifact to runs/x",
            "AGL start-up: probe 'recipes/data/tiny-probe.jsonl'; ...; expected ~0 s for the Fisher estimate",
            "AGL Fisher estimation: 100%|##########| 64/64 [00:00<00:00, 88.85it/s]",
            "/x/transformers/modeling_utils.py:3303: FutureWarning: `is_gradient_checkpointing` is deprecated and ...",
        ]
    )
    assert recipe_warnings(clean) == []
    dirty = [
        "WARNING AGL: the probe data has 0 records beyond the 8 the Fisher reads (agl_fisher_max_samples); ...",
        "[2026-01-01 00:00:00,000] [WARNING] [agl_trl.regularizers.meter] AGL: KL anchor steps (on by default) are off",
        "/x/training_args.py:1541: FutureWarning: `evaluation_strategy` is deprecated and will be removed in v6.",
        "/x/training_args.py:1541: FutureWarning: `gradient_checkpointing` is deprecated and will be removed in v6.",
        "[2026-01-01 00:00:00,000] [WARNING] [py.warnings] /x/dataloader.py:759: UserWarning: 'pin_memory' argument",
    ]
    assert recipe_warnings("\n".join([clean, *dirty])) == dirty
    logs = "{'loss': '6.253', 'grad_norm': '0.2013', 'agl/r_align': '0'}\n{'loss': 0.0, 'grad_norm': 0.0, 'epoch': 1}"
    assert logged_grad_norms(logs + "\n{'train_runtime': '0.28', 'train_loss': '6.235'}") == [0.2013, 0.0]


def _param(recipe: Path) -> object:
    marks = [pytest.mark.timeout(900)]
    marks += [pytest.mark.axolotl, requires_axolotl] if recipe.parent.name == "axolotl" else [pytest.mark.slow]
    return pytest.param(recipe, marks=marks, id=recipe.relative_to(REPO / "recipes").as_posix())


def test_the_cpu_recipes_are_the_tiny_ones() -> None:
    names = {path.relative_to(REPO / "recipes").as_posix() for path in CPU_RECIPES}
    assert {"axolotl/tiny-dpo-cpu.yaml", "axolotl/tiny-sft-cpu.yaml", "trl/tiny-dpo.yaml", "trl/tiny-sft.yaml"} <= names
    assert all(Path(name).name.startswith("tiny-") for name in names), names
    for recipe in CPU_RECIPES:
        assert documented_command(recipe)


@pytest.mark.parametrize("recipe", [_param(recipe) for recipe in CPU_RECIPES])
def test_cpu_recipe_runs_as_written(recipe: Path, tmp_path: Path, recipe_model: Path) -> None:
    root = repo_like_root(tmp_path)
    proc = run_documented(recipe, root, timeout=900)
    assert proc.returncode == 0, tail(proc)
    out = root / output_dir(recipe)
    assert (out / "adapter_model.safetensors").is_file(), sorted(p.name for p in out.iterdir())
    assert (out / "agl_fisher" / "fisher.json").is_file(), sorted(p.name for p in out.iterdir())
    output = proc.stdout + proc.stderr
    assert "agl/r_align" in output, tail(proc)
    assert not (warnings := recipe_warnings(output)), "the run printed warnings:\n" + "\n".join(warnings)
    norms = logged_grad_norms(proc.stdout)
    assert norms, "no logged grad_norm (logging_steps: 1?)\n" + tail(proc)
    assert all(math.isfinite(n) and n > 0 for n in norms), f"a logged grad_norm is 0 or not finite: {norms}"
    if yaml.safe_load(recipe.read_text())["max_steps"] > 10:  # AGL's defaults: a meter reading at step 10, an anchor
        for key in ("agl/kl_measured", "agl/kl_anchor"):  # step at step 11
            assert key in output, (key, tail(proc))


def test_a_recipe_without_its_model_says_how_to_build_it(tmp_path: Path) -> None:
    """Run before ``make tiny-model``: one line naming the key and the fix, before anything loads."""
    root = tmp_path / "root"
    (root / "recipes").mkdir(parents=True)
    for name in ("trl", "data"):
        (root / "recipes" / name).symlink_to(REPO / "recipes" / name, target_is_directory=True)
    proc = run_documented(REPO / "recipes" / "trl" / "tiny-sft.yaml", root, timeout=300)
    assert proc.returncode == 2, tail(proc)
    assert "Traceback" not in proc.stderr, tail(proc)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("agl-trl: error:")]
    assert len(lines) == 1, tail(proc)
    assert "Invalid `model_name_or_path`='recipes/models/tiny-llama'" in lines[0] and "`make tiny-model`" in lines[0]
