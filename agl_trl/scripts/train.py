"""AGL training script, mirroring TRL's ``trl/scripts/{sft,dpo,kto,grpo,rloo}.py`` with the AGL trainer and config of
a trainer kind (a row of :data:`agl_trl.kinds.TRAINER_KINDS`: sft, dpo, kto, orpo, cpo, grpo, rloo).

```bash
agl-trl sft --config recipes/trl/<recipe>.yaml                   # one process, or several with --num_processes
python -m agl_trl.scripts.train sft --config recipe.yaml --agl_lambda_align 0.5   # CLI overrides YAML
accelerate launch -m agl_trl.scripts.train dpo --config recipe.yaml
```

What differs between the kinds is data in their row: the script arguments (the online kinds: TRL's
``GRPOScriptArguments`` / ``RLOOScriptArguments`` with ``reward_funcs``, resolved in ``agl_trl/scripts/_online.py``),
whether the trainer takes a ``quantization_config`` (the ``trl.experimental`` ones take it through
``model_init_kwargs``) and whether ``ignore_bias_buffers`` is honoured (DPO).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from agl_trl.kinds import KINDS_BY_NAME, TrainerKind, trainer_kind
from agl_trl.scripts._common import (
    NO_PEFT_MESSAGE,
    check_parsed,
    load_training_dataset,
    model_init_kwargs,
    parse_user_args,
)
from agl_trl.setting_rules import AGLUserError
from agl_trl.utils import import_object


def config_class(kind: TrainerKind) -> type:
    """``AGL<TRL>Config`` of ``kind`` (``agl_trl.config``)."""
    import agl_trl.config

    return getattr(agl_trl.config, kind.config_name)


def trainer_class(kind: TrainerKind) -> type:
    """``AGL<TRL>Trainer`` of ``kind`` (``agl_trl.trainers``)."""
    import agl_trl.trainers

    return getattr(agl_trl.trainers, kind.trainer_name)


def make_parser(kind: str, subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> Any:
    """``TrlParser`` over ``(<kind's script arguments>, AGL<Kind>Config, ModelConfig, DatasetMixtureConfig)``."""
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser

    row = trainer_kind(kind)
    dataclass_types = (import_object(row.script_arguments), config_class(row), ModelConfig, DatasetMixtureConfig)
    if subparsers is not None:
        return subparsers.add_parser(
            kind, help=f"Run the AGL {kind.upper()} training script", dataclass_types=dataclass_types
        )
    return TrlParser(dataclass_types, prog=prog)


def main(kind: str, script_args: Any, training_args: Any, model_args: Any, dataset_args: Any) -> Any:
    """Build the AGL trainer of ``kind`` from parsed arguments, train, save; returns the trainer."""
    import transformers
    from packaging.version import Version
    from trl import get_peft_config, get_quantization_config

    row = trainer_kind(kind)

    ################
    # Model
    ################
    if not model_args.model_name_or_path:
        raise AGLUserError("`model_name_or_path` is required (a Hub id or a local model directory).")
    peft_config = get_peft_config(model_args)
    if peft_config is None and getattr(training_args, "agl_enabled", True):
        raise AGLUserError(NO_PEFT_MESSAGE)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    quantization_config = get_quantization_config(model_args)
    trainer_kwargs: dict[str, Any] = {}
    if row.takes_quantization_config:
        trainer_kwargs["quantization_config"] = quantization_config
    elif quantization_config is not None:  # the trainer loads the model from model_init_kwargs
        training_args.model_init_kwargs["quantization_config"] = quantization_config
        training_args.model_init_kwargs.setdefault("device_map", _kbit_device_map())

    ################
    # Dataset
    ################
    dataset = load_training_dataset(script_args, dataset_args)

    ################
    # Rewards (online RL)
    ################
    if row.rewards:
        from agl_trl.scripts._online import resolve_reward_funcs

        trainer_kwargs["reward_funcs"] = resolve_reward_funcs(script_args)

    ################
    # Training
    ################
    trainer = trainer_class(row)(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None,
        peft_config=peft_config,
        **trainer_kwargs,
    )
    if row.ignore_bias_buffers and getattr(script_args, "ignore_bias_buffers", False):
        import torch

        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]

    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.print("Training completed.")
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    if Version(transformers.__version__) >= Version("5.18.0") and hasattr(trainer, "end"):
        trainer.end()
    return trainer


def _kbit_device_map() -> Any:
    from accelerate import PartialState

    state = PartialState()
    return {"": state.local_process_index} if state.device.type != "cpu" else {"": "cpu"}


def script_main(argv: list[str] | None = None) -> Any:
    """Entry point of ``python -m agl_trl.scripts.train <kind> ...``: user errors print one line and exit with
    status 2."""
    try:
        return _script_main(sys.argv[1:] if argv is None else argv)
    except AGLUserError as err:
        if os.environ.get("AGL_TRL_TRACEBACK"):
            raise
        print(f"agl-trl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _script_main(argv: list[str]) -> Any:
    if not argv or argv[0] not in KINDS_BY_NAME:
        raise AGLUserError(
            f"give the trainer kind first: `python -m agl_trl.scripts.train KIND --config ...` with KIND one of "
            f"{', '.join(KINDS_BY_NAME)} (got {argv[0] if argv else 'nothing'!r})."
        )
    kind, rest = argv[0], argv[1:]
    parsed, _, cli_remaining = parse_user_args(make_parser(kind), rest)
    # the config's other keys are accelerate's (``agl-trl`` launched this script); the command line must be known
    if cli_remaining:
        raise AGLUserError(f"unknown arguments: {' '.join(cli_remaining)} (see `--help`).")
    check_parsed(*parsed)
    return main(kind, *parsed)


if __name__ == "__main__":
    script_main()
