"""The trainer kinds AGL wraps: one row per TRL trainer (no torch or trl import here).

Every place that lists the kinds iterates :data:`TRAINER_KINDS`: the AGL configs (``agl_trl.config``), the AGL
trainers (``agl_trl.trainers``), the training script (``agl_trl.scripts.train``), the ``agl-trl`` commands and the
tests. What differs between the kinds' scripts is data in the row (which script arguments, whether the trainer takes
rewards or a ``quantization_config``, whether the script honours ``ignore_bias_buffers``), so adding a TRL trainer
is one row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainerKind:
    """One TRL trainer as AGL wraps it.

    ``trl_config`` / ``trl_trainer`` / ``script_arguments`` are ``"module:Class"`` paths, imported on use.
    """

    name: str
    """The command and script argument: ``agl-trl <name>``."""
    title: str
    """What the trainer does, for the command's help (``"DPO"``, ``"Supervised fine-tuning"``)."""
    trl_config: str
    trl_trainer: str
    dataset: str
    """The dataset format the TRL trainer reads (docs/trainers.md)."""
    script_arguments: str = "trl:ScriptArguments"
    """TRL's script-arguments dataclass of ``trl <name>`` (the online kinds' add ``reward_funcs``)."""
    rewards: bool = False
    """Online RL: the trainer takes ``reward_funcs`` (resolved from the script arguments as ``trl <name>`` does)."""
    takes_quantization_config: bool = True
    """False: the trainer has no ``quantization_config`` argument; it goes through ``model_init_kwargs``."""
    ignore_bias_buffers: bool = False
    """The script honours ``ignore_bias_buffers`` (DDP ignores the model's boolean buffers), as ``trl dpo`` does."""

    @property
    def trl_name(self) -> str:
        """TRL's class prefix: ``"SFT"`` for ``SFTTrainer``."""
        return self.trl_trainer.rpartition(":")[2].removesuffix("Trainer")

    @property
    def config_name(self) -> str:
        """``AGL<TRL>Config``, in ``agl_trl.config``."""
        return f"AGL{self.trl_name}Config"

    @property
    def trainer_name(self) -> str:
        """``AGL<TRL>Trainer``, in ``agl_trl.trainers``."""
        return f"AGL{self.trl_name}Trainer"

    @property
    def experimental(self) -> bool:
        """A ``trl.experimental`` trainer: its AGL classes are built on first access (that import is slow and warns)."""
        return self.trl_trainer.startswith("trl.experimental.")

    @property
    def summary(self) -> str:
        """The command's one-line help."""
        notes = [self.trainer_name]
        if self.experimental:
            notes.append("trl.experimental")
        if self.rewards:
            notes[0] += f"; reward_funcs as `trl {self.name}` names them"
        return f"{self.title} with AGL ({', '.join(notes)})"


TRAINER_KINDS: tuple[TrainerKind, ...] = (
    TrainerKind(
        "sft", "Supervised fine-tuning", "trl:SFTConfig", "trl:SFTTrainer", "text, prompt-completion or messages"
    ),
    TrainerKind(
        "dpo",
        "DPO",
        "trl:DPOConfig",
        "trl:DPOTrainer",
        "preference pairs: prompt, chosen, rejected",
        ignore_bias_buffers=True,
    ),
    TrainerKind("kto", "KTO", "trl:KTOConfig", "trl:KTOTrainer", "unpaired preference: prompt, completion, label"),
    TrainerKind(
        "orpo",
        "ORPO",
        "trl.experimental.orpo:ORPOConfig",
        "trl.experimental.orpo:ORPOTrainer",
        "preference pairs: prompt, chosen, rejected",
        takes_quantization_config=False,
    ),
    TrainerKind(
        "cpo",
        "CPO/SimPO",
        "trl.experimental.cpo:CPOConfig",
        "trl.experimental.cpo:CPOTrainer",
        "preference pairs: prompt, chosen, rejected",
        takes_quantization_config=False,
    ),
    TrainerKind(
        "grpo",
        "GRPO",
        "trl:GRPOConfig",
        "trl:GRPOTrainer",
        "prompts (the completions are generated)",
        script_arguments="trl.scripts.grpo:GRPOScriptArguments",
        rewards=True,
    ),
    TrainerKind(
        "rloo",
        "RLOO",
        "trl:RLOOConfig",
        "trl:RLOOTrainer",
        "prompts (the completions are generated)",
        script_arguments="trl.scripts.rloo:RLOOScriptArguments",
        rewards=True,
    ),
)
"""Every trainer kind, in the order the commands and docs list them."""

KINDS_BY_NAME: dict[str, TrainerKind] = {kind.name: kind for kind in TRAINER_KINDS}


def trainer_kind(name: str) -> TrainerKind:
    """The row of ``name`` (``"sft"``, ...); a ``ValueError`` naming the known kinds otherwise."""
    if name not in KINDS_BY_NAME:
        raise ValueError(f"unknown trainer kind {name!r}; choose one of {', '.join(KINDS_BY_NAME)}.")
    return KINDS_BY_NAME[name]


def kinds_table() -> str:
    """The Markdown table of the trainer kinds that docs/trainers.md shows (a test keeps the page equal to it)."""
    rows = ["| command | AGL trainer | TRL parent | AGL config | dataset |", "|---|---|---|---|---|"]
    for kind in TRAINER_KINDS:
        lazy = " (lazy)" if kind.experimental else ""
        parent = kind.trl_trainer.replace(":", ".")
        rows.append(
            f"| `agl-trl {kind.name}` | `{kind.trainer_name}`{lazy} | `{parent}` | `{kind.config_name}` | {kind.dataset} |"
        )
    return "\n".join(rows) + "\n"


__all__ = ["KINDS_BY_NAME", "TRAINER_KINDS", "TrainerKind", "kinds_table", "trainer_kind"]
