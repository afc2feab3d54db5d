"""EWC on the LoRA update: ``lambda / 2 * sum_m sum_ij F_diag[m]_ij dW[m]_ij^2`` (the EWC paper's form; lambda per nat of
estimated KL, as AGL's).

Follows "Overcoming catastrophic forgetting in neural networks" (Kirkpatrick et al., PNAS 2017): a quadratic penalty
towards the old (aligned) weights weighted by the diagonal of the Fisher of the old task, here the alignment
behaviour on probe prompts. The penalty is exactly :class:`~agl_trl.regularizers.AGLRegularizer` bound to a *diagonal*
Fisher artifact with ``lambda_task = lambda_collision = 0`` (with a diagonal artifact the regulariser has no
decomposition; docs/method.md, "Degeneracies"), so this module only configures it: the Fisher comes from
:func:`agl_trl.fisher.estimate_fisher` with ``estimator="diagonal"`` (F_diag = E_t[g_t^2 x_t^2], nats units, sampled
targets by default: the true Fisher, as in the paper), and the logged ``r_align`` is sum F_diag dW^2.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agl_trl.baselines.common import check_lambda


def ewc_fisher_settings(settings: Any = None, **overrides: Any) -> Any:
    """:class:`~agl_trl.fisher.FisherSettings` for EWC: ``settings`` (or the defaults) with ``estimator="diagonal"``."""
    from agl_trl.fisher import FisherSettings

    base = settings if settings is not None else FisherSettings()
    return replace(base, **{**overrides, "estimator": "diagonal"})


def ewc_penalty(artifact: Any, lambda_ewc: float = 1.0, seed: int = 0) -> Any:
    """The EWC penalty on a diagonal Fisher artifact: an :class:`~agl_trl.regularizers.AGLRegularizer`.

    Raises:
        ValueError: the artifact is not diagonal (a K-FAC artifact gives AGL's R_A, not EWC).
    """
    from agl_trl.regularizers import AGLRegularizer, AGLSettings

    estimator = getattr(artifact, "estimator", None)
    if estimator != "diagonal":
        raise ValueError(
            f"EWC needs a diagonal Fisher artifact, got estimator={estimator!r}. Estimate one with "
            "`estimate_fisher(..., ewc_fisher_settings(...))` (agl_fisher_estimator: diagonal)."
        )
    settings = AGLSettings(lambda_align=check_lambda("lambda_ewc", lambda_ewc), lambda_task=0.0, lambda_collision=0.0)
    return AGLRegularizer(artifact, settings, seed=seed)
