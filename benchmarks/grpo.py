"""The GRPO scenario: plain GRPO vs AGL on the experiments' shared set-up, the demo's task as a verifiable reward.

The command line of :mod:`benchmarks.lab.grpo_bench` (validation sweep of AGL's kl_budget, the peers' choice
rule, test with every seed). Resumable: one JSON line per (split, method, strength, seed) in ``<out>/grpo.jsonl``.

    python benchmarks/grpo.py --tiny --out /tmp/g     # smoke run on a random tiny Llama (seconds; used by the tests)
    python benchmarks/grpo.py --demo-dir runs/peers/demo   # SmolLM2, reusing the peers benchmark's set-up stages
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

from benchmarks.lab.grpo_bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
