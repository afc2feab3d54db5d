"""The held-out-style protocol of the peers benchmark (docs/generalization.md): style folds and the rule that
chooses the package default by its worst fold. The command line of :mod:`benchmarks.lab.peers_folds`; resumable.

    python benchmarks/peers_folds.py --threads 2          # every fold x candidate on validation (~3 h, 2 cores)
    python benchmarks/peers_folds.py --report             # the fold table and the rule's verdict so far
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

from benchmarks.lab.peers_folds import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
