"""What the online RL kinds (``agl-trl grpo`` / ``agl-trl rloo``: ``rewards`` in their row of
:data:`agl_trl.kinds.TRAINER_KINDS`) add to the training script: their reward functions, resolved exactly as
``trl grpo`` / ``trl rloo`` resolve them (``trl/scripts/grpo.py``).

``reward_funcs`` takes TRL's CLI names (``accuracy_reward``, ``reasoning_accuracy_reward``, ``think_format_reward``,
``get_soft_overlong_punishment`` with TRL's values ``max_completion_len=1280, soft_punish_cache=256``) or a dotted
import path (``my_lib.rewards.custom_reward``, imported with the working directory on ``sys.path``, as TRL does);
``reward_model_name_or_path`` adds a reward model first. Names are checked at config time, before any model loads.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from agl_trl.setting_rules import AGLUserError

TRL_REWARD_NAMES = (
    "accuracy_reward",
    "reasoning_accuracy_reward",
    "think_format_reward",
    "get_soft_overlong_punishment",
)


def _trl_reward(name: str) -> Any:
    from trl import rewards

    if name == "get_soft_overlong_punishment":  # the values trl's scripts use
        return rewards.get_soft_overlong_punishment(max_completion_len=1280, soft_punish_cache=256)
    return getattr(rewards, name)


def resolve_reward_funcs(script_args: Any) -> list[Any]:
    """The ``reward_funcs`` argument of the trainer: the reward model path (if any), then each named function.

    An unknown name, a module that does not import or a missing attribute is an :class:`AGLUserError` naming the
    key, the value and the accepted forms; no reward at all is one too (the trainer would have nothing to optimise).
    """
    funcs: list[Any] = []
    if getattr(script_args, "reward_model_name_or_path", None):
        funcs.append(script_args.reward_model_name_or_path)
    for name in getattr(script_args, "reward_funcs", None) or []:
        if name in TRL_REWARD_NAMES:
            funcs.append(_trl_reward(name))
            continue
        if "." not in name:
            raise AGLUserError(
                f"Invalid `reward_funcs` entry {name!r}: expected one of {', '.join(TRL_REWARD_NAMES)} or a dotted "
                "import path (e.g. 'my_lib.rewards.custom_reward')."
            )
        module_path, attribute = name.rsplit(".", 1)
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as trl's scripts do: rewards next to the recipe
        try:
            module = importlib.import_module(module_path)
        except ImportError as err:
            raise AGLUserError(
                f"Invalid `reward_funcs` entry {name!r}: module {module_path!r} does not import ({err}); check the "
                f"path (the working directory {os.getcwd()} is on sys.path)."
            ) from err
        if not callable(getattr(module, attribute, None)):
            raise AGLUserError(
                f"Invalid `reward_funcs` entry {name!r}: {module_path!r} has no callable {attribute!r}; name a "
                "function `f(prompts, completions, **kwargs) -> list[float]`."
            )
        funcs.append(getattr(module, attribute))
    if not funcs:
        raise AGLUserError(
            "Online RL needs a reward: set `reward_funcs` (e.g. `reward_funcs: [think_format_reward]` or a dotted "
            "path) and/or `reward_model_name_or_path`."
        )
    return funcs


__all__ = ["TRL_REWARD_NAMES", "resolve_reward_funcs"]
