"""AGL's part of a checkpoint: ``agl_state.json`` (the regulariser's adaptive state and where its artifact lives)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

AGL_STATE_FILE = "agl_state.json"


def checkpoint_state(trainer: Any, resume_dir: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint this run resumes from and its ``agl_state.json`` (if any)."""
    candidates: list[str] = []
    if resume_dir:
        candidates.append(resume_dir)
    global_step = int(getattr(getattr(trainer, "state", None), "global_step", 0) or 0)
    if global_step > 0:
        resume_arg = getattr(trainer.args, "resume_from_checkpoint", None)
        if isinstance(resume_arg, str) and resume_arg:
            candidates.append(resume_arg)
        candidates.append(os.path.join(trainer.args.output_dir, f"checkpoint-{global_step}"))
    for candidate in candidates:
        path = Path(candidate) / AGL_STATE_FILE
        if path.is_file():
            return candidate, json.loads(path.read_text())
    return (candidates[0] if candidates else None), None


def save_agl_state(trainer: Any, directory: str | os.PathLike) -> Path | None:
    """Write ``agl_state.json`` (regulariser state, Fisher location, settings) atomically into ``directory``."""
    rt = getattr(trainer, "_agl", None)
    if rt is None or rt.regularizer is None or not hasattr(rt.regularizer, "state_dict"):
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": 1,
        "global_step": int(getattr(trainer.state, "global_step", 0) or 0),
        "regularizer": rt.regularizer.state_dict(),
        "fisher_dir": os.path.abspath(rt.fisher_dir) if rt.fisher_dir else None,
        "fisher_source": rt.fisher_source,
        "settings": asdict(rt.settings) if is_dataclass(rt.settings) else None,
    }
    path = directory / AGL_STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


__all__ = ["AGL_STATE_FILE", "checkpoint_state", "save_agl_state"]
