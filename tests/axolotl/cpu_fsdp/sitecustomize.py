"""Test-only shim, on PYTHONPATH of the two-process ``axolotl train`` in tests/axolotl/test_fsdp.py: lets Axolotl's and
accelerate's FSDP2 path run on a CPU-only machine (gloo). Two CUDA assumptions are bent, nothing else:

* Axolotl 0.21 builds its device mesh on ``"cuda"`` unconditionally (``axolotl.utils.distributed.
  build_parallelism_config``): built on ``"cpu"`` here;
* accelerate drops the FSDP plugin when no accelerator is present (``AcceleratorState`` lists accelerators only):
  kept here, exactly as tests/trainers/fsdp_worker.py does for the TRL path.

Everything after that (Axolotl's FSDP2 wrapping, its LoRA handling, the plugin, AGL) is the code users run on GPUs.
"""

try:
    import torch

    if not torch.cuda.is_available():
        from accelerate import parallelism_config
        from accelerate.state import AcceleratorState, PartialState
        from accelerate.utils import DistributedType

        _build_device_mesh = parallelism_config.ParallelismConfig.build_device_mesh

        def _build_on_cpu(self, device_type):
            return _build_device_mesh(self, "cpu")

        parallelism_config.ParallelismConfig.build_device_mesh = _build_on_cpu
        _state_init = AcceleratorState.__init__

        def _keep_fsdp(self, *args, fsdp_plugin=None, **kwargs):
            _state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
            if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
                PartialState._shared_state["distributed_type"] = DistributedType.FSDP
                self.distributed_type = DistributedType.FSDP
                self.fsdp_plugin = fsdp_plugin

        AcceleratorState.__init__ = _keep_fsdp
except ImportError:  # not the Axolotl environment: nothing to bend
    pass
