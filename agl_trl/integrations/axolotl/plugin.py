"""``AGLPlugin``: AlignGuard-LoRA for Axolotl, switched on from YAML.

```yaml
plugins:
  - agl_trl.integrations.axolotl.AGLPlugin
agl_enabled: true
```

After Axolotl has built its trainer (SFT ``AxolotlTrainer``, a preference trainer: DPO/IPO, KTO, ORPO, SimPO/CPO, or
the online ``AxolotlGRPOTrainer`` of ``rl: grpo``), the plugin swaps the trainer's class for a dynamic
subclass ``(AGLLossMixin, type(trainer))`` and calls ``attach_agl``, which loads or estimates the Fisher, adds the regulariser to ``compute_loss`` with the right gradient-accumulation
scaling and logs ``agl/*``. It never returns a class from ``get_trainer_cls`` (Axolotl's RL builder would then build
the trainer without its model/ref-model arguments), and it does nothing unless ``agl_enabled: true``.
"""

from __future__ import annotations

from typing import Any

try:
    from axolotl.integrations.base import BasePlugin
except ImportError as exc:  # pragma: no cover - exercised only where axolotl is missing
    raise ImportError(
        "agl_trl.integrations.axolotl.AGLPlugin needs Axolotl, which is not importable here "
        f"({exc}). Install it in this environment (`pip install axolotl`; see "
        "agl_trl/integrations/axolotl/README.md) or use the TRL trainers (`agl-trl sft|dpo ...`) instead."
    ) from exc

from agl_trl.integrations.axolotl.args import SUPPORTED_RL

ARGS_PATH = "agl_trl.integrations.axolotl.args.AGLAxolotlArgs"


def _rl_name(cfg: Any) -> str | None:
    rl = cfg.get("rl") if hasattr(cfg, "get") else getattr(cfg, "rl", None)
    rl = getattr(rl, "value", rl)
    return str(rl) if rl else None


class AGLPlugin(BasePlugin):
    """Axolotl plugin adding the AGL regulariser to SFT, preference (DPO/IPO, KTO, ORPO, SimPO) and online RL (GRPO)
    training."""

    def get_input_args(self) -> str:
        return ARGS_PATH

    def on_config_validation_error(self, cfg: Any) -> None:
        """AGL's user errors as one line each, without Axolotl's traceback (``errors.report_validation_error``)."""
        from agl_trl.integrations.axolotl.errors import report_validation_error

        report_validation_error(cfg)

    def post_trainer_create(self, cfg: Any, trainer: Any) -> None:
        """Turn ``trainer`` into an AGL trainer in place (no-op unless ``cfg.agl_enabled``)."""
        if not cfg.get("agl_enabled"):
            return
        rl = _rl_name(cfg)
        if rl not in SUPPORTED_RL:  # the args validator already refuses these; guard direct callers too
            raise ValueError(
                f"AGLPlugin does not support `rl: {rl}` (supported: SFT, {', '.join(filter(None, SUPPORTED_RL))})."
            )
        from agl_trl.trainers import enable_agl

        show_info_lines_in_axolotl()
        # trainer.__class__ -> AGL<Name>(AGLLossMixin, type(trainer)), then attach_agl(trainer, cfg)
        enable_agl(trainer, cfg)


def show_info_lines_in_axolotl() -> None:
    """AGL's INFO lines (start-up plan, resume, summary) on Axolotl's console, in its format: its console handler
    shows other libraries' records from WARNING up only (``LOG_LEVEL``), so they would reach its debug file alone."""
    import logging
    import sys

    from agl_trl.logs import show_info_lines

    # its console handler is the filtered one (the other writes its debug file)
    console = next((h for h in logging.getLogger("axolotl").handlers if h.filters and hasattr(h, "stream")), None)
    show_info_lines(getattr(console, "stream", sys.stdout), getattr(console, "formatter", None))


__all__ = ["AGLPlugin"]
