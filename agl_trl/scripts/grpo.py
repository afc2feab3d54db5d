"""AGL GRPO training script, mirroring `trl/scripts/grpo.py` with `AGLGRPOTrainer` and `AGLGRPOConfig`.

The script arguments are TRL's `GRPOScriptArguments`: `reward_funcs` takes TRL's CLI names (`accuracy_reward`,
`think_format_reward`, ...) or a dotted import path, `reward_model_name_or_path` a reward model
(`agl_trl/scripts/_online.py`).

```bash
agl-trl grpo --config recipes/trl/<recipe>.yaml                    # one process, or several with --num_processes
python -m agl_trl.scripts.grpo --config recipe.yaml --agl_kl_budget 0.05      # CLI overrides YAML
accelerate launch -m agl_trl.scripts.grpo --config recipe.yaml
```
"""

from __future__ import annotations

import argparse
from typing import Any

from agl_trl.scripts._common import make_training_parser, run_training, script_main


def main(script_args: Any, training_args: Any, model_args: Any, dataset_args: Any) -> Any:
    return run_training("grpo", script_args, training_args, model_args, dataset_args)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> Any:
    return make_training_parser("grpo", subparsers=subparsers, prog=prog)


if __name__ == "__main__":
    script_main("grpo")
