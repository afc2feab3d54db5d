"""Test-only shim, on PYTHONPATH (with the repository root) of the two-process ``axolotl train`` in
tests/axolotl/test_fsdp.py: lets Axolotl's and accelerate's FSDP2 path run on a CPU-only machine (gloo) by bending
two CUDA assumptions (:mod:`tests.helpers.distributed`): Axolotl's device mesh is built on ``"cpu"``, and accelerate
keeps its FSDP plugin without an accelerator. Everything after that (Axolotl's FSDP2 wrapping, its LoRA handling, the
plugin, AGL) is the code users run on GPUs.
"""

try:
    import torch

    if not torch.cuda.is_available():
        from tests.helpers.distributed import allow_fsdp_on_cpu, build_device_mesh_on_cpu

        build_device_mesh_on_cpu()
        allow_fsdp_on_cpu()
except ImportError:  # not the Axolotl environment: nothing to bend
    pass
