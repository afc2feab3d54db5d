"""Config-time checks of the files an AGL run will read, before any model loads (no torch, trl or pydantic).

One function, :func:`check_sources`, is run by both front ends when AGL is enabled: the TRL configs' validation
(``agl_trl.config``) and the Axolotl plugin's (``agl_trl.integrations.axolotl.args``). It checks

* ``agl_fisher_path``: the directory exists, holds ``fisher.json`` and ``fisher.safetensors``, the metadata parses,
  has this version's format, names a known estimator and targets, and covers the LoRA target modules when the front
  end knows them as a list of names (the rest of the artifact's fit to the model is checked once the model exists,
  at train start: :meth:`agl_trl.fisher.FisherArtifact.verify`);
* ``agl_probe_dataset`` given as a local ``.jsonl``/``.json`` file (used when no artifact is given): it parses, is
  not empty, and every row has a ``prompt`` or ``messages`` column (the formats of :mod:`agl_trl.fisher.probe`);
* the model (``model_name_or_path`` / ``base_model``): a local path that does not exist is refused, and when its
  ``config.json`` is readable without loading weights (a local directory, or a Hub id already in the local Hugging
  Face cache; nothing is downloaded) the artifact's model fingerprint is compared with it (the embedding statistics,
  which need the weights, are compared at train start).

Every error is an :class:`~agl_trl.settings.AGLUserError` naming the key, the path and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agl_trl.settings import BUILTIN_PROBE, ESTIMATOR_CHOICES, TARGETS_CHOICES, invalid

FORMAT_VERSION = 1
"""Format version of the Fisher artifacts this agl-trl writes and reads."""
TENSORS_FILE = "fisher.safetensors"
METADATA_FILE = "fisher.json"

FINGERPRINT_CONFIG_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
"""The model config numbers of an artifact's model fingerprint (:func:`agl_trl.fisher.artifact.model_fingerprint`)."""
# compared at config time: all but vocab_size, which a trainer may change by adding tokens before the estimate
_CONFIG_TIME_KEYS = tuple(key for key in FINGERPRINT_CONFIG_KEYS if key != "vocab_size")
TINY_RECIPE_MODEL = "recipes/models/tiny-llama"
"""Where ``make tiny-model`` writes the model of the tiny CPU recipes (relative to the repository root)."""

PROBE_COLUMNS = ("prompt", "messages")
"""A probe record needs one of these columns (``prompt`` may come with ``response`` or ``completion``)."""
_PROBE_ROWS_CHECKED = 1000  # rows of a local probe file read at config time (the estimate uses up to max_samples)

_ARTIFACT_FIX = (
    "point it at a directory written by `agl-trl fisher` (it holds fisher.json and fisher.safetensors), or leave "
    "it unset to estimate the Fisher from `agl_probe_dataset`."
)
_REESTIMATE = "re-estimate the artifact with this agl-trl (`agl-trl fisher`), or leave `agl_fisher_path` unset."


def read_artifact_metadata(path: str | os.PathLike, key: str = "agl_fisher_path") -> dict[str, Any]:
    """The parsed ``fisher.json`` of the artifact directory ``path``, checked as the module docstring says."""
    directory = Path(os.path.expanduser(str(path)))
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise invalid(key, str(path), f"this path {what}; {_ARTIFACT_FIX}")
    missing = [name for name in (METADATA_FILE, TENSORS_FILE) if not (directory / name).is_file()]
    if missing:
        raise invalid(key, str(path), f"this directory has no {' or '.join(missing)}; {_ARTIFACT_FIX}")
    meta_path = directory / METADATA_FILE
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise invalid(key, str(path), f"{meta_path} cannot be parsed ({err}); {_REESTIMATE}") from err
    if not isinstance(metadata, dict):
        raise invalid(key, str(path), f"{meta_path} is not a JSON object; {_REESTIMATE}")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise invalid(
            key,
            str(path),
            f"artifact format version {version!r} is not {FORMAT_VERSION}, the one this agl-trl reads; " + _REESTIMATE,
        )
    estimator = metadata.get("estimator", "kfac")
    saved = metadata.get("settings")
    targets = saved.get("targets", "sampled") if isinstance(saved, dict) else "sampled"
    if estimator not in ESTIMATOR_CHOICES or targets not in TARGETS_CHOICES:
        raise invalid(
            key,
            str(path),
            f"{meta_path} names estimator {estimator!r} and targets {targets!r}, which this "
            f"agl-trl does not know; {_REESTIMATE}",
        )
    modules = metadata.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise invalid(key, str(path), f"{meta_path} lists no LoRA modules; {_REESTIMATE}")
    return metadata


def check_artifact_targets(
    metadata: dict[str, Any], path: str, target_modules: Any, targets_key: str = "lora_target_modules"
) -> None:
    """Refuse an artifact that has no module for one of the LoRA ``target_modules`` (a list of names, matched as
    PEFT does: the module's name or its last components); a regex string or ``all-linear`` is left to train start."""
    if isinstance(target_modules, str) or not target_modules:
        return
    names = list(metadata.get("modules", {}))
    uncovered = [
        str(target) for target in target_modules if not any(n == target or n.endswith(f".{target}") for n in names)
    ]
    if uncovered:
        covered = sorted({name.rsplit(".", 1)[-1] for name in names})
        raise invalid(
            "agl_fisher_path",
            path,
            f"the artifact has no module for `{targets_key}` {', '.join(uncovered)} (it was estimated for "
            f"{', '.join(covered)}); re-estimate it with the same LoRA targets (`agl-trl fisher`), or leave "
            "`agl_fisher_path` unset.",
        )


def _probe_rows(path: Path) -> list[Any]:
    """The first rows of a local probe file, in the layouts :func:`agl_trl.fisher.load_probe_records` reads."""
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"line {number} is not valid JSON ({err})") from err
                if len(rows) >= _PROBE_ROWS_CHECKED:
                    break
        return rows
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"the file is not valid JSON ({err})") from err
    if isinstance(data, dict):
        data = data.get("data", data.get("records", []))
    return list(data)[:_PROBE_ROWS_CHECKED] if isinstance(data, list) else []


def check_probe_file(source: str | None, key: str = "agl_probe_dataset") -> None:
    """Check a local ``.jsonl``/``.json`` probe file's rows (a Hub id or ``driftcaps`` is left to load time)."""
    if not source or source == BUILTIN_PROBE:
        return
    path = Path(os.path.expanduser(source))
    if path.suffix not in (".jsonl", ".json") or not path.is_file():
        return  # a Hub id; a missing local file is refused by the value rule of agl_probe_dataset
    accepted = "'prompt' (with an optional 'response' or 'completion') or 'messages' (chat turns)"
    try:
        rows = _probe_rows(path)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise invalid(key, source, f"cannot read the probe file: {err}; give a JSON Lines file of records.") from err
    if not rows:
        raise invalid(key, source, f"the probe file has no records; add records with {accepted}.")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise invalid(key, source, f"record {number} is not a JSON object; each record needs {accepted}.")
        if not any(row.get(column) is not None for column in PROBE_COLUMNS):
            raise invalid(
                key,
                source,
                f"record {number} has the columns {sorted(row)}, but a probe record needs {accepted}; "
                "rename the columns (e.g. question -> prompt, answer -> response).",
            )


def _looks_local(model: str) -> bool:
    """Whether ``model`` can only be a local path (a Hub id is ``name`` or ``owner/name``)."""
    return model.startswith(("./", "../", "/", "~")) or model in (".", "..") or model.count("/") > 1


def model_config(model: str | None, key: str = "model_name_or_path") -> dict[str, Any] | None:
    """The ``config.json`` of ``model`` read without loading weights: a local directory's, or a Hub id's when the
    local Hugging Face cache holds it (no download); ``None`` when it is not readable that way.

    Raises :func:`~agl_trl.settings.invalid` for a path that can only be local and does not exist.
    """
    if not model:
        return None
    directory = Path(os.path.expanduser(model))
    if directory.is_dir():
        path: Path | None = directory / "config.json"
    elif _looks_local(model):
        hint = " The tiny recipes' model is written by `make tiny-model` (from the repository root)." * (
            Path(model).as_posix().rstrip("/").endswith(TINY_RECIPE_MODEL)
        )
        raise invalid(
            key,
            model,
            f"this local model directory does not exist (relative paths are read from {os.getcwd()}); fix the path, "
            "or give a Hub model id." + hint,
        )
    else:
        path = _cached_hub_config(model)
    if path is None or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # left to the model loader, which names the problem
    return config if isinstance(config, dict) else None


def _cached_hub_config(model: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    try:
        found = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def check_model_fingerprint(metadata: dict[str, Any], fisher_path: str, config: dict[str, Any], key: str) -> None:
    """Refuse an artifact whose model fingerprint's config numbers differ from the model's ``config.json``."""
    saved = metadata.get("model_fingerprint")
    if not isinstance(saved, dict):
        return
    problems = [
        f"{name}: artifact {saved[name]!r} vs model {config[name]!r}"
        for name in _CONFIG_TIME_KEYS
        if name in saved and name in config and saved[name] != config[name]
    ]
    if problems:
        raise invalid(
            "agl_fisher_path",
            fisher_path,
            f"the artifact was estimated on another model ({saved.get('name_or_path') or '?'!r}) than `{key}`: "
            + "; ".join(problems)
            + ". Estimate an artifact for this model (`agl-trl fisher`), or leave `agl_fisher_path` unset.",
        )


def check_sources(
    fisher_path: str | None,
    probe_dataset: str | None,
    target_modules: Any = None,
    targets_key: str = "",
    model: str | None = None,
    model_key: str = "model_name_or_path",
) -> dict[str, Any] | None:
    """The config-time checks of an AGL run (AGL enabled): the artifact if given (and, with ``target_modules``,
    that it covers those LoRA targets; ``targets_key`` names them in the message), else a local probe file; then the
    ``model`` (named ``model_key`` in messages): a local path must exist, and an artifact must fit its config.

    Returns the artifact's metadata when ``fisher_path`` is given (the probe is not used then), else ``None``.
    """
    metadata = None
    if fisher_path:
        metadata = read_artifact_metadata(fisher_path)
        check_artifact_targets(metadata, fisher_path, target_modules, targets_key or "lora_target_modules")
    else:
        check_probe_file(probe_dataset)
    config = model_config(model, model_key)
    if metadata is not None and config is not None:
        check_model_fingerprint(metadata, str(fisher_path), config, model_key)
    return metadata


__all__ = [
    "FINGERPRINT_CONFIG_KEYS",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "PROBE_COLUMNS",
    "TENSORS_FILE",
    "TINY_RECIPE_MODEL",
    "check_artifact_targets",
    "check_model_fingerprint",
    "check_probe_file",
    "check_sources",
    "model_config",
    "read_artifact_metadata",
]
