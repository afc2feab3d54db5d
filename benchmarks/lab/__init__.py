"""The lab: the project's experiment protocols, outside the installed package (``agl_trl`` never imports it).

- the peers benchmark (``benchmarks/peers.py``): its protocol (:mod:`benchmarks.lab.peers`), sizes, grids and choice
  rule (:mod:`~benchmarks.lab.peers_config`), report (:mod:`~benchmarks.lab.peers_report`, with
  :mod:`~benchmarks.lab.peers_ablations` and :mod:`~benchmarks.lab.peers_styles`) and method registry
  (:mod:`~benchmarks.lab.registry`: names, strengths, ablations, the peers' artifacts, each penalty built by name);
- the GRPO scenario (``benchmarks/grpo.py``, :mod:`~benchmarks.lab.grpo_bench`);
- the forgetting scaling sweep (``benchmarks/scaling_sweep.py``, :mod:`~benchmarks.lab.scaling_sweep`), fitted by the
  package's ``agl-trl scaling``;
- the Monte Carlo exact Fisher (:mod:`~benchmarks.lab.fisher_exact`) that ``benchmarks/fisher_terms.py`` and the
  tests audit K-FAC against.

Importable from the repository root (the tests' working directory); the driver scripts put the root on ``sys.path``.
"""
