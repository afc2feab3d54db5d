"""DriftCaps evaluation: data, greedy generation (re-exported from :mod:`agl_trl.generation`), refusal judges,
coherence, KL drift, metrics, reports, callback.

Submodules import torch/transformers lazily through their own imports; importing this package is cheap.
"""

from __future__ import annotations

from agl_trl.utils import lazy_getattr

# name -> submodule of this package, or an absolute module path (names that live in a lower layer)
_EXPORTS = {
    "PromptItem": "agl_trl.driftcaps",
    "load_driftcaps": "agl_trl.driftcaps",
    "load_refusal_templates": "agl_trl.driftcaps",
    "load_judge_examples": "agl_trl.driftcaps",
    "generate_responses": "agl_trl.generation",
    "generate": "agl_trl.generation",
    "Judge": "judges",
    "KeywordJudge": "judges",
    "ClassifierJudge": "judges",
    "make_judge": "judges",
    "check_coherence": "coherence",
    "kl_drift": "kl",
    "kl_on_generations": "kl",
    "wilson_interval": "metrics",
    "drift_reduction": "metrics",
    "write_report": "report",
    "load_prompts": "loaders",
    "load_hub_set": "loaders",
    "load_local": "loaders",
    "DriftCallback": "callback",
    "evaluate_models": "runner",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, globals(), _EXPORTS)
