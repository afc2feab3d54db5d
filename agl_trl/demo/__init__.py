"""The ``make demo`` pipeline: an offline end-to-end AGL experiment on SmolLM2-135M-Instruct (docs/demo.md).

The settings and the benign task live in :mod:`agl_trl.experiments`; the names below are kept where users found them.
"""

from agl_trl.experiments.config import DemoConfig, default_config, demo_config, quick_config
from agl_trl.experiments.task import TaskItem, exact_match, generate_task, score

__all__ = [
    "DemoConfig",
    "TaskItem",
    "default_config",
    "demo_config",
    "exact_match",
    "generate_task",
    "quick_config",
    "score",
]
