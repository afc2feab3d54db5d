"""AGL against its peers and its ablations, on the experiments' shared set-up (docs/benchmarks.md, "Peers").

The command line (:mod:`benchmarks.lab.peers_cli`) of :mod:`benchmarks.lab.peers` (the protocol: sweep every method's strength on the validation
split, choose, then every test seed; the methods: :mod:`benchmarks.lab.registry`). Resumable: one JSON line per
finished (split, method, strength, seed) in ``<out>/peers.jsonl``; a rerun skips those. ``--report`` (or
``benchmarks/peers_report.py``) turns the file into docs/peers.md and its plots.

    python benchmarks/peers.py --threads 2        # the full protocol, 13 methods, 3 test seeds each (~22 h, 2 cores)
    python benchmarks/peers.py --quick            # the demo's --quick sizes, indicative only
    python benchmarks/peers.py --methods agl,kl_ref --max-runs 2   # a subset, a budgeted slice
    python benchmarks/peers.py --point validation:agl_no_collision:0.03:1   # an extra point, done first
    python benchmarks/peers.py --tiny --out /tmp/p  # smoke run on a random tiny Llama (used by the tests)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

from benchmarks.lab.peers_cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
