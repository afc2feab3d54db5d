"""The GRPO scenario: plain GRPO vs AGL on the experiments' shared set-up, the demo's task as a verifiable reward.

The command line of :mod:`agl_trl.experiments.grpo_bench` (validation sweep of AGL's kl_budget, the peers' choice
rule, test with every seed). Resumable: one JSON line per (split, method, strength, seed) in ``<out>/grpo.jsonl``.

    python benchmarks/grpo.py --tiny --out /tmp/g     # smoke run on a random tiny Llama (seconds; used by the tests)
    python benchmarks/grpo.py --demo-dir runs/peers/demo   # SmolLM2, reusing the peers benchmark's set-up stages
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agl_trl.experiments.grpo_bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
