"""The method registry of the peers benchmark: which methods exist, their settings, and how each is built.

A method is ``plain`` (LoRA alone), ``agl`` (the experiment's AGL settings with the KL anchor steps off: the K-FAC
penalty and the drift budget, the package default until 2026-12-03), an AGL ablation (:data:`ABLATIONS`: overrides
of those settings; ``agl_kl_anchor`` adds the anchor steps back, the package default until 2026-12-07, and
``agl_kl_anchor_first16`` adds a lambda floor and a 16-token anchor, the package default since, :data:`DEFAULT_METHOD`) or a peer (:data:`PEERS`); each but plain has one strength (:data:`STRENGTHS`: the
setting a fair sweep varies, with its default log-spaced grid). Peers are built from artifacts of the aligned model
that only they need (:func:`prepare_peer_artifacts`): a diagonal Fisher (EWC), the alignment directions
V = W_aligned - W_base (Safe LoRA, AsFT), the aligned model's answers to the probe prompts (KL to reference), the
probe prompts (SBR) and the safety stage's refusal rows (data mixing, Lisa). Everything here takes plain
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

# the AGL ablations: overrides of the experiment's AGL settings
ABLATIONS: dict[str, dict[str, Any]] = {
    "agl_align_only": {"lambda_task": 0.0, "lambda_collision": 0.0},
    "agl_no_rt": {"lambda_task": 0.0},
    "agl_no_collision": {"lambda_collision": 0.0},  # the default since the collision terms became opt-in
    "agl_collision": {"lambda_collision": 0.1},  # the opt-in collision terms at their earlier default weight
    "agl_riem_only": {"lambda_collision": 0.1, "mu": 1.0},
    "agl_geo_only": {"lambda_collision": 0.1, "mu": 0.0},
    "agl_hard_gate": {"gate": "hard"},
    "agl_kl_anchor": {"kl_anchor_every": 10},  # the K-FAC penalty plus a KL anchor step every 10th step
    # the anchor steps with lambda never below 1 (the calibrated level): the K-FAC weight cannot collapse (issue 34)
    "agl_kl_anchor_floor": {"kl_anchor_every": 10, "lambda_floor": 1.0},
    # the anchor steps and the budget without R_A: what the K-FAC penalty adds beside the anchor (issue 34)
    "agl_anchor_only": {"kl_anchor_every": 10, "align_penalty": False},
    # the floor with an anchor on the first 16 response tokens: where refusals are decided, at about a third of the
    # anchor's cost (issue 34)
    "agl_kl_anchor_first16": {"kl_anchor_every": 10, "kl_anchor_tokens": 16, "lambda_floor": 1.0},
}
# what "agl" and every ablation start from: the experiment's AGL settings without the KL anchor steps, so that each
# measures what it measured before the anchor steps became the default (docs/benchmarks.md)
ABLATION_BASE: dict[str, Any] = {
    "kl_anchor_every": 0,
    "kl_anchor_tokens": 0,
    "lambda_floor": 0.0,
    "align_penalty": True,
}
# the AGL methods whose settings were the package defaults, newest first: the first is today's (DEFAULT_METHOD); a
# report shows the newest one with test rows, labelled with the date it stopped being the default
DEFAULT_HISTORY: tuple[tuple[str, str | None], ...] = (
    ("agl_kl_anchor_first16", None),  # since 2026-12-07: chosen by the held-out-style folds (docs/generalization.md)
    ("agl_kl_anchor", "2026-12-07"),  # 2026-12-03 to 2026-12-07
)
DEFAULT_METHOD = DEFAULT_HISTORY[0][0]  # the AGL method whose settings are the package defaults
# AGL settings added after results were recorded, with their "off" value: a row's settings leave them out while they
# are off, so the rows made before them stay current (method_settings); kl_anchor_tokens' "every token" was None
# before 16 became its default and 0 the way to ask for every token
ADDED_OFF: dict[str, Any] = {"kl_anchor_every": 0, "kl_anchor_tokens": 0, "lambda_floor": 0.0, "align_penalty": True}
# "agl_diag" (AGL with a diagonal Fisher) is EWC by construction (docs/method.md, Degeneracies): reported from "ewc"
# peers at another cost setting: a base peer's code with some PeerSettings fixed. "kl_ref_sparse" regularises the KL
# to the aligned model on every 10th optimizer step only (AGL's KL-meter interval), so that it costs about what AGL
# does: the comparison at equal step time that KL to the aligned model's 1.9x step time leaves open
PEER_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"kl_ref_sparse": ("kl_ref", {"kl_every": 10})}
PEERS = ("ewc", "l2", "kl_ref", "safe_lora", "asft", "sbr", "mix", "lisa", *PEER_VARIANTS)
ALL_METHODS = ("plain", "agl", *ABLATIONS, *PEERS)
# the methods that read the probe prompts or the Fisher estimator's settings (AGL's K-FAC artifact, EWC's diagonal
# Fisher, KL to the aligned model's probe answers, SBR's anchor prompts): a change to those re-runs only them
PROBE_METHODS = frozenset({"agl", *ABLATIONS, "ewc", "kl_ref", "kl_ref_sparse", "sbr"})
# bumped when a method's code changes what it computes, so that a results log re-runs that method's rows
METHOD_REVISIONS: dict[str, int] = {}
KL_REFERENCE_FILE = "kl_reference.json"
PROBE_PROMPTS_FILE = "probe_prompts.json"
SAFETY_ROWS_FILE = "safety_rows.json"

# each method's strength: the setting a sweep varies, and its default log-spaced grid (weakest first). AGL and its
# ablations vary the drift budget (the rest of AGLSettings fixed); Safe LoRA the share of modules it projects.
AGL_STRENGTHS = ("kl_budget", "lambda_align")  # the AGLSettings fields a sweep may vary
STRENGTHS: dict[str, tuple[str, tuple[float, ...]]] = {
    # AGL's knob is its drift budget (nats of probe KL per token); plain LoRA drifts to ~0.6 on these prompts
    "agl": ("kl_budget", (0.01, 0.03, 0.1, 0.3)),
    **{name: ("kl_budget", (0.01, 0.03, 0.1, 0.3)) for name in ABLATIONS},
    "ewc": ("lambda_ewc", (1.0, 10.0, 100.0, 1000.0)),
    "l2": ("lambda_l2", (0.003, 0.01, 0.03, 0.1)),
    "kl_ref": ("lambda_kl", (0.1, 0.3, 1.0, 3.0)),
    "kl_ref_sparse": ("lambda_kl", (1.0, 3.0, 10.0, 30.0)),  # on 1 step in 10: kl_ref's grid x 10
    "safe_lora": ("safe_lora_fraction", (0.05, 0.1, 0.2, 0.4)),
    "asft": ("lambda_asft", (0.01, 0.03, 0.1, 0.3)),
    "sbr": ("lambda_rep", (0.1, 1.0, 10.0, 100.0)),
    "mix": ("mix_fraction", (0.01, 0.03, 0.1, 0.3)),
    "lisa": ("lisa_rho", (0.01, 0.1, 1.0, 10.0)),
}


@dataclass
class PeerSettings:
    """The peers' settings (units in each module's docstring); a sweep varies each method's :data:`STRENGTHS` field."""

    lambda_ewc: float = 1.0  # per nat of estimated KL, like AGL's lambda
    lambda_l2: float = 0.06
    lambda_kl: float = 1.0
    kl_batch_size: int = 4
    kl_every: int = 1
    lambda_asft: float = 0.06
    asft_matrix: str = "projector"
    direction_rank: int = 32
    safe_lora_fraction: float = 0.3
    lambda_rep: float = 1.0  # SBR: per-dimension MSE of final hidden states, per regularised step
    rep_prompts: int = 16  # SBR: "a handful" of unsafe probe prompts ...
    rep_batch_size: int = 8  # ... of which this many per step
    mix_fraction: float = 0.05  # safety data mixing: refusal rows added, as a share of the task rows
    lisa_rho: float = 1.0  # Lisa: proximal weight rho/2 ||theta - theta_switch||^2
    lisa_align_steps: int = 2  # Lisa: alignment-phase / task-phase lengths (optimizer steps)
    lisa_task_steps: int = 10
    lisa_batch_size: int = 4


@dataclass
class PeerArtifacts:
    """Where the peers' artifacts of one aligned model lie (written by :func:`prepare_peer_artifacts`)."""

    aligned_dir: Path  # the saved aligned model (its tokenizer gives KL's pad id)
    diag_dir: Path  # diagonal Fisher artifact (EWC)
    directions_dir: Path  # alignment directions (Safe LoRA, AsFT)
    kl_sequences: Path  # the aligned model's answers to the probe prompts, as Generation dicts (KL to reference)
    probe_prompts: Path  # the probe prompts (SBR's anchor prompts are its unsafe ones)
    safety_rows: Path  # the safety stage's refusal rows {"prompt", "answer"} (data mixing, Lisa)


def strength_of(method: str) -> str | None:
    """The setting a sweep of ``method`` varies (None for plain LoRA)."""
    if method == "plain":
        return None
    if method not in STRENGTHS:
        raise ValueError(f"unknown method {method!r}; known: {list(ALL_METHODS)}")
    return STRENGTHS[method][0]


def peer_base(method: str, peers: PeerSettings) -> tuple[str, PeerSettings]:
    """The method whose code runs ``method`` and the settings it runs with: a :data:`PEER_VARIANTS` entry's base peer
    and ``peers`` with the variant's overrides; any other method unchanged."""
    if method not in PEER_VARIANTS:
        return method, peers
    base, overrides = PEER_VARIANTS[method]
    return base, replace(peers, **overrides)


def with_strength(
    method: str, value: float | None, agl: AGLSettings, peers: PeerSettings
) -> tuple[AGLSettings, PeerSettings]:
    """``(agl, peers)`` with ``method``'s strength set to ``value`` (unchanged for plain LoRA or ``value=None``)."""
    name = strength_of(method)
    if name is None or value is None:
        return agl, peers
    if name in AGL_STRENGTHS:
        return replace(agl, **{name: float(value)}), peers
    return agl, replace(peers, **{name: float(value)})


def method_agl_settings(method: str, agl: AGLSettings) -> AGLSettings | None:
    """The regulariser settings of an AGL method (``agl`` or an ablation of it); None for the other methods."""
    if method == "agl":
        return replace(agl, **ABLATION_BASE)
    if method in ABLATIONS:
        return replace(agl, **{**ABLATION_BASE, **ABLATIONS[method]})
    return None


def method_settings(method: str, agl: AGLSettings, peers: PeerSettings) -> dict[str, Any]:
    """What a result row records as the ``settings`` of ``method``."""
    regularizer = method_agl_settings(method, agl)
    if regularizer is not None:
        recorded = asdict(regularizer)
        for name, off in ADDED_OFF.items():  # an opt-in setting that is off changes nothing a row measured
            if recorded.get(name) == off:
                del recorded[name]
        return recorded
    method, p = peer_base(method, peers)
    return {
        "plain": {},
        "ewc": {"lambda_ewc": p.lambda_ewc},
        "l2": {"lambda_l2": p.lambda_l2},
        "kl_ref": {"lambda_kl": p.lambda_kl, "batch_size": p.kl_batch_size, "every": p.kl_every},
        "safe_lora": {"fraction": p.safe_lora_fraction, "direction_rank": p.direction_rank},
        "asft": {"lambda_asft": p.lambda_asft, "matrix": p.asft_matrix, "direction_rank": p.direction_rank},
        "sbr": {"lambda_rep": p.lambda_rep, "prompts": p.rep_prompts, "batch_size": p.rep_batch_size},
        "mix": {"fraction": p.mix_fraction},
        "lisa": {"rho": p.lisa_rho, "align_steps": p.lisa_align_steps, "task_steps": p.lisa_task_steps,
                 "batch_size": p.lisa_batch_size},
    }[method]  # fmt: skip


def training_rows(
    method: str, task_rows: list[dict[str, str]], artifacts: PeerArtifacts, peers: PeerSettings, *, seed: int
) -> list[dict[str, str]]:
    """The rows ``method`` trains on: the task rows, plus refusal rows for safety data mixing (``mix``)."""
    if method != "mix":
        return task_rows
    from agl_trl.baselines.mixing import mix_safety_rows

    safety = json.loads(artifacts.safety_rows.read_text(encoding="utf-8"))
    return mix_safety_rows(task_rows, safety, peers.mix_fraction, seed=seed)


def method_training(
    cfg: Any, shared: Any, method: str, strength: float | None, seed: int
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """What :func:`~agl_trl.experiments.train_lora` trains ``method`` at ``strength`` with (any method trained by
    gradient, so not Safe LoRA's projection): its rows, and its ``agl`` fields or ``penalty`` (none for plain LoRA and
    safety data mixing). ``cfg``: the benchmark's ``BenchConfig``; ``shared``: its ``Shared`` set-up (:mod:`benchmarks.lab.peers`). One owner
    for the peers runs and the step-time benchmark (:mod:`benchmarks.lab.step_time`)."""
    agl, peers = with_strength(method, strength, cfg.demo.agl, cfg.peers)
    kwargs: dict[str, Any] = {}
    regularizer = method_agl_settings(method, agl)
    if regularizer is not None:
        kwargs["agl"] = shared.setup.agl_fields(regularizer)
    elif method not in ("plain", "mix"):
        kwargs["penalty"] = make_penalty(method, peers, shared.artifacts, seed=seed)
    return training_rows(method, shared.setup.task_rows, shared.artifacts, peers, seed=seed), kwargs


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def make_penalty(method: str, peers: PeerSettings, artifacts: PeerArtifacts, *, seed: int) -> Any:
    """The training penalty of a during-training peer (``ewc``, ``l2``, ``kl_ref`` and its variant, ``asft``, ``sbr``,
    ``lisa``).

    ``seed``: the penalties' sampling seed.
    """
    from agl_trl import baselines as bl

    method, p = peer_base(method, peers)
    if method == "ewc":
        from agl_trl.fisher import FisherArtifact

        return bl.ewc_penalty(FisherArtifact.load(artifacts.diag_dir), lambda_ewc=p.lambda_ewc, seed=seed)
    if method == "l2":
        return bl.L2UpdatePenalty(lambda_l2=p.lambda_l2)
    if method == "asft":
        return bl.AsFTPenalty(
            bl.load_directions(artifacts.directions_dir), lambda_asft=p.lambda_asft, matrix=p.asft_matrix
        )
    if method not in ("kl_ref", "sbr", "lisa"):
        raise ValueError(f"no penalty for method {method!r}")
    from transformers import AutoTokenizer

    from agl_trl.generation import Generation

    tokenizer = AutoTokenizer.from_pretrained(artifacts.aligned_dir)
    if method == "kl_ref":
        rows = json.loads(artifacts.kl_sequences.read_text(encoding="utf-8"))
        sequences = [Generation(r["prompt_ids"], r["response_ids"], r["text"]) for r in rows]
        return bl.KLToReferencePenalty(
            sequences, lambda_kl=p.lambda_kl, batch_size=p.kl_batch_size, every=p.kl_every, pad_id=_pad_id(tokenizer),
            seed=seed,
        )  # fmt: skip
    if method == "sbr":
        prompts = json.loads(artifacts.probe_prompts.read_text(encoding="utf-8"))["unsafe"][: p.rep_prompts]
        return bl.RepresentationAnchorPenalty.from_prompts(
            tokenizer, prompts, lambda_rep=p.lambda_rep, batch_size=p.rep_batch_size, seed=seed
        )
    rows = json.loads(artifacts.safety_rows.read_text(encoding="utf-8"))
    return bl.LisaPenalty.from_rows(
        tokenizer, rows, rho=p.lisa_rho, align_steps=p.lisa_align_steps, task_steps=p.lisa_task_steps,
        batch_size=p.lisa_batch_size, pad_id=_pad_id(tokenizer), seed=seed,
    )  # fmt: skip


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
    unsafe_prompts: Sequence[str],
    safety_rows: Sequence[dict[str, str]],
    direction_rank: int,
    generation_batch_size: int,
    seed: int,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> PeerArtifacts:
    """Write (or reuse, when present) the peers' artifacts of the aligned model ``aligned_dir`` under ``directory``.

    ``base_loader``: ``() -> (model, tokenizer)`` of the unaligned base model (V = W_aligned - W_base). ``prompts``:
    the probe prompts of the diagonal Fisher and of the KL reference answers; ``unsafe_prompts`` those of them that
    are unsafe (SBR's anchor prompts); ``safety_rows``: the safety stage's refusal rows (data mixing, Lisa). ``fisher``: the estimator settings
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
        aligned_dir, directory / "fisher_diagonal", directory / "directions", directory / KL_REFERENCE_FILE,
        directory / PROBE_PROMPTS_FILE, directory / SAFETY_ROWS_FILE,
    )  # fmt: skip
    for path, data in (
        (artifacts.probe_prompts, {"all": list(prompts), "unsafe": list(unsafe_prompts)}),
        (artifacts.safety_rows, [{"prompt": r["prompt"], "answer": r["answer"]} for r in safety_rows]),
    ):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
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


# every method's label in reports and pages (the previous default's names the date it stopped being the default)
LABELS = {
    "aligned": "aligned model (reference)",
    "plain": "plain LoRA",
    "agl": "AGL, K-FAC penalty only",
    "agl_align_only": "AGL: lambda_align only",
    "agl_no_rt": "AGL: no R_T",
    "agl_no_collision": "AGL: no collision terms",
    "agl_collision": "AGL: with the collision terms (lambda_collision 0.1)",
    "agl_riem_only": "AGL: E_riem only (mu = 1)",
    "agl_geo_only": "AGL: E_geo only (mu = 0)",
    "agl_hard_gate": "AGL: hard gate",
    "agl_kl_anchor": "AGL + KL anchor every 10th step (the package default until 2026-12-07)",
    "agl_kl_anchor_first16": "AGL + lambda floor 1 + KL anchor on the first 16 tokens (the package default)",
    "ewc": "EWC (diagonal Fisher)",
    "l2": "L2-SP on dW",
    "kl_ref": "KL to aligned (probe)",
    "kl_ref_sparse": "KL to aligned, every 10th step",
    "safe_lora": "Safe LoRA (post-hoc)",
    "asft": "AsFT-style",
    "sbr": "SBR representation anchor",
    "mix": "safety data mixing",
    "lisa": "Lisa-style (alternating + proximal)",
}


__all__ = [
    "ABLATIONS",
    "ABLATION_BASE",
    "ALL_METHODS",
    "DEFAULT_METHOD",
    "KL_REFERENCE_FILE",
    "LABELS",
    "METHOD_REVISIONS",
    "PEERS",
    "PROBE_METHODS",
    "PROBE_PROMPTS_FILE",
    "SAFETY_ROWS_FILE",
    "STRENGTHS",
    "PeerArtifacts",
    "PeerSettings",
    "make_penalty",
    "method_agl_settings",
    "method_training",
    "method_settings",
    "prepare_peer_artifacts",
    "safe_lora_adapter",
    "strength_of",
    "training_rows",
    "with_strength",
]
