"""The experiment harness behind the demo and the lab's protocols (benchmarks/lab/: peers, GRPO, scaling sweep).

One set-up (:func:`prepare_setup`: aligned model, its answers, its Fisher, the task), one way to train a LoRA with or
without a regulariser (:func:`train_lora`), one way to measure a model (:func:`evaluate_generations`,
:func:`kl_to_aligned`), cached stages (:class:`StageRunner`) and a resumable results log (:class:`ResultsLog`).
"""

from agl_trl.experiments.aligned import ModelLoader, default_loader, model_loader
from agl_trl.experiments.config import (
    DemoConfig,
    ExperimentConfig,
    apply_overrides,
    default_config,
    demo_config,
    quick_config,
    tiny_config,
)
from agl_trl.experiments.log import ResultsLog, settings_key
from agl_trl.experiments.measure import (
    evaluate_generations,
    kl_to_aligned,
    read_json,
    response_metrics,
    task_curve_callback,
    write_json,
)
from agl_trl.experiments.setup import (
    Setup,
    eval_stage_key,
    eval_subset_of,
    prepare_setup,
    probe_items,
    probe_parts,
    probe_prompts,
    stratified_subset,
)
from agl_trl.experiments.shipped import DEFAULT_SETUP, ShippedSetup, ShippedSetupError, shipped_setup
from agl_trl.experiments.stages import StageRunner, stage_key
from agl_trl.experiments.task import TaskItem, generate_task, score, task_splits
from agl_trl.experiments.training import PeakRSS, agl_fields, auto_threads, lora_config, train_lora

__all__ = [
    "DEFAULT_SETUP",
    "DemoConfig",
    "ExperimentConfig",
    "ModelLoader",
    "PeakRSS",
    "ResultsLog",
    "Setup",
    "ShippedSetup",
    "ShippedSetupError",
    "StageRunner",
    "TaskItem",
    "agl_fields",
    "apply_overrides",
    "auto_threads",
    "default_config",
    "default_loader",
    "demo_config",
    "eval_stage_key",
    "eval_subset_of",
    "evaluate_generations",
    "generate_task",
    "kl_to_aligned",
    "lora_config",
    "model_loader",
    "prepare_setup",
    "probe_items",
    "probe_parts",
    "probe_prompts",
    "quick_config",
    "read_json",
    "response_metrics",
    "score",
    "settings_key",
    "shipped_setup",
    "stage_key",
    "stratified_subset",
    "task_curve_callback",
    "task_splits",
    "tiny_config",
    "train_lora",
    "write_json",
]
