"""The ``agl-trl`` command line.

Training commands mirror ``trl <command>`` (``trl/cli/commands/training.py``)::

    agl-trl sft --config recipes/trl/tiny-sft.yaml [--key value ...]       # CLI overrides the YAML
    agl-trl dpo --config recipe.yaml --num_processes 4                      # via `accelerate launch`
    agl-trl grpo --config recipes/trl/llama3.1-8b-instruct-qlora-grpo.yaml  # online RL (also: rloo)
    agl-trl sft --config recipe.yaml --accelerate_config zero2              # trl's named configs, or a path
    agl-trl fisher --config recipe.yaml                                     # estimate + save the Fisher only

Keys (YAML or CLI) that no dataclass of the script knows are handed to ``accelerate launch`` (``num_processes``,
``accelerate_config``, ``mixed_precision``, ...), which then runs ``-m agl_trl.scripts.train <command>`` (or
``-m agl_trl.scripts.fisher``). With no such key the script runs in this process. The trainer kinds are the rows of
:data:`agl_trl.kinds.TRAINER_KINDS`. ``drift``, ``demo`` and ``scaling`` forward to their own command lines.

User errors of a training command (a bad or unknown ``agl_*`` key, a bad value or boolean, a missing artifact or
probe file, AGL without ``use_peft``) print one line, ``agl-trl: error: <message>``, and exit with status 2, before
any model loads (docs/errors.md), as do the online scripts' bad ``reward_funcs``; other errors keep their traceback.
``AGL_TRL_TRACEBACK=1`` shows it for every error.
"""

from __future__ import annotations

import importlib
import os
import sys
from argparse import ArgumentParser
from collections.abc import Sequence
from typing import Any

from agl_trl.kinds import TRAINER_KINDS
from agl_trl.setting_rules import AGLUserError

TRAINING_COMMANDS: dict[str, str] = {
    **{kind.name: kind.summary for kind in TRAINER_KINDS},
    "fisher": "Estimate and save a Fisher artifact for a model + LoRA config, without training",
}
FORWARDED_COMMANDS: dict[str, tuple[str, str]] = {
    "drift": ("agl_trl.evaluation.cli", "Measure alignment drift on DriftCaps"),
    "demo": ("agl_trl.demo.cli", "Run the end-to-end demo (align, fine-tune with/without AGL, measure drift)"),
    "scaling": ("agl_trl.scaling.cli", "Fit the forgetting scaling law"),
}
_LAUNCHER_FLAGS = ("--multi_gpu", "--cpu", "--config_file", "--use_deepspeed", "--use_fsdp", "--tpu")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="agl-trl",
        allow_abbrev=False,
        description="AlignGuard-LoRA for TRL: train with the AGL regulariser, estimate Fisher artifacts, "
        "measure alignment drift.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", help="available commands")
    for name, text in TRAINING_COMMANDS.items():
        subparsers.add_parser(name, help=text, add_help=False)
    for name, (_, text) in FORWARDED_COMMANDS.items():
        subparsers.add_parser(name, help=text, add_help=False)
    return parser


def _subtract_subsequence(items: list[str], subsequence: list[str]) -> list[str]:
    """``items`` with the ordered ``subsequence`` removed (same as trl's TrainingCommand)."""
    remaining = iter(subsequence)
    current = next(remaining, None)
    result = []
    for item in items:
        if current is not None and item == current:
            current = next(remaining, None)
        else:
            result.append(item)
    return result


def _resolve_accelerate_config(launch_args: list[str]) -> list[str]:
    """``--accelerate_config NAME|PATH`` -> ``--config_file PATH`` (trl's resolver: zero1/2/3, fsdp1/2, ...)."""
    try:
        from trl.cli.accelerate_config import resolve_accelerate_config_argument
    except ImportError:  # trl < 1.16: same logic, resolved here
        resolve_accelerate_config_argument = _fallback_resolve_accelerate_config
    return resolve_accelerate_config_argument(launch_args)


def _fallback_resolve_accelerate_config(launch_args: list[str]) -> list[str]:
    import importlib.resources as resources
    from pathlib import Path

    if "--accelerate_config" not in launch_args:
        return launch_args
    index = launch_args.index("--accelerate_config")
    if index + 1 >= len(launch_args):
        raise ValueError("Expected a value after `--accelerate_config`.")
    name = launch_args[index + 1]
    if Path(name).is_file():
        path = name
    else:
        candidate = resources.files("trl.accelerate_configs").joinpath(f"{name}.yaml")
        if not candidate.is_file():
            raise ValueError(f"Accelerate config {name!r} is neither a file nor a config shipped with trl.")
        path = str(candidate)
    return ["--config_file", path, *launch_args[:index], *launch_args[index + 2 :]]


def _needs_torchrun_on_cpu(launch_args: list[str]) -> bool:
    """``--num_processes N>1`` on a machine without GPUs: accelerate's simple launcher would start one process."""
    if any(flag in launch_args for flag in _LAUNCHER_FLAGS) or "--num_processes" not in launch_args:
        return False
    try:
        value = int(launch_args[launch_args.index("--num_processes") + 1])
    except (IndexError, ValueError):
        return False
    import torch

    return value > 1 and not torch.cuda.is_available()


def launch_with_accelerate(module: str, launch_args: list[str], script_args: list[str]) -> None:
    """``accelerate launch <launch_args> -m <module> <script_args>``."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    if _needs_torchrun_on_cpu(launch_args):
        launch_args = [*launch_args, "--multi_gpu"]  # torchrun launcher; the processes use gloo on CPU
    args = launch_command_parser().parse_args([*launch_args, "--module", module, *script_args])
    launch_command(args)


def split_launch_args(tokens: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--key [value]`` tokens into those ``accelerate launch`` knows and the rest."""
    from accelerate.commands.launch import launch_command_parser

    actions = launch_command_parser()._option_string_actions
    launch: list[str] = []
    other: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        takes_value = index + 1 < len(tokens) and not tokens[index + 1].startswith("--")
        action = actions.get(token.split("=", 1)[0])
        if action is not None and action.nargs == 0:
            takes_value = False
        group = [token, tokens[index + 1]] if takes_value and "=" not in token else [token]
        (launch if action is not None else other).extend(group)
        index += len(group)
    return launch, other


def script_of(name: str) -> tuple[str, list[str]]:
    """The script module of training command ``name`` and the arguments that precede its own: a trainer kind runs
    ``agl_trl.scripts.train <kind>``, ``fisher`` runs ``agl_trl.scripts.fisher``."""
    return ("agl_trl.scripts.fisher", []) if name == "fisher" else ("agl_trl.scripts.train", [name])


def parse_training_args(name: str, module: Any, argv: list[str]) -> tuple[list[Any], list[str], list[str]]:
    """The parsed dataclasses and the remaining tokens of a training command; user errors are :class:`AGLUserError`
    (see :func:`agl_trl.scripts._common.parse_user_args`; the training commands also need ``use_peft``)."""
    from agl_trl.scripts._common import check_parsed, parse_user_args

    _, leading = script_of(name)
    parser = module.make_parser(*leading, prog=f"agl-trl {name}")
    parsed, config_remaining, cli_remaining = parse_user_args(parser, argv)
    if name != "fisher":
        check_parsed(*parsed)
    return parsed, config_remaining, cli_remaining


def run_training_command(name: str, argv: list[str]) -> int:
    module_name, leading = script_of(name)
    module = importlib.import_module(module_name)
    parsed, config_remaining, cli_remaining = parse_training_args(name, module, argv)
    try:
        launch_args = _resolve_accelerate_config(list(config_remaining) + list(cli_remaining))
    except ValueError as err:  # an unknown --accelerate_config name
        raise AGLUserError(str(err)) from err
    if name == "fisher":  # reads training recipes: keys that only matter for training are ignored
        launch_args, ignored = split_launch_args(launch_args)
        if ignored:
            print(f"[agl-trl fisher] ignoring keys that only matter for training: {' '.join(ignored)}")
    if not launch_args:
        module.main(*leading, *parsed)
        return 0
    script_args = _subtract_subsequence(argv, list(cli_remaining))
    launch_with_accelerate(module_name, launch_args, [*leading, *script_args])
    return 0


def run_forwarded_command(name: str, argv: list[str]) -> int:
    module_name, _ = FORWARDED_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(
                f"agl-trl {name}: this command is not available in this installation ({module_name} is missing).",
                file=sys.stderr,
            )
            return 2
        raise
    result: Any = module.main(argv)
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    if name in TRAINING_COMMANDS:
        try:
            return run_training_command(name, rest)
        except AGLUserError as err:  # the project's own validation errors (FisherArtifactError included)
            if os.environ.get("AGL_TRL_TRACEBACK"):
                raise
            print(f"agl-trl: error: {err}", file=sys.stderr)
            return 2
    if name in FORWARDED_COMMANDS:
        return run_forwarded_command(name, rest)
    parser.print_usage(sys.stderr)
    print(
        f"agl-trl: unknown command {name!r}; choose one of {', '.join([*TRAINING_COMMANDS, *FORWARDED_COMMANDS])}.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
