"""AGL against its peers, its ablations, and a stress setting, on the experiments' shared set-up (docs/peers.md).

The command line of :mod:`agl_trl.experiments.peers` (the benchmark; the methods: :mod:`agl_trl.baselines.registry`).
Resumable: one JSON line per finished (scenario, method, seed) in ``<out>/peers.jsonl``; a rerun skips those.
``--report`` (or ``benchmarks/peers_report.py``) turns the file into docs/peers.md and a Pareto plot.

    python benchmarks/peers.py --quick            # < 30 min on 2 idle CPU cores (runs/peers)
    python benchmarks/peers.py                    # 3 seeds, every method, the stress scenario (resumes --quick)
    python benchmarks/peers.py --scale demo       # the same at `make demo` sizes (~5 h)
    python benchmarks/peers.py --tiny --out /tmp/p  # smoke run on a random tiny Llama (used by the tests)
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agl_trl.experiments.peers import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
