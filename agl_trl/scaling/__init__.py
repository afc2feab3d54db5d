"""The forgetting scaling law: fit ``L(D) = L0 + A * D^beta`` per method, read run logs, plot, measure forgetting.

``fit``, ``io`` and ``cli`` need only numpy, ``plot`` matplotlib (the plot extra: without it the PNG is skipped);
``measure`` imports torch (lazily here). The project's own sweep that measures a log is lab code: benchmarks/lab/.
"""

from __future__ import annotations

from agl_trl.utils import lazy_getattr

_EXPORTS = {
    "PowerLawFit": "fit",
    "ScalingFitError": "fit",
    "fit_power_law": "fit",
    "fit_shared_exponents": "fit",
    "holdout_extrapolation": "holdout",
    "Extrapolation": "holdout",
    "amplitude_ratio": "fit",
    "RunRecord": "io",
    "RunLogError": "io",
    "read_run_log": "io",
    "write_run_log": "io",
    "aggregate": "io",
    "plot_scaling": "plot",
    "measure_forgetting": "measure",
    "forgetting_records": "measure",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, globals(), _EXPORTS)
