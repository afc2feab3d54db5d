"""The scripts run by ``agl-trl <command>``, mirroring ``trl/scripts`` (``make_parser()`` + ``main(...)``).

``train``: every trainer kind of :data:`agl_trl.kinds.TRAINER_KINDS` (``python -m agl_trl.scripts.train sft --config
recipe.yaml``, or ``accelerate launch -m agl_trl.scripts.train sft ...`` for several processes); ``fisher``: estimate
and save a Fisher artifact without training.
"""
