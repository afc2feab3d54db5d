"""The keyword judge against reading, on real generations (issue 36, item 4): the command line of
:mod:`benchmarks.lab.judge_audit`.

    python benchmarks/judge_audit.py sample     # the stratified, blind sample of the fold runs' answers
    python benchmarks/judge_audit.py audit      # after reading: agreement, precision, recall, missed refusals
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.lab

from benchmarks.lab.judge_audit import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
