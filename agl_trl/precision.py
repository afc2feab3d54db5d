"""Precision and threads that fit the hardware: bf16 only where it is fast, all cores by default.

TRL's configs default to ``bf16=True`` even on a CPU. On a CPU without native bf16 instructions (AVX512-BF16 or
AMX: most AMD EPYC and older Intel parts, where only AVX2/AVX512F exist) a bf16 matrix product is emulated and runs
about 100x slower than fp32 (0.66 vs 71 GFLOP/s per core on an AVX2 EPYC, torch 2.13), so a LoRA step that takes
seconds in fp32 takes minutes. This module decides once, for every path that trains or generates:

* :func:`bf16_is_fast` -- a CUDA device with bf16 support, or a CPU whose flags include ``avx512_bf16``/``amx_bf16``;
* :func:`resolve_bf16` -- the ``bf16`` value of a training config: the user's explicit choice is kept (with one
  warning where it is slow), an unset one becomes :func:`bf16_is_fast`;
* :func:`default_threads` -- the cores this process may run on;
* :func:`hardware_summary` -- what a report records next to every timing: precision, CPU flags, threads, device.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from pathlib import Path
from typing import Any

FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (as in ``/proc/cpuinfo``) that make bf16 matrix products fast on a CPU."""

PRECISION_CHOICES = ("auto", "fp32", "bf16")
"""What a user may ask for: ``auto`` (bf16 where it is fast, else fp32), or one of the two forced."""

SLOW_BF16_WARNING = (
    "bf16=True on a CPU without AVX512-BF16/AMX ({flags}): bf16 matrix products are emulated here and run about "
    "100x slower than fp32. Fix: set `bf16: false` (or leave it unset and agl-trl chooses fp32 on this CPU)."
)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where that file does not exist: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def fast_bf16_cpu_flags() -> list[str]:
    """The fast-bf16 flags this CPU has (an empty list: bf16 is emulated and slow)."""
    flags = cpu_flags()
    return [flag for flag in FAST_BF16_CPU_FLAGS if flag in flags]


def cuda_bf16() -> bool:
    """A CUDA device that supports bf16 is present."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def bf16_is_fast(on_cpu: bool | None = None) -> bool:
    """bf16 runs fast where training will run: on the CPU (``on_cpu=True``, or no CUDA device) when its flags
    include AVX512-BF16 or AMX; on a CUDA device when it supports bf16."""
    import torch

    if on_cpu is None:
        on_cpu = not torch.cuda.is_available()
    return bool(fast_bf16_cpu_flags()) if on_cpu else cuda_bf16()


def check_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`PRECISION_CHOICES`, else a ``ValueError`` naming the choices."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {list(PRECISION_CHOICES)}, got {precision!r}")
    return precision


def use_bf16(precision: str = "auto", on_cpu: bool | None = None) -> bool:
    """Whether a run asked for ``precision`` (``auto``, ``fp32`` or ``bf16``) trains in bf16 (``auto``:
    :func:`bf16_is_fast`)."""
    if check_precision(precision) == "auto":
        return bf16_is_fast(on_cpu)
    return precision == "bf16"


_warned_slow_bf16 = False


def warn_slow_bf16() -> None:
    """Warn once per process that bf16 was asked for on a CPU where it is slow (names the flags and the fix)."""
    global _warned_slow_bf16
    if _warned_slow_bf16:
        return
    _warned_slow_bf16 = True
    have = sorted(cpu_flags() & {"avx2", "avx512f"}) or ["no AVX512-BF16/AMX flags"]
    warnings.warn(SLOW_BF16_WARNING.format(flags=", ".join(have)), UserWarning, stacklevel=3)


def resolve_bf16(requested: bool | None, *, fp16: bool = False, on_cpu: bool | None = None) -> bool:
    """The ``bf16`` value a training config should hold.

    ``requested``: the user's value (None: unset). Unset becomes bf16 where it is fast and fp32 otherwise (never
    with ``fp16``); an explicit True on a CPU without fast bf16 is kept, with one warning (:func:`warn_slow_bf16`).
    """
    if requested is None:
        return False if fp16 else bf16_is_fast(on_cpu)
    if requested and not bf16_is_fast(on_cpu) and _runs_on_cpu(on_cpu):
        warn_slow_bf16()
    return bool(requested)


def _runs_on_cpu(on_cpu: bool | None) -> bool:
    if on_cpu is not None:
        return on_cpu
    import torch

    return not torch.cuda.is_available()


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one, else ``os.cpu_count()``).

    No load check: a load average counts the machine's own installs and earlier jobs, and one thread on an idle
    2-core machine halves every step."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def hardware_summary(bf16: bool | None = None, threads: int | None = None) -> dict[str, Any]:
    """What a report records beside every timing: precision, fast-bf16 CPU flags, threads, device, CPU model."""
    import torch

    return {
        "precision": None if bf16 is None else ("bf16" if bf16 else "fp32"),
        "cpu_fast_bf16_flags": fast_bf16_cpu_flags(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def load_average() -> tuple[float, float, float] | None:
    """The machine's 1, 5 and 15 minute load averages (None where the OS has none): recorded beside a timing, so a
    row timed while other jobs shared the cores can be told apart."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def describe(summary: dict[str, Any]) -> str:
    """One log line of :func:`hardware_summary`."""
    flags = ", ".join(summary["cpu_fast_bf16_flags"]) or "none"
    return (
        f"precision {summary['precision'] or 'unset'}, {summary['torch_threads']} threads on {summary['device']} "
        f"({summary['cpu_model'] or 'unknown CPU'}; fast-bf16 CPU flags: {flags})"
    )


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


__all__ = [
    "FAST_BF16_CPU_FLAGS",
    "PRECISION_CHOICES",
    "bf16_is_fast",
    "check_precision",
    "cpu_flags",
    "cuda_bf16",
    "default_threads",
    "describe",
    "fast_bf16_cpu_flags",
    "load_average",
    "hardware_summary",
    "resolve_bf16",
    "use_bf16",
    "warn_slow_bf16",
]
