"""Issue 34's targets on fresh-seed test rows: the command line of :mod:`benchmarks.lab.peers_targets`.

python benchmarks/peers_targets.py docs/results/peers_runs/bf16/peers-v3.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

from benchmarks.lab.peers_targets import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
