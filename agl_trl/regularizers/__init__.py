"""AGL regularisers: pure maths in :mod:`.functional`, the trainer-facing :class:`AGLRegularizer`."""

from agl_trl.regularizers.regularizer import METRIC_NAMES, AGLRegularizer
from agl_trl.settings import AGLSettings

__all__ = ["METRIC_NAMES", "AGLRegularizer", "AGLSettings"]
