"""What a recipe run may print: :func:`recipe_warnings` finds the warning lines a run must not print (AGL's own and
Python warnings outside :data:`TOLERATED_WARNINGS`); tests/test_recipes.py and tests/test_wheel_install.py check
their runs with it."""

from __future__ import annotations

import re

# Python warnings a recipe run may print (the `file:line: Category: message` lines of the warnings module, which
# Axolotl also logs as `[WARNING] [py.warnings] ...`): third-party deprecations that no recipe key avoids, each as
# (category, text in the message, why tolerated). Every other Python warning fails the run.
# (transformers 5.23's "`gradient_checkpointing` is deprecated" is not tolerated: the recipes keep the key 5.20.1 reads
# and the AGL configs pass it on under 5.23's name, agl_trl.config.adopt_checkpointing_names.)
TOLERATED_WARNINGS = (
    (
        "FutureWarning",
        "`is_gradient_checkpointing` is deprecated",
        "peft 0.21 reads this deprecated transformers 5.23 property when it wraps the model (peft_model.py:184); "
        "peft 0.22 no longer does",
    ),
)
PYTHON_WARNING = re.compile(r"\b([A-Z]\w*Warning): (.*)")
WARNING_LEVEL = re.compile(r"\bWARNING\b|\bERROR\b")  # `agl-trl` and Axolotl both name a warning's level


def recipe_warnings(output: str) -> list[str]:
    """The lines of a recipe run's ``output`` that are warnings it must not print.

    * AGL's own: its log records all start with ``AGL``, and a warning's line names its level (``WARNING AGL: ...``
      in ``agl-trl`` runs, ``[WARNING]`` under Axolotl); AGL's INFO lines (start-up plan, summary) are fine;
    * Python warnings of any category, except :data:`TOLERATED_WARNINGS`.

    Other libraries' *log* warnings are not checked: they describe the machine, not the recipe (DeepSpeed's "Setting
    accelerator to CPU", torchao's CUDA kernels that do not load, torch's ``W...`` pytree deprecation notes,
    Axolotl's Hugging Face token check and its advice to preprocess the data before training).
    """
    found = []
    for line in output.splitlines():
        if "AGL" in line and WARNING_LEVEL.search(line):
            found.append(line)
        elif match := PYTHON_WARNING.search(line):
            category, message = match.groups()
            if not any(category == c and text in message for c, text, _ in TOLERATED_WARNINGS):
                found.append(line)
    return found
