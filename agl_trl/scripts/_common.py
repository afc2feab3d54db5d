"""Shared plumbing of the AGL scripts (``train``, ``fisher``) and the ``agl-trl`` command: parsing with user errors
as one line, the config-time checks across the parsed dataclasses, and TRL's dataset and model-loading steps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NoReturn

from agl_trl.preflight import check_sources
from agl_trl.settings import AGLUserError, check_known_keys

NO_PEFT_MESSAGE = (
    "AGL regularises a LoRA update, but `use_peft` is not set: add `use_peft: true` to the config (or pass "
    "`--use_peft`), or train without AGL with `agl_enabled: false` (`--no_agl_enabled`)."
)
_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _raise_user_error(message: str) -> NoReturn:
    """``parser.error``: one line instead of argparse's usage dump (``--help`` still prints the usage)."""
    raise AGLUserError(message)


def option_keys(tokens: Sequence[str]) -> list[str]:
    """The keys of ``--key [value]`` / ``--key=value`` tokens (values are skipped)."""
    return [token[2:].split("=", 1)[0] for token in tokens if token.startswith("--")]


def parse_user_args(parser: Any, argv: Sequence[str] | None) -> tuple[list[Any], list[str], list[str]]:
    """``parser.parse_args_and_config``: the dataclasses, the config's and the command line's remaining tokens.

    User errors are :class:`AGLUserError`: a bad value, boolean or choice (argparse), an error raised while the
    configs validate themselves (AGL's checks and TRL's, e.g. bf16 on a CPU machine), an unreadable config file, an
    unknown ``agl_*`` key (with the closest valid one). Other remaining keys are left to the caller.
    """
    import yaml

    parser.error = _raise_user_error
    try:
        *parsed, config_remaining, cli_remaining = parser.parse_args_and_config(
            None if argv is None else list(argv), return_remaining_strings=True, separate_remaining_strings=True
        )
    except AGLUserError:
        raise
    except OSError as err:  # the --config file
        raise AGLUserError(f"cannot read the config file: {err}") from err
    except yaml.YAMLError as err:
        raise AGLUserError(f"the config file is not valid YAML: {err}") from err
    except (ValueError, TypeError) as err:  # raised by the dataclasses' __post_init__
        raise AGLUserError(str(err)) from err
    check_known_keys(option_keys([*config_remaining, *cli_remaining]))
    return parsed, list(config_remaining), list(cli_remaining)


def check_parsed(script_args: Any, training_args: Any, model_args: Any, *rest: Any) -> None:
    """Config-time checks across the parsed dataclasses (each validated itself): AGL needs ``use_peft``, a given
    artifact must cover the LoRA ``lora_target_modules``, and an online script's ``reward_funcs`` must resolve.

    A stock TRL config trains the full model; AGL does not switch PEFT on by itself (the run would then train other
    weights than the config says), it stops and says which key to add.
    """
    if hasattr(script_args, "reward_funcs"):  # the online scripts: their rewards, before any model loads
        from agl_trl.scripts._online import resolve_reward_funcs

        resolve_reward_funcs(script_args)
    if not getattr(training_args, "agl_enabled", True):
        return
    if not getattr(model_args, "use_peft", False):
        raise AGLUserError(NO_PEFT_MESSAGE)
    # the files were checked by the config; the LoRA targets and the model are ModelConfig's
    fisher_path = getattr(training_args, "agl_fisher_path", None)
    targets, model = getattr(model_args, "lora_target_modules", None), getattr(model_args, "model_name_or_path", None)
    check_sources(fisher_path, None, targets, "lora_target_modules", model=model, model_key="model_name_or_path")


def load_training_dataset(script_args: Any, dataset_args: Any) -> Any:
    """Load the dataset the way TRL's scripts do, plus local ``.jsonl/.json/.csv/.parquet`` files."""
    from datasets import load_dataset
    from trl import get_dataset

    if dataset_args.datasets:
        if script_args.dataset_name:
            print("[agl-trl] Both `datasets` and `dataset_name` are given: using `datasets`.")
        return get_dataset(dataset_args)
    name = script_args.dataset_name
    if not name:
        raise AGLUserError("Either `datasets` or `dataset_name` must be provided.")
    extension = os.path.splitext(name)[1].lower()
    if extension in _LOCAL_BUILDERS and not os.path.isfile(name):
        raise AGLUserError(
            f"Invalid `dataset_name`={name!r}: this local file does not exist (relative paths are read from "
            f"{os.getcwd()}); fix the path or give a Hub dataset id."
        )
    if os.path.isfile(name) and extension in _LOCAL_BUILDERS:
        return load_dataset(_LOCAL_BUILDERS[extension], data_files={script_args.dataset_train_split: name})
    return load_dataset(name, name=script_args.dataset_config, streaming=script_args.dataset_streaming)


def model_init_kwargs(training_args: Any, model_args: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        revision=model_args.model_revision,
        trust_remote_code=getattr(training_args, "trust_remote_code", False),
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    if getattr(training_args, "model_init_kwargs", None) is not None:
        kwargs.update(training_args.model_init_kwargs)
    return kwargs
