"""The stress scenarios of the peers benchmark (docs/generalization.md): long (5x steps) and hot (3x learning rate)
task fine-tunes of plain LoRA, the package default and KL to aligned, with the gap drift measured during training.
The command line of :mod:`benchmarks.lab.peers_stress`; resumable.

    python benchmarks/peers_stress.py --threads 2          # base, long and hot on validation (resumable)
    python benchmarks/peers_stress.py --report             # the table and docs/img/stress_<scenario>.png
    python benchmarks/peers_stress.py --tiny --out /tmp/s  # smoke run on a random tiny Llama (used by the tests)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

from benchmarks.lab.peers_stress import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
