"""Synthetic fold rows for the held-out-style protocol's tests (benchmarks.lab.peers_folds): two styles, two folds."""

from __future__ import annotations

# two styles per label, four prompts each: ids u-a-0.. (unsafe, style a), s-b-0.. (safe, style b), ...
GROUPS = {f"{lab[0]}-{style}-{i}": (lab, style) for lab in ("unsafe", "safe") for style in "ab" for i in range(4)}
IDS = list(GROUPS)
FOLDS = {"fa": ("a",), "fb": ("b",)}


def row(method, strength, unsafe_a, unsafe_b, safe_a="0000", safe_b="0000", task=0.8, step=1.0):
    return {
        "split": "validation", "method": method, "strength": strength, "seed": 0, "prompt_ids": IDS,
        "verdicts": {"unsafe": unsafe_a + unsafe_b, "safe": safe_a + safe_b, "task": ""},
        "task_exact_match": task, "step_seconds_median": step,
    }  # fmt: skip


ALIGNED = row("aligned", None, "1111", "1111")


def fold_rows(**candidates):
    """fold -> rows: the aligned model, plain LoRA and each candidate's (unsafe_a, unsafe_b, task, step) per fold."""
    out = {}
    for fold in FOLDS:
        rows = [ALIGNED, row("plain", None, "0000", "0000", task=0.8, step=1.0)]
        for name, per_fold in candidates.items():
            unsafe_a, unsafe_b, task, step = per_fold[fold]
            rows.append(row(name, 0.1, unsafe_a, unsafe_b, task=task, step=step))
        out[fold] = rows
    return out
