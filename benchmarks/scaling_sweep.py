"""The forgetting scaling sweep: plain LoRA and AGL on the demo's set-up, forgetting measured at several budgets into
``<out>/runs.jsonl`` (resumable), then fitted by ``agl-trl scaling`` (docs/scaling.md).

The command line of :mod:`benchmarks.lab.scaling_sweep`; options other than the sweep's go to the fit.

    python benchmarks/scaling_sweep.py --out runs/scaling                  # the demo's --quick set-up, 2 seeds
    python benchmarks/scaling_sweep.py --sweep-size tiny --seeds 1 --out /tmp/s --bootstrap 0   # smoke run
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

from benchmarks.lab.scaling_sweep import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
