"""Turn ``peers.jsonl`` (benchmarks/peers.py) into docs/peers.md tables (mean ± SD over seeds) and a Pareto plot.

The command line of :mod:`agl_trl.experiments.peers_report`.

    python benchmarks/peers_report.py runs/peers/peers.jsonl --out docs
"""

from __future__ import annotations

from agl_trl.experiments.peers_report import main

if __name__ == "__main__":
    raise SystemExit(main())
