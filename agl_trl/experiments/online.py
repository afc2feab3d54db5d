"""Online RL in the experiment harness: the task's verifiable reward and a GRPO LoRA run (plain or AGL).

* :func:`task_reward` -- the demo's task scored by exact match (:func:`~agl_trl.experiments.task.exact_match`), as a
  TRL reward function: 1.0 for a completion that matches the row's ``answer``, else 0.0. Usable by dotted path in
  recipes (``reward_funcs: [agl_trl.experiments.online.task_reward]``).
* :func:`task_similarity_reward` -- partial credit on the same task: the similarity of the normalised completion to
  the answer (1.0 exactly when :func:`task_reward` is 1). A model that scores 0% exact match (the aligned model
  does) gives every completion reward 0 under :func:`task_reward`, hence zero advantage and no GRPO update; the
  similarity still ranks near misses, so the scenario has a learning signal. Still computed from the reference
  answer only (verifiable), and the reported task metric stays the greedy exact match.
* :func:`train_grpo` -- the GRPO counterpart of :func:`~agl_trl.experiments.train_lora`: the same LoRA, seed,
  step timer and training record, with ``trl.GRPOTrainer`` (``AGLGRPOTrainer`` when ``agl``) on the task's prompts.
  The step times exclude generation (:func:`~agl_trl.experiments.training.step_timer` with the trainer), so the
  step-time ratio AGL / plain charges the regulariser with what it adds to the optimisation, not with sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agl_trl.experiments.config import LoraSettings
from agl_trl.experiments.task import exact_match, normalize_answer


def _completion_text(completion: Any) -> str:
    """A completion as text: TRL passes strings for standard prompts, message lists for conversational ones."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content", "") for message in completion)


def task_reward(completions: Sequence[Any], answer: Sequence[str], **kwargs: Any) -> list[float]:
    """1.0 where the completion is the row's ``answer`` (the task's exact match), else 0.0."""
    return [float(exact_match(_completion_text(c), a)) for c, a in zip(completions, answer, strict=True)]


def task_similarity_reward(completions: Sequence[Any], answer: Sequence[str], **kwargs: Any) -> list[float]:
    """``difflib`` similarity ratio in [0, 1] of the normalised completion and ``answer`` (1.0 iff exact match)."""
    from difflib import SequenceMatcher

    return [
        SequenceMatcher(None, normalize_answer(_completion_text(c)), normalize_answer(a)).ratio()
        for c, a in zip(completions, answer, strict=True)
    ]


REWARDS = {"exact": task_reward, "similarity": task_similarity_reward}


def task_prompt_rows(rows: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """The task's ``{"prompt", "answer"}`` rows as GRPO data: a conversational prompt and the answer column that
    :func:`task_reward` reads."""
    return [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in rows]


def train_grpo(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    out_dir: Path,
    *,
    lora: LoraSettings,
    seed: int,
    steps: int,
    learning_rate: float,
    prompts_per_step: int,
    num_generations: int,
    max_completion_length: int,
    reward: str = "exact",
    agl: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
    training_overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """GRPO LoRA of ``model`` on the task's prompt/answer ``rows``, rewarded by ``reward`` (a key of :data:`REWARDS`:
    :func:`task_reward` or :func:`task_similarity_reward`).

    Each optimizer step samples ``num_generations`` completions (``max_completion_length`` tokens at most) for each
    of ``prompts_per_step`` prompts, in one micro-batch. ``agl``: ``agl_*`` config fields
    (:func:`~agl_trl.experiments.agl_fields`). Returns (trained PeftModel, training record:
    :func:`~agl_trl.experiments.training.training_record` plus ``generation_seconds`` and the reward curve).
    """
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from agl_trl.config import AGLGRPOConfig
    from agl_trl.experiments.training import experiment_training_args, lora_config, step_timer, train_timed
    from agl_trl.precision import resolve_bf16
    from agl_trl.trainers import AGLGRPOTrainer

    bf16 = resolve_bf16(None, on_cpu=True)
    kwargs: dict[str, Any] = {
        **experiment_training_args(out_dir, steps=steps, learning_rate=learning_rate, seed=seed, bf16=bf16),
        "per_device_train_batch_size": prompts_per_step * num_generations,
        "num_generations": num_generations,
        "max_completion_length": max_completion_length,
        "beta": 0.0,
        "lr_scheduler_type": "constant",
        "disable_tqdm": not progress,
        **(training_overrides or {}),
    }
    if reward not in REWARDS:
        raise ValueError(f"train_grpo: reward {reward!r} is not one of {sorted(REWARDS)}")
    set_seed(seed)
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if agl is None else (AGLGRPOConfig, AGLGRPOTrainer)
    trainer = trainer_cls(
        model=model, reward_funcs=REWARDS[reward], args=config_cls(**kwargs, **(agl or {})),
        train_dataset=Dataset.from_list(task_prompt_rows(rows)), processing_class=tokenizer,
        peft_config=lora_config(lora),
    )  # fmt: skip
    record = train_timed(trainer, step_timer(trainer), callbacks, out_dir)
    history = trainer.state.log_history
    record["reward_curve"] = [(h["step"], h["reward"]) for h in history if "reward" in h]
    return trainer.model, record


__all__ = ["REWARDS", "task_prompt_rows", "task_reward", "task_similarity_reward", "train_grpo"]
