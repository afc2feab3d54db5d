"""Fisher estimation under torch.distributed (2 CPU processes, gloo) when a rank gets no probe sequence.

Each rank takes ``sequences[rank::world]``: with one probe record, rank 1 has nothing to run. Every rank must still
run the same collectives in the same order (no hang) and end with the artifact a single process estimates on the
same records. This file is also the worker: ``python -m torch.distributed.run ... test_fisher_distributed.py OUT``.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from tests.helpers.distributed import run_two_processes

ROOT = Path(__file__).resolve().parents[2]

# name -> (number of probe records, FisherSettings keywords). One record: rank 1 gets no sequence at all.
CASES = {
    "kfac-all": (1, dict(max_rank=8)),
    "kfac-response": (1, dict(max_rank=8, positions="response")),
    "diagonal": (1, dict(estimator="diagonal")),
    "nystrom": (1, dict(max_rank=4, sketch="nystrom")),
    # uneven shards (2 and 1 sequences): empirical targets, so the sum does not depend on the per-rank sampling seed
    "kfac-all-uneven": (3, dict(max_rank=8, targets="empirical")),
}


def _summary(artifact) -> dict:
    return {
        "tensors": {name: m.tensors() for name, m in artifact.modules.items()},
        "traces": {name: (m.trace_out, m.trace_in) for name, m in artifact.modules.items()},
        "tokens": (artifact.metadata["tokens"], artifact.metadata["tokens_all"]),
        "world_size": artifact.metadata["world_size"],
    }


def _worker(out: Path) -> None:
    import torch.distributed as dist

    from agl_trl.fisher import FisherSettings, estimate_fisher
    from tests.helpers.lora_models import PROBE, make_lora_model

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    model, tokenizer = make_lora_model()
    results: dict[str, dict] = {}
    if rank == 0:  # the single-process reference, before the process group exists
        for name, (count, options) in CASES.items():
            settings = FisherSettings(batch_size=4, **options)
            results[f"{name}/single"] = _summary(estimate_fisher(model, tokenizer, PROBE[:count], settings, False))
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        for name, (count, options) in CASES.items():
            settings = FisherSettings(batch_size=4, **options)
            results[name] = _summary(estimate_fisher(model, tokenizer, PROBE[:count], settings, False))
    finally:
        dist.destroy_process_group()
    torch.save(results, out / f"rank{rank}.pt")


def test_a_rank_without_probe_sequences_does_not_hang_and_ranks_agree(tmp_path):
    run_two_processes(
        Path(__file__).resolve(), str(tmp_path), cwd=tmp_path, timeout=150, path=[ROOT],
        what="distributed Fisher estimation (rank 1 has no probe sequence)",
    )  # fmt: skip
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for name in CASES:
        single, first, second = ranks[0][f"{name}/single"], ranks[0][name], ranks[1][name]
        assert first["world_size"] == second["world_size"] == 2 and single["world_size"] == 1
        assert first["tokens"] == second["tokens"] == single["tokens"], name
        assert set(first["tensors"]) == set(second["tensors"]) == set(single["tensors"]), name
        for module, tensors in single["tensors"].items():
            assert first["traces"][module] == second["traces"][module], (name, module)
            assert first["traces"][module] == pytest.approx(single["traces"][module], rel=1e-5), (name, module)
            for key, value in tensors.items():
                torch.testing.assert_close(
                    second["tensors"][module][key], first["tensors"][module][key], rtol=0, atol=0
                )
                # eigenvectors are defined up to sign: compare the projector q diag(eig) q^T for q_*, else the values
                got = first["tensors"][module][key]
                if key.startswith("q_"):
                    eig = tensors["eig" + key[1:]]
                    value = value * eig.sqrt()
                    got = got * first["tensors"][module]["eig" + key[1:]].sqrt()
                    value, got = value @ value.T, got @ got.T
                torch.testing.assert_close(
                    got, value, rtol=1e-4, atol=1e-6 * float(value.abs().max()), msg=f"{name} {module} {key}"
                )


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
