"""The method registry of the peers benchmark: which methods exist, their settings, and how each is built.

A method is ``plain`` (LoRA alone), ``agl`` (the experiment's tuned AGL settings), an AGL ablation (:data:`ABLATIONS`:
overrides of those settings) or a peer (:data:`PEERS`). Peers are built from artifacts of the aligned model that only
they need (:func:`prepare_peer_artifacts`): a diagonal Fisher (EWC), the alignment directions V = W_aligned - W_base
(Safe LoRA, AsFT) and the aligned model's answers to the probe prompts (KL to reference). Everything here takes plain
arguments (paths, settings objects, a ``LoraConfig``), so the experiment harness above drives it without this layer
knowing the harness.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agl_trl.settings import AGLSettings, FisherSettings

# the AGL ablations: overrides of the experiment's tuned AGL settings
ABLATIONS: dict[str, dict[str, Any]] = {
    "agl_align_only": {"lambda_task": 0.0, "lambda_collision": 0.0},
    "agl_no_rt": {"lambda_task": 0.0},
    "agl_no_collision": {"lambda_collision": 0.0},
    "agl_riem_only": {"mu": 1.0},
    "agl_geo_only": {"mu": 0.0},
    "agl_hard_gate": {"gate": "hard"},
}
# "agl_diag" (AGL with a diagonal Fisher) is EWC by construction (docs/method.md, Degeneracies): reported from "ewc"
PEERS = ("ewc", "l2", "kl_ref", "safe_lora", "asft")
ALL_METHODS = ("plain", "agl", *ABLATIONS, *PEERS)
KL_REFERENCE_FILE = "kl_reference.json"


@dataclass
class PeerSettings:
    """Weights of the peers (not tuned per method: compare them on the Pareto plot, task score vs drift)."""

    lambda_ewc: float | None = None  # None: the AGL lambda_align (both are in nats per token)
    lambda_l2: float = 0.06
    lambda_kl: float = 1.0
    kl_batch_size: int = 4
    kl_every: int = 1
    lambda_asft: float = 0.06
    asft_matrix: str = "projector"
    direction_rank: int = 32
    safe_lora_fraction: float = 0.3

    def ewc_lambda(self, lambda_align: float) -> float:
        """EWC's weight: ``lambda_ewc``, or AGL's ``lambda_align`` when unset."""
        return lambda_align if self.lambda_ewc is None else self.lambda_ewc


@dataclass
class PeerArtifacts:
    """Where the peers' artifacts of one aligned model lie (written by :func:`prepare_peer_artifacts`)."""

    aligned_dir: Path  # the saved aligned model (its tokenizer gives KL's pad id)
    diag_dir: Path  # diagonal Fisher artifact (EWC)
    directions_dir: Path  # alignment directions (Safe LoRA, AsFT)
    kl_sequences: Path  # the aligned model's answers to the probe prompts, as Generation dicts (KL to reference)


def method_agl_settings(method: str, agl: AGLSettings) -> AGLSettings | None:
    """The regulariser settings of an AGL method (``agl`` or an ablation of it); None for the other methods."""
    if method == "agl":
        return agl
    if method in ABLATIONS:
        return replace(agl, **ABLATIONS[method])
    return None


def method_settings(method: str, agl: AGLSettings, peers: PeerSettings) -> dict[str, Any]:
    """What a result row records as the ``settings`` of ``method``."""
    regularizer = method_agl_settings(method, agl)
    if regularizer is not None:
        return asdict(regularizer)
    p = peers
    return {
        "plain": {},
        "ewc": {"lambda_ewc": p.ewc_lambda(agl.lambda_align)},
        "l2": {"lambda_l2": p.lambda_l2},
        "kl_ref": {"lambda_kl": p.lambda_kl, "batch_size": p.kl_batch_size, "every": p.kl_every},
        "safe_lora": {"fraction": p.safe_lora_fraction, "direction_rank": p.direction_rank},
        "asft": {"lambda_asft": p.lambda_asft, "matrix": p.asft_matrix, "direction_rank": p.direction_rank},
    }[method]


def make_penalty(method: str, peers: PeerSettings, artifacts: PeerArtifacts, *, lambda_align: float, seed: int) -> Any:
    """The training penalty of a during-training peer (``ewc``, ``l2``, ``kl_ref``, ``asft``) on its artifacts.

    ``lambda_align``: AGL's, EWC's weight when ``peers.lambda_ewc`` is unset. ``seed``: the penalties' sampling seed.
    """
    from agl_trl import baselines as bl

    p = peers
    if method == "ewc":
        from agl_trl.fisher import FisherArtifact

        return bl.ewc_penalty(FisherArtifact.load(artifacts.diag_dir), lambda_ewc=p.ewc_lambda(lambda_align), seed=seed)
    if method == "l2":
        return bl.L2UpdatePenalty(lambda_l2=p.lambda_l2)
    if method == "kl_ref":
        from transformers import AutoTokenizer

        from agl_trl.generation import Generation

        rows = json.loads(artifacts.kl_sequences.read_text(encoding="utf-8"))
        sequences = [Generation(r["prompt_ids"], r["response_ids"], r["text"]) for r in rows]
        tokenizer = AutoTokenizer.from_pretrained(artifacts.aligned_dir)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        return bl.KLToReferencePenalty(
            sequences, lambda_kl=p.lambda_kl, batch_size=p.kl_batch_size, every=p.kl_every, pad_id=pad, seed=seed
        )
    if method == "asft":
        return bl.AsFTPenalty(
            bl.load_directions(artifacts.directions_dir), lambda_asft=p.lambda_asft, matrix=p.asft_matrix
        )
    raise ValueError(f"no penalty for method {method!r}")


def safe_lora_adapter(
    artifacts: PeerArtifacts, plain_adapter: Path, save_to: Path, peers: PeerSettings
) -> dict[str, Any]:
    """Safe LoRA: project the plain LoRA adapter ``plain_adapter`` and save it to ``save_to``.

    Returns the result-row fields of the projection (its report without the per-module cosines, its seconds, and
    ``trained_as``: the training is the plain run's).
    """
    from agl_trl.baselines.alignment import load_directions
    from agl_trl.baselines.safe_lora import safe_lora_project
    from agl_trl.models import load_pretrained

    if not (plain_adapter / "adapter_config.json").is_file():
        raise RuntimeError(f"Safe LoRA projects the plain LoRA adapter of the same run, missing: {plain_adapter}")
    started = time.perf_counter()
    model, _ = load_pretrained(artifacts.aligned_dir, plain_adapter)
    projected, report = safe_lora_project(
        model, load_directions(artifacts.directions_dir), fraction=peers.safe_lora_fraction, inplace=True
    )
    projected.save_pretrained(save_to)
    return {
        "safe_lora": {k: v for k, v in report.to_dict().items() if k != "cosines"},
        "projection_seconds": round(time.perf_counter() - started, 3),
        "trained_as": "plain",  # post-hoc: the training cost is the plain run's
    }


def prepare_peer_artifacts(
    directory: Path,
    aligned_dir: Path,
    base_loader: Callable[[], tuple[Any, Any]],
    prompts: Sequence[str],
    fisher: FisherSettings,
    lora: Any,
    *,
    direction_rank: int,
    generation_batch_size: int,
    seed: int,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> PeerArtifacts:
    """Write (or reuse, when present) the peers' artifacts of the aligned model ``aligned_dir`` under ``directory``.

    ``base_loader``: ``() -> (model, tokenizer)`` of the unaligned base model (V = W_aligned - W_base). ``prompts``:
    the probe prompts of the diagonal Fisher and of the KL reference answers. ``fisher``: the estimator settings
    (EWC uses them with ``estimator="diagonal"``; ``max_new_tokens`` is also the KL answers' budget). ``lora``: the
    ``peft.LoraConfig`` naming the modules. A file found in ``directory`` is trusted: the caller clears the folder
    when the settings change.
    """
    from peft import get_peft_model

    from agl_trl.baselines.alignment import DIRECTIONS_FILE, alignment_directions, save_directions
    from agl_trl.models import load_pretrained

    say = log or (lambda _m: None)
    directory.mkdir(parents=True, exist_ok=True)
    artifacts = PeerArtifacts(
        aligned_dir, directory / "fisher_diagonal", directory / "directions", directory / KL_REFERENCE_FILE
    )
    if not (artifacts.diag_dir / "fisher.json").is_file():
        from agl_trl.baselines.ewc import ewc_fisher_settings
        from agl_trl.fisher import resolve_artifact

        say("[shared] diagonal Fisher (EWC) ...")
        model, tokenizer = load_pretrained(aligned_dir)
        settings = ewc_fisher_settings(replace(fisher, max_samples=len(prompts), seed=seed))
        records = [{"prompt": p, "response": None} for p in prompts]
        resolve_artifact(
            get_peft_model(model, lora), tokenizer, settings, probe=records, save_to=artifacts.diag_dir,
            show_progress=progress,
        )  # fmt: skip

    if not (artifacts.directions_dir / DIRECTIONS_FILE).is_file():
        say("[shared] alignment directions V = W_aligned - W_base ...")
        aligned, _ = load_pretrained(aligned_dir)
        aligned = get_peft_model(aligned, lora)  # names the target modules; its base weights are W_aligned
        base, _ = base_loader()
        save_directions(alignment_directions(aligned, base, rank=direction_rank), artifacts.directions_dir)

    if not artifacts.kl_sequences.is_file():
        from agl_trl.generation import generate

        say("[shared] aligned answers to the probe prompts (KL to reference) ...")
        model, tokenizer = load_pretrained(aligned_dir)
        gens = generate(
            model, tokenizer, prompts, fisher.max_new_tokens, generation_batch_size, progress=progress,
            desc="kl-reference",
        )  # fmt: skip
        tmp = artifacts.kl_sequences.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(g) for g in gens]), encoding="utf-8")
        tmp.replace(artifacts.kl_sequences)  # atomic: an interrupted run never leaves a cut file behind
    return artifacts


__all__ = [
    "ABLATIONS",
    "ALL_METHODS",
    "KL_REFERENCE_FILE",
    "PEERS",
    "PeerArtifacts",
    "PeerSettings",
    "make_penalty",
    "method_agl_settings",
    "method_settings",
    "prepare_peer_artifacts",
    "safe_lora_adapter",
]
