"""The saved alignment subspace: a Fisher artifact (safetensors tensors + JSON metadata).

Estimated once per aligned model, reused across runs. Loading verifies integrity (checksum), and ``verify(model)``
checks that the artifact belongs to the model and covers its LoRA modules, failing with a message that names the
problem and the fix instead of silently regularising towards the wrong subspace.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agl_trl.parallel.sharding import readable
from agl_trl.preflight import FINGERPRINT_CONFIG_KEYS as _FINGERPRINT_CONFIG_KEYS
from agl_trl.preflight import FORMAT_VERSION, METADATA_FILE, TENSORS_FILE
from agl_trl.setting_rules import AGLUserError
from agl_trl.utils import files_sha256


class FisherArtifactError(AGLUserError):
    """A Fisher artifact cannot be used as asked; the message says what is wrong and how to fix it."""


@dataclass
class ModuleFisher:
    """The Fisher of one LoRA-adapted linear module at W0.

    K-FAC (``estimator == "kfac"``): F ~= S_out (x) S_in with the kept eigenpairs (``q_out``, ``eig_out``),
    (``q_in``, ``eig_in``) and the full traces (for the discarded tail and the mean curvature).
    Diagonal (``"diagonal"``): ``diag`` holds E_t[(g_t x_t^T)^2] per weight, (d_out, d_in).
    """

    d_out: int
    d_in: int
    trace_out: float
    trace_in: float
    q_out: torch.Tensor | None = None
    eig_out: torch.Tensor | None = None
    q_in: torch.Tensor | None = None
    eig_in: torch.Tensor | None = None
    diag: torch.Tensor | None = None

    @property
    def k_out(self) -> int:
        return 0 if self.eig_out is None else int(self.eig_out.numel())

    @property
    def k_in(self) -> int:
        return 0 if self.eig_in is None else int(self.eig_in.numel())

    @property
    def tail_out(self) -> float:
        """Mean S_out eigenvalue outside the kept directions (0 when all are kept)."""
        rest = self.d_out - self.k_out
        kept = 0.0 if self.eig_out is None else float(self.eig_out.sum())
        return max(self.trace_out - kept, 0.0) / rest if rest > 0 else 0.0

    @property
    def tail_in(self) -> float:
        rest = self.d_in - self.k_in
        kept = 0.0 if self.eig_in is None else float(self.eig_in.sum())
        return max(self.trace_in - kept, 0.0) / rest if rest > 0 else 0.0

    @property
    def mean_curvature(self) -> float:
        """h = tr(S_out) tr(S_in) / (d_out d_in): the average Fisher eigenvalue, the trust region's unit."""
        return self.trace_out * self.trace_in / (self.d_out * self.d_in)

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"q_out": self.q_out, "eig_out": self.eig_out, "q_in": self.q_in, "eig_in": self.eig_in}
        named["diag"] = self.diag
        return {k: v for k, v in named.items() if v is not None}


def _embedding_weight(model: nn.Module) -> torch.Tensor | None:
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    weight = getattr(embedding, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Identify the base model: architecture numbers from its config plus statistics of its input embedding.

    The embedding is never quantised by QLoRA, so an artifact estimated in fp32/bf16 matches the same model
    loaded in 4-bit, while a different checkpoint of the same architecture does not.
    """
    config = getattr(model, "config", None)
    base = getattr(model, "get_base_model", None)
    if callable(base):
        config = getattr(base(), "config", config)
    fingerprint: dict[str, Any] = {}
    if config is not None:
        for key in _FINGERPRINT_CONFIG_KEYS:
            value = getattr(config, key, None)
            if value is not None:
                fingerprint[key] = value
        fingerprint["name_or_path"] = str(getattr(config, "_name_or_path", "") or "")
    weight = _embedding_weight(model)
    if weight is not None:
        # FSDP2 / ZeRO-3: the whole embedding, gathered for this read (as every forward gathers it)
        with readable(weight) as weight:
            # 16 entries spread over the vocabulary (row 0 is often an all-zero padding row) and the global scale
            rows = torch.linspace(1, weight.shape[0] - 1, 16).long().to(weight.device)
            cols = torch.linspace(0, weight.shape[1] - 1, 16).long().to(weight.device)
            sample = weight[rows, cols].float().cpu()
            fingerprint["embedding_stats"] = [float(weight[rows].float().std()), *[float(v) for v in sample]]
    return fingerprint


def _compare_fingerprints(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    problems = []
    for key in _FINGERPRINT_CONFIG_KEYS:
        if key in saved and key in current and saved[key] != current[key]:
            problems.append(f"{key}: artifact {saved[key]} vs model {current[key]}")
    a, b = saved.get("embedding_stats"), current.get("embedding_stats")
    if a and b and len(a) == len(b):
        scale = max(abs(x) for x in a) or 1.0
        if any(not math.isclose(x, y, rel_tol=2e-2, abs_tol=2e-2 * scale) for x, y in zip(a, b, strict=True)):
            same_shape = not problems  # only call it "the same architecture" when no config number differs
            problems.append(
                "input-embedding weights differ"
                + (" (another checkpoint of the same architecture)" if same_shape else "")
            )
    return problems


@dataclass
class FisherArtifact:
    """Per-module Fisher factors of an aligned model, plus metadata describing how they were estimated."""

    modules: dict[str, ModuleFisher]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def estimator(self) -> str:
        return str(self.metadata.get("estimator", "kfac"))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``fisher.safetensors`` and ``fisher.json`` atomically into ``directory`` (created if needed)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{name}::{key}": tensor.detach().to("cpu", torch.float32).contiguous().clone()
            for name, module in self.modules.items()
            for key, tensor in module.tensors().items()
        }
        metadata = dict(self.metadata)
        metadata["format_version"] = FORMAT_VERSION
        metadata["modules"] = {
            name: {"d_out": m.d_out, "d_in": m.d_in, "trace_out": m.trace_out, "trace_in": m.trace_in}
            | {"k_out": m.k_out, "k_in": m.k_in}
            for name, m in self.modules.items()
        }
        # write to temporary names, then rename: a crash never leaves a half-written artifact behind
        with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as handle:
            tmp_tensors = Path(handle.name)
        save_file(tensors, str(tmp_tensors))
        metadata["sha256"] = files_sha256(tmp_tensors)
        tmp_meta = directory / (METADATA_FILE + ".tmp")
        tmp_meta.write_text(json.dumps(metadata, indent=2, sort_keys=True))
        os.replace(tmp_tensors, directory / TENSORS_FILE)
        os.replace(tmp_meta, directory / METADATA_FILE)
        self.metadata = metadata
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> FisherArtifact:
        """Read an artifact written by :meth:`save`; checks the format version and the checksum."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path, tensor_path = directory / METADATA_FILE, directory / TENSORS_FILE
        if not meta_path.is_file() or not tensor_path.is_file():
            raise FisherArtifactError(
                f"No Fisher artifact in '{directory}' (expected {METADATA_FILE} and {TENSORS_FILE}). "
                "Fix: point agl_fisher_path at a directory written by `agl-trl fisher`, or leave it unset to "
                "estimate the Fisher from agl_probe_dataset."
            )
        try:
            metadata = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise FisherArtifactError(f"{meta_path} is not valid JSON ({err}); the artifact is corrupted.") from err
        version = metadata.get("format_version")
        if version != FORMAT_VERSION:
            raise FisherArtifactError(
                f"Fisher artifact format version {version} in '{directory}' is not supported (this agl-trl reads "
                f"version {FORMAT_VERSION}). Fix: re-estimate it with this version (`agl-trl fisher`)."
            )
        expected = metadata.get("sha256")
        if expected and files_sha256(tensor_path) != expected:
            raise FisherArtifactError(
                f"{tensor_path} does not match the checksum recorded in {METADATA_FILE}: the file is corrupted or "
                "was replaced. Fix: re-estimate the artifact (`agl-trl fisher`) or restore the original file."
            )
        try:
            flat = load_file(str(tensor_path), device=str(device))
        except (SafetensorError, OSError) as err:
            raise FisherArtifactError(f"Cannot read {tensor_path}: {err}. The artifact is corrupted.") from err
        modules: dict[str, ModuleFisher] = {}
        for name, info in metadata.get("modules", {}).items():

            def get(key: str, name: str = name) -> torch.Tensor | None:
                return flat.get(f"{name}::{key}")

            modules[name] = ModuleFisher(
                d_out=int(info["d_out"]),
                d_in=int(info["d_in"]),
                trace_out=float(info["trace_out"]),
                trace_in=float(info["trace_in"]),
                q_out=get("q_out"),
                eig_out=get("eig_out"),
                q_in=get("q_in"),
                eig_in=get("eig_in"),
                diag=get("diag"),
            )
        artifact = cls(modules=modules, metadata=metadata)
        artifact._check_tensors()
        return artifact

    def _check_tensors(self) -> None:
        for name, m in self.modules.items():
            for key, tensor in m.tensors().items():
                if not torch.isfinite(tensor).all():
                    raise FisherArtifactError(
                        f"Fisher artifact tensor '{name}::{key}' contains NaN/inf. Fix: re-estimate the artifact "
                        "(check the probe data and the model's loss are finite)."
                    )
            if m.q_out is not None and tuple(m.q_out.shape) != (m.d_out, m.k_out):
                raise FisherArtifactError(f"Fisher artifact module '{name}': q_out has shape {tuple(m.q_out.shape)}")
            if m.q_in is not None and tuple(m.q_in.shape) != (m.d_in, m.k_in):
                raise FisherArtifactError(f"Fisher artifact module '{name}': q_in has shape {tuple(m.q_in.shape)}")

    def verify(self, model: nn.Module, modules: list | None = None) -> None:
        """Check that this artifact was estimated on ``model``'s base weights and covers its LoRA modules.

        Raises:
            FisherArtifactError: naming every mismatch (other model, missing module, wrong shape) and the fix.
        """
        from agl_trl.lora import find_lora_modules

        problems = _compare_fingerprints(self.metadata.get("model_fingerprint", {}), model_fingerprint(model))
        if problems:
            source = self.metadata.get("model_fingerprint", {}).get("name_or_path", "?")
            raise FisherArtifactError(
                f"This Fisher artifact was estimated on another model ('{source}'): " + "; ".join(problems) + ". "
                "Fix: estimate an artifact for this model (`agl-trl fisher`, or unset agl_fisher_path to estimate "
                "at train start)."
            )
        lora_modules = modules if modules is not None else find_lora_modules(model)
        if not lora_modules:
            raise FisherArtifactError(
                "The model has no active LoRA layers to regularise. Fix: train with a LoRA adapter "
                "(peft_config / --use_peft / adapter: lora)."
            )
        missing = [m.name for m in lora_modules if m.name not in self.modules]
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise FisherArtifactError(
                f"The Fisher artifact has no entry for {len(missing)} LoRA module(s) of this model: {shown}. "
                "It was estimated with other LoRA target modules. Fix: re-estimate with the same target modules "
                "(or a superset, e.g. all linear layers)."
            )
        wrong = [
            f"{m.name}: model {m.d_out}x{m.d_in}, artifact {self.modules[m.name].d_out}x{self.modules[m.name].d_in}"
            for m in lora_modules
            if (m.d_out, m.d_in) != (self.modules[m.name].d_out, self.modules[m.name].d_in)
        ]
        if wrong:
            raise FisherArtifactError(
                "Fisher artifact shapes do not match the model's LoRA modules: " + "; ".join(wrong[:5]) + ". "
                "Fix: estimate an artifact for this model."
            )
