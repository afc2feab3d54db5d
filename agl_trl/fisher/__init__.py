"""Alignment-subspace estimation: the Fisher of each LoRA module at the aligned weights W0, and its artifact."""

from agl_trl.fisher.artifact import FisherArtifact, FisherArtifactError, ModuleFisher, model_fingerprint
from agl_trl.fisher.estimate import estimate_fisher
from agl_trl.fisher.probe import load_probe_records
from agl_trl.fisher.resolve import FISHER_SUBDIR, ResolvedArtifact, load_verified, resolve_artifact
from agl_trl.settings import FisherSettings

__all__ = [
    "FISHER_SUBDIR",
    "ResolvedArtifact",
    "load_verified",
    "resolve_artifact",
    "FisherArtifact",
    "FisherArtifactError",
    "FisherSettings",
    "ModuleFisher",
    "estimate_fisher",
    "load_probe_records",
    "model_fingerprint",
]
