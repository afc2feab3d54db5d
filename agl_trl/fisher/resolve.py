"""Where a Fisher artifact comes from: the one function every caller uses (trainers, ``agl-trl fisher``, demo, peers).

:func:`resolve_artifact` returns, in this order of preference:

1. the saved artifact at ``fisher_path``, verified against the model (an error if it does not fit: the user asked
   for that one);
2. an earlier artifact from ``candidates`` (e.g. the one a checkpoint recorded, then ``<output_dir>/agl_fisher/``)
   that fits the model *and* was estimated with the same settings on the same probe data (a warning says why one
   that does not fit is skipped);
3. a fresh estimate on the probe data (the RNG state is restored afterwards, so training sees the same random
   numbers as without AGL), saved atomically to ``save_to`` by the main process.

Probe prompts without a response are answered by the aligned model once (:class:`~agl_trl.fisher.answers.ProbeAnswers`:
the Fisher's records and ``also_answer``, the drift meter's), reusing the answers stored beside the artifact; new
answers are stored in ``save_to`` with the artifact. Once the first batch's speed is known, one log line states the
start-up plan (:class:`StartupPlan`): what is reused, generated and estimated, and the expected time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from agl_trl.diagnostics import explained
from agl_trl.fisher.answers import ProbeAnswers
from agl_trl.fisher.artifact import FisherArtifact, FisherArtifactError
from agl_trl.fisher.estimate import estimate_fisher
from agl_trl.fisher.probe import load_probe_records, records_hash
from agl_trl.logs import say
from agl_trl.lora import adapters_disabled
from agl_trl.preflight import METADATA_FILE
from agl_trl.settings import FisherSettings

logger = logging.getLogger(__name__)

FISHER_SUBDIR = "agl_fisher"
"""Sub-folder of a training run's ``output_dir`` where its estimated artifact is saved (and found again)."""

NO_TOKENIZER_MESSAGE = (
    "AGL needs the trainer's tokenizer to estimate the Fisher, but `processing_class` is None. Pass "
    "`processing_class=tokenizer` to the trainer, or give a saved artifact with `agl_fisher_path`."
)


@dataclass
class ResolvedArtifact:
    """The artifact in use, where it lives on disk (``None``: not saved), how it was obtained, and the aligned
    model's answers to the probe prompts (the Fisher's and ``also_answer``'s)."""

    artifact: FisherArtifact
    directory: str | None
    source: str  # "path" | a candidate's label (e.g. "checkpoint", "output_dir") | "estimated"
    answers: ProbeAnswers | None = None


def duration(seconds: float) -> str:
    """``seconds`` for a person: "42 s", "3 min 5 s", "1 h 12 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@dataclass
class StartupPlan:
    """What AGL's start-up does, stated in one log line (by the main process) as soon as the speed of its first
    batch is known: the probe, the artifact (reused or estimated), the answers to generate and the expected time."""

    parts: list[str] = field(default_factory=list)
    show: bool = True  # the main process: it says the line
    said: bool = False

    def add(self, part: str) -> None:
        self.parts.append(part)

    def say(self, expected: str = "") -> None:
        """Log the plan once (with ``expected``: the expected time and how it was measured)."""
        if self.show and not self.said:
            self.said = True
            say("AGL start-up: %s%s", "; ".join(self.parts), f"; expected {expected}" if expected else "")

    def timer(self, phase: str, then: str = "") -> Callable[[int, int], None]:
        """An ``on_batch(done, total)`` callback that, after the first batch of ``phase``, says the plan with the
        phase's time extrapolated from that batch (and what follows it, ``then``), or, the plan said, the phase's
        expected time on a line of its own (the Fisher estimate after the answers)."""
        started, timed = time.perf_counter(), []

        def on_batch(done: int, total: int) -> None:
            if timed or not done:
                return
            timed.append(True)
            elapsed = time.perf_counter() - started
            expected = (
                f"~{duration(elapsed * total / done)} for {phase} (first batch: {done} of {total} in {elapsed:.1f} s)"
            )
            if not self.said:
                self.say(expected + then)
            elif self.show:
                say("AGL start-up: expected %s", expected)

        return on_batch


def fork_rng() -> contextlib.AbstractContextManager:
    """Restore the CPU (and current CUDA device's) RNG state on exit."""
    devices: list[int] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices = [torch.cuda.current_device()]
    return torch.random.fork_rng(devices=devices)


def load_verified(directory: str | os.PathLike, model: torch.nn.Module) -> FisherArtifact:
    """Load the artifact in ``directory`` and check that it fits ``model`` (raises :class:`FisherArtifactError`)."""
    artifact = FisherArtifact.load(directory)
    artifact.verify(model)
    return artifact


def _reusable(
    directory: Path, model: torch.nn.Module, label: str, settings: FisherSettings, probe_hash: str
) -> FisherArtifact | None:
    """The artifact in ``directory`` if it fits the model, the settings and the probe data; else ``None``."""
    if not (directory / "fisher.json").is_file():
        return None
    try:
        artifact = load_verified(directory, model)
    except FisherArtifactError as exc:
        logger.warning(
            "AGL: not reusing the Fisher artifact in %s (%s): %s Estimating a new one.", directory, label, exc
        )
        return None
    saved = artifact.metadata.get("settings")
    if saved is not None and saved != asdict(settings):
        logger.warning(
            "AGL: not reusing the Fisher artifact in %s (%s): it was estimated with other agl_fisher_* settings "
            "(%s, now %s). Estimating a new one.",
            directory,
            label,
            saved,
            asdict(settings),
        )
        return None
    saved_hash = artifact.metadata.get("probe_hash")
    if saved_hash is not None and saved_hash != probe_hash:
        logger.warning(
            "AGL: not reusing the Fisher artifact in %s (%s): it was estimated on other probe data. Estimating a new "
            "one.",
            directory,
            label,
        )
        return None
    return artifact


def set_aside(directory: Path) -> Path | None:
    """Move the artifact in ``directory`` (about to be replaced: it did not fit the run) to ``<directory>.<hash>``
    beside it, so that no artifact is ever overwritten; ``None`` when ``directory`` holds none. The hash is that of
    its ``fisher.json`` (which records the tensors' checksum): the same artifact set aside twice is kept once."""
    meta = directory / METADATA_FILE
    if not meta.is_file():
        return None
    kept = directory.with_name(f"{directory.name}.{hashlib.sha256(meta.read_bytes()).hexdigest()[:12]}")
    if kept.exists():
        shutil.rmtree(directory)
    else:
        directory.rename(kept)
    return kept


def _answer(
    answers: ProbeAnswers,
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    plan: StartupPlan,
    show_progress: bool,
    then: str = "",
) -> None:
    """Generate the answers ``records`` still lack (saying the plan after the first batch)."""
    todo = answers.missing(records)
    stored = len(answers.answers)
    plan.add(f"{len(todo)} probe answers to generate" + (f" ({stored} stored)" if stored else ""))
    if not todo:
        return
    if tokenizer is None:
        raise ValueError(NO_TOKENIZER_MESSAGE)
    with adapters_disabled(model):  # the aligned model's answers
        answers.generate(
            model, tokenizer, records, show_progress=show_progress, on_batch=plan.timer("the answers", then)
        )


def resolve_artifact(
    model: torch.nn.Module,
    tokenizer: Any,
    settings: FisherSettings,
    *,
    fisher_path: str | os.PathLike | None = None,
    probe: str | Sequence[dict[str, Any]] | None = None,
    probe_split: str = "train",
    candidates: Sequence[tuple[str | os.PathLike, str]] = (),
    save_to: str | os.PathLike | None = None,
    is_main: bool = True,
    show_progress: bool = True,
    also_answer: Sequence[dict[str, Any]] = (),
    plan: StartupPlan | None = None,
) -> ResolvedArtifact:
    """The Fisher artifact for ``model`` (a PEFT model with its LoRA adapters), by the rules of the module docstring.

    Args:
        settings: how to estimate (also what a reused artifact must have been estimated with).
        fisher_path: a saved artifact to use as it is.
        probe: the probe data: a source for :func:`~agl_trl.fisher.load_probe_records` (``"driftcaps"``, a local
            file, a Hub id) or the records themselves.
        candidates: ``(directory, label)`` of earlier artifacts to reuse if they fit, in order.
        save_to: where an estimated artifact is saved (by the main process; every rank takes part in estimating).
        is_main: whether this process is the main one (saves, logs, shows progress).
        also_answer: more probe records whose prompts the aligned model must answer (the drift meter's), answered
            in the same pass as the Fisher's.
        plan: the start-up plan to complete and say (the caller may have added its parts: the probe, the meter).
    """
    plan = plan if plan is not None else StartupPlan()
    plan.show = plan.show and is_main
    show_progress = show_progress and is_main
    if fisher_path:
        artifact = load_verified(fisher_path, model)
        answers = ProbeAnswers.load(fisher_path, model, settings.max_new_tokens)
        plan.add(f"the Fisher artifact {fisher_path} (agl_fisher_path)")
        _answer(answers, model, tokenizer, also_answer, plan, show_progress)  # not written into the user's artifact
        plan.say()
        return ResolvedArtifact(artifact, str(fisher_path), "path", answers)
    if probe is None:
        raise ValueError(
            "No Fisher artifact and no probe data to estimate one: set `agl_fisher_path` or `agl_probe_dataset`."
        )
    if isinstance(probe, str):
        records = load_probe_records(probe, split=probe_split, max_samples=settings.max_samples)
        if not records:
            raise ValueError(
                f"The probe dataset `agl_probe_dataset`={probe!r} (split {probe_split!r}) has no records: give a "
                "non-empty probe set or a saved artifact with `agl_fisher_path`."
            )
        if not plan.parts:
            plan.add(f"probe {probe!r}")
    else:
        records = list(probe)[: settings.max_samples]
    probe_hash = records_hash(records)
    own = None if save_to is None else Path(save_to).resolve()
    for directory, label in candidates:
        artifact = _reusable(Path(directory), model, label, settings, probe_hash)
        if artifact is not None:
            say("AGL: reusing the Fisher artifact in %s (%s)", directory, label)
            plan.add(f"the Fisher artifact in {directory} ({label}), reused")
            answers = ProbeAnswers.load(directory, model, settings.max_new_tokens)
            _answer(answers, model, tokenizer, also_answer, plan, show_progress)
            if answers.generated and is_main and Path(directory).resolve() == own:
                answers.save(directory)  # the run's own artifact: a resumed run finds them
            plan.say()
            return ResolvedArtifact(artifact, str(directory), label, answers)

    if tokenizer is None:
        raise ValueError(NO_TOKENIZER_MESSAGE)
    passes = math.ceil(len(records) / settings.batch_size)
    plan.add(f"a {settings.estimator} Fisher estimate on {len(records)} probe records ({passes} passes)")
    # the answers of an artifact that no longer fits (other settings) are still good when the model is the same
    answers = ProbeAnswers.load(save_to, model, settings.max_new_tokens)
    _answer(answers, model, tokenizer, [*records, *also_answer], plan, show_progress, then=", then the Fisher estimate")
    # the estimator samples and seeds: keep the caller's RNG stream untouched; set-up failures say their cause
    with fork_rng(), explained("Fisher estimate", model):
        artifact = estimate_fisher(
            model,
            tokenizer,
            answers.fill(records),
            settings,
            show_progress=show_progress,
            probe_hash=probe_hash,
            on_batch=plan.timer("the Fisher estimate"),
        )
    if save_to is not None and is_main:
        kept = set_aside(Path(save_to))
        if kept is not None:
            logger.warning(
                "AGL: the Fisher artifact in %s does not fit this run (see above): it is kept in %s, and the new "
                "estimate is saved in its place.",
                save_to,
                kept,
            )
        artifact.save(save_to)
        if answers.answers:
            answers.save(save_to)
        say("AGL: saved the Fisher artifact to %s", save_to)
    return ResolvedArtifact(artifact, None if save_to is None else str(save_to), "estimated", answers)


__all__ = [
    "FISHER_SUBDIR",
    "ResolvedArtifact",
    "StartupPlan",
    "duration",
    "fork_rng",
    "load_verified",
    "resolve_artifact",
    "set_aside",
]
