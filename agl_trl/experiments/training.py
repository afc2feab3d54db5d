"""Train a LoRA on prompt/answer rows with TRL's ``SFTTrainer``: plainly, with AGL, or with a peer penalty.

One function (:func:`train_lora`) serves every experiment (the demo's safety and task fine-tunes, every peers run,
the scaling sweep), so methods differ only in the regulariser they add. Also here: the experiments' CPU threads
rule (:func:`auto_threads`) and the two meters every run records (step times, peak resident memory).
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from agl_trl.experiments.config import LoraSettings
from agl_trl.settings import AGLTrainingSettings


def auto_threads() -> int:
    """All cores this process may use (:func:`agl_trl.precision.default_threads`); ``--threads`` overrides it."""
    from agl_trl.precision import default_threads

    return default_threads()


def lora_config(lora: LoraSettings) -> Any:
    """The ``peft.LoraConfig`` of an experiment's LoRA settings (causal LM)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )  # fmt: skip


def step_timer(trainer: Any = None) -> Any:
    """A ``TrainerCallback`` whose ``times`` list holds the wall time of every optimizer step.

    With an online RL ``trainer`` (one with ``_generate_and_score_completions``: GRPO, RLOO), the time spent
    generating and scoring completions inside a step is measured apart (``generation`` per step) and left out of
    ``times``: the step-time ratio of AGL to plain training then compares what the regulariser adds to the
    optimisation, not to sampling, whose cost is the same with and without it.
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.generation: list[float] = []
            self._start = 0.0
            self._generating = 0.0

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self._generating = 0.0
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.times.append(time.perf_counter() - self._start - self._generating)
            self.generation.append(self._generating)

        def charge_generation(self, seconds: float) -> None:
            self._generating += seconds

    timer = StepTimer()
    generate = getattr(trainer, "_generate_and_score_completions", None)
    if generate is not None:

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return generate(*args, **kwargs)
            finally:
                timer.charge_generation(time.perf_counter() - started)

        trainer._generate_and_score_completions = timed  # the instance only; the class is untouched
    return timer


class PeakRSS:
    """Peak resident memory (bytes) above the level at entry, sampled every 10 ms in a thread."""

    def __enter__(self) -> PeakRSS:
        try:
            import psutil
        except ImportError as exc:  # pragma: no cover - accelerate and trl depend on it too
            raise ImportError(f'PeakRSS needs psutil: pip install "agl-trl[bench]" ({exc})') from exc

        self._process = psutil.Process()
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def extra(self) -> int:
        return self.peak - self.start


def agl_fields(
    settings: Any, fisher_dir: str | Path, fisher: Any = None, probe_file: str | Path | None = None
) -> dict[str, Any]:
    """The ``agl_*`` config fields of an AGL run with regulariser ``settings`` (an ``AGLSettings``) on the saved
    artifact ``fisher_dir``, which is read and never re-saved. ``fisher`` (``FisherSettings``) and ``probe_file``:
    the estimate's settings and probe records, the Fisher's first (``fisher.max_samples``), then the KL meter's
    held-out ones (:meth:`~agl_trl.experiments.Setup.agl_fields` passes the set-up's)."""
    from agl_trl.settings import FisherSettings

    fields = AGLTrainingSettings(regularizer=settings, fisher=fisher or FisherSettings()).to_prefixed()
    fields |= {"agl_fisher_path": str(fisher_dir), "agl_save_fisher": False}
    if probe_file is not None:
        fields["agl_probe_dataset"] = str(probe_file)
    return fields


def training_record(trainer: Any, timer: Any, seconds: float, out_dir: Path) -> dict[str, Any]:
    """The record of a finished run (step times, median of the steady steps, loss curve, ``agl/*`` metric curves,
    final loss, precision and threads; ``generation_seconds`` for the online trainers); removes the trainer's scratch
    folder."""
    history = [dict(h) for h in trainer.state.log_history]
    times = timer.times
    steady = times[1:] if len(times) > 2 else times
    record = {
        "steps": len(times),
        "seconds": round(seconds, 2),
        "step_seconds": [round(t, 4) for t in times],
        "step_seconds_median": statistics.median(steady) if steady else None,
        "loss_curve": [(h["step"], h["loss"]) for h in history if "loss" in h],
        "agl_curves": {
            key[4:]: [(h["step"], h[key]) for h in history if key in h]
            for key in sorted({k for h in history for k in h if k.startswith("agl/")})
        },
        "final_train_loss": next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None),
        "precision": "bf16" if trainer.args.bf16 else "fp32",
        "threads": torch.get_num_threads(),
    }
    if any(timer.generation):
        record["generation_seconds"] = [round(t, 4) for t in timer.generation]
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    return record


def experiment_training_args(out_dir: Path, *, steps: int, learning_rate: float, seed: int, bf16: bool) -> dict:
    """The TRL arguments every experiment fine-tune shares (SFT and GRPO): one micro-batch per optimizer step, on
    the CPU, seeded, nothing saved or reported."""
    from agl_trl.config import checkpointing_arguments

    return {
        "output_dir": str(out_dir / "trainer"),
        "max_steps": steps,
        "gradient_accumulation_steps": 1,
        "learning_rate": learning_rate,
        "logging_steps": max(1, steps // 16),
        "save_strategy": "no",
        "report_to": "none",
        "seed": seed,
        "data_seed": seed,
        "use_cpu": True,
        "bf16": bf16,
        **checkpointing_arguments(False),  # TRL's default recomputes every forward: ~1/3 more work, no memory to save
        "dataloader_num_workers": 0,
    }


def train_timed(trainer: Any, timer: Any, callbacks: Sequence[Any], out_dir: Path) -> dict[str, Any]:
    """Train ``trainer`` with the step ``timer`` (:func:`step_timer`) and ``callbacks``; its training record."""
    trainer.add_callback(timer)
    for callback in callbacks:
        trainer.add_callback(callback)
    started = time.perf_counter()
    trainer.train()
    return training_record(trainer, timer, time.perf_counter() - started, out_dir)


def train_lora(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    out_dir: Path,
    *,
    lora: LoraSettings,
    seed: int,
    steps: int,
    learning_rate: float,
    batch_size: int,
    agl: dict[str, Any] | None = None,
    penalty: Any = None,
    callbacks: Sequence[Any] = (),
    training_overrides: dict[str, Any] | None = None,
    progress: bool = True,
    precision: str = "auto",
) -> tuple[Any, dict[str, Any]]:
    """LoRA SFT of ``model`` on prompt/answer rows with ``trl.SFTTrainer`` (``AGLSFTTrainer`` when ``agl``).

    ``agl``: ``agl_*`` config fields (:func:`agl_fields`). ``penalty``: instead, any ``penalty(model, step) -> (loss,
    metrics)`` (the peers of :mod:`agl_trl.baselines`), added through the same mixin
    (:func:`agl_trl.trainers.enable_penalty`). ``callbacks``: extra ``TrainerCallback``s (the scaling sweep measures
    forgetting from one). ``training_overrides``: ``SFTConfig`` fields that replace the defaults below.
    ``precision``: ``auto`` (bf16 only on a CPU with fast bf16, :func:`agl_trl.precision.use_bf16`), ``fp32`` or
    ``bf16``. Returns (trained PeftModel, training record: step times, loss curve, ``agl/*`` metric curves,
    precision and threads).
    """
    if agl is not None and penalty is not None:
        raise ValueError("train_lora: give either `agl` settings or a `penalty`, not both")
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from agl_trl.config import AGLSFTConfig
    from agl_trl.precision import check_precision, resolve_bf16
    from agl_trl.trainers import AGLSFTTrainer, enable_penalty

    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["answer"]}],
            }
            for r in rows
        ]
    )
    bf16 = resolve_bf16(None if precision == "auto" else check_precision(precision) == "bf16", on_cpu=True)
    kwargs: dict[str, Any] = {
        **experiment_training_args(out_dir, steps=steps, learning_rate=learning_rate, seed=seed, bf16=bf16),
        "per_device_train_batch_size": batch_size,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "max_length": 256,
        "disable_tqdm": not progress,
        **(training_overrides or {}),
    }
    set_seed(seed)
    timer = step_timer()
    config_cls, trainer_cls = (SFTConfig, SFTTrainer) if agl is None else (AGLSFTConfig, AGLSFTTrainer)
    args = config_cls(**kwargs, **(agl or {}))
    trainer = trainer_cls(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(lora)
    )
    check_rows_kept(len(rows), len(trainer.train_dataset), kwargs["max_length"])
    if penalty is not None:
        enable_penalty(trainer, penalty)
    return trainer.model, train_timed(trainer, timer, callbacks, out_dir)


def check_rows_kept(n_rows: int, n_kept: int, max_length: int) -> None:
    """TRL drops a row whose answer has no token within ``max_length`` (a prompt too long for the tokenizer): an
    error when every row is dropped, a warning when some are, naming the fix, instead of TRL's ``num_samples=0`` or
    a silently smaller task."""
    if n_kept == n_rows:
        return
    fix = (
        f"their prompts are too long for max_length={max_length} with this tokenizer; pass "
        "training_overrides={'max_length': N} with a larger N, or shorten the task's prompts"
    )
    if n_kept == 0:
        raise ValueError(f"train_lora: none of the {n_rows} task rows has an answer token left: {fix}")
    warnings.warn(
        f"train_lora: {n_rows - n_kept} of {n_rows} task rows dropped (no answer token left): {fix}", stacklevel=2
    )


__all__ = [
    "PeakRSS",
    "agl_fields",
    "auto_threads",
    "check_rows_kept",
    "experiment_training_args",
    "lora_config",
    "step_timer",
    "train_lora",
    "train_timed",
    "training_record",
]
