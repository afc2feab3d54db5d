"""Turn ``peers.jsonl`` (benchmarks/peers.py) into docs/peers.md tables (mean ± SD over seeds) and a Pareto plot.

The command line of :mod:`benchmarks.lab.peers_report`.

    python benchmarks/peers_report.py runs/peers/peers.jsonl --out docs
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

from benchmarks.lab.peers_report import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
