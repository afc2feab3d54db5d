"""Estimate and save a Fisher artifact for a model + LoRA config, without training.

Reads the same recipe as training (unrelated keys such as ``learning_rate`` are ignored), so

```bash
agl-trl fisher --config recipes/trl/llama3.1-8b-instruct-qlora-sft.yaml     # -> <output_dir>/agl_fisher/
agl-trl sft    --config recipes/trl/llama3.1-8b-instruct-qlora-sft.yaml     # reuses it
agl-trl fisher --config recipe.yaml --fisher_output_dir artifacts/llama31   # elsewhere (then agl_fisher_path)
accelerate launch --num_processes 4 -m agl_trl.scripts.fisher --config recipe.yaml   # probe sharded over ranks
```
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agl_trl.config import AGLArgs
from agl_trl.settings import AGLTrainingSettings, AGLUserError


@dataclass
class FisherScriptArguments:
    """Where the artifact goes, and how the model is loaded."""

    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Training output directory of the recipe: the artifact is written to <output_dir>/agl_fisher/."
        },
    )
    fisher_output_dir: str | None = field(
        default=None, metadata={"help": "Write the artifact here instead of <output_dir>/agl_fisher/."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})
    use_cpu: bool = field(default=False, metadata={"help": "Estimate on CPU even when a GPU is available."})


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> Any:
    from trl import ModelConfig, TrlParser

    dataclass_types = (FisherScriptArguments, AGLArgs, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("fisher", help="Estimate a Fisher artifact", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


def artifact_directory(script_args: FisherScriptArguments) -> Path:
    if script_args.fisher_output_dir:
        return Path(script_args.fisher_output_dir)
    if script_args.output_dir:
        from agl_trl.fisher import FISHER_SUBDIR

        return Path(script_args.output_dir) / FISHER_SUBDIR
    raise AGLUserError(
        "Say where to write the artifact: `--output_dir` (-> <output_dir>/agl_fisher/) or `--fisher_output_dir`."
    )


def main(script_args: FisherScriptArguments, agl_args: AGLArgs, model_args: Any) -> Path:
    """Load the model (quantised if asked), add the LoRA adapters of the recipe, estimate, save on the main process."""
    import torch
    from accelerate import PartialState
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config, get_quantization_config

    from agl_trl.fisher import resolve_artifact

    if not model_args.model_name_or_path:
        raise AGLUserError("`model_name_or_path` is required.")
    peft_config = get_peft_config(model_args)
    if peft_config is None:
        raise AGLUserError(
            "The Fisher is estimated per LoRA module: pass the recipe's LoRA config (`--use_peft`, `lora_r`, "
            "`lora_target_modules`, ...)."
        )
    if agl_args.agl_probe_dataset is None:
        raise AGLUserError("Set `agl_probe_dataset` (e.g. 'driftcaps' or a local .jsonl file).")
    directory = artifact_directory(script_args)
    state = PartialState(cpu=script_args.use_cpu)
    quantization_config = get_quantization_config(model_args)
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    kwargs: dict[str, Any] = dict(
        revision=model_args.model_revision,
        trust_remote_code=script_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=dtype,
    )
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": state.device.index or 0} if state.device.type == "cuda" else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    if quantization_config is None:
        model.to(state.device)
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=script_args.trust_remote_code,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_model = get_peft_model(model, peft_config)

    settings = AGLTrainingSettings.from_prefixed(agl_args, none_is_default=False)
    resolved = resolve_artifact(
        peft_model,
        tokenizer,
        settings.fisher,
        probe=settings.artifact.probe_dataset,
        probe_split=settings.artifact.probe_split,
        save_to=directory,
        is_main=state.is_main_process,
    )
    if state.is_main_process:
        tokens = resolved.artifact.metadata.get("tokens")
        print(
            f"[agl-trl] Fisher artifact ({len(resolved.artifact.modules)} modules, {tokens} probe tokens) saved to "
            f"{directory}"
        )
    state.wait_for_everyone()
    return directory


def script_main(argv: list[str] | None = None) -> Path:
    parser = make_parser()
    script_args, agl_args, model_args, remaining = parser.parse_args_and_config(
        args=argv, return_remaining_strings=True
    )
    if remaining:
        print(f"[agl-trl fisher] ignoring keys that only matter for training: {' '.join(map(str, remaining))}")
    return main(script_args, agl_args, model_args)


if __name__ == "__main__":
    script_main()
