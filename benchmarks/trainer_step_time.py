"""Step time of plain LoRA and each default candidate through the real TRL trainer (meter and anchor included),
side by side in one process, at 4 x 128 and 8 x 256 tokens. The command line of :mod:`benchmarks.lab.step_time`;
resumable; the fold rule reads its cost criterion from the committed rows.

    python benchmarks/trainer_step_time.py --threads 2              # every candidate, both shapes, 3 rounds
    python benchmarks/trainer_step_time.py --methods agl_kl_anchor:0.1 --shapes 8x256 --rounds 2
    python benchmarks/trainer_step_time.py --report                 # the table from the committed rows
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

from benchmarks.lab.peers_folds import CANDIDATES  # noqa: E402
from benchmarks.lab.step_time import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(candidates=CANDIDATES))
