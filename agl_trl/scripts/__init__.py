"""Training scripts mirroring ``trl/scripts`` (``make_parser()`` + ``main(...)``), run by ``agl-trl <command>``.

Each is also runnable directly: ``python -m agl_trl.scripts.sft --config recipe.yaml`` (one process) or
``accelerate launch -m agl_trl.scripts.sft --config recipe.yaml`` (several).
"""

TRAINING_SCRIPTS = ("sft", "dpo", "kto", "orpo", "cpo", "grpo", "rloo")
