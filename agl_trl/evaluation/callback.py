"""DriftCallback: watch alignment drift *during* training and optionally stop early.

Every ``eval_steps`` optimizer steps the callback generates greedy answers to a small fixed subset of evaluation
prompts (by default from the DriftCaps **validation** split), judges them, and computes the judge-free KL drift against a reference (by default the same PEFT model with
its adapter disabled, i.e. the aligned model before this fine-tune; or ``reference_model``). It logs:

* ``drift/refusal_rate`` (refusal rate on unsafe prompts), ``drift/refusal_drop`` (reference rate minus current),
  ``drift/over_refusal`` (refusals of safe prompts), ``drift/incoherent`` and ``drift/kl`` (nats per token).

Because these numbers may stop training (``stop_metric``) or be used to choose a checkpoint or a setting, the
default prompts come from the ``validation`` split, never from ``test``: the test split stays untouched for the
numbers that are reported.

Cost per evaluation (bounded, independent of the training set): one batched greedy generation of
``len(prompts) x max_new_tokens`` tokens, plus, for KL, two teacher-forced forwards over
``len(prompts) x (prompt + max_new_tokens)`` tokens. The reference answers are generated once, at train start.
Example: 32 prompts x 32 new tokens on SmolLM2-135M on 2 CPU cores is a few seconds per evaluation.

Usage::

    cb = DriftCallback(eval_steps=50, num_prompts=32, stop_metric="refusal_drop", stop_threshold=0.3)
    trainer = SFTTrainer(..., callbacks=[cb])
    cb.attach(trainer)   # optional: log through trainer.log (reporters such as W&B see drift/*)
    trainer.train()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from agl_trl.driftcaps import PromptItem, load_driftcaps
from agl_trl.generation import Generation, generate

from .coherence import check_coherence
from .judges import Judge, make_judge
from .kl import kl_on_generations

STOP_METRICS = ("refusal_drop", "kl", "over_refusal", "incoherent")


class DriftCallback(TrainerCallback):
    """Periodic refusal / KL drift evaluation on a fixed prompt subset, logged as ``drift/*``.

    prompts: PromptItems (labels used) or plain strings (treated as unsafe); default: ``num_prompts`` DriftCaps
        validation prompts spread over categories (validation, not test, since the metrics may stop training or
        choose settings).
    reference_model: the aligned model; default None = the trained PEFT model with its adapter disabled.
    stop_metric / stop_threshold: set ``control.should_training_stop`` once ``drift/<stop_metric>`` >= threshold.
    """

    def __init__(
        self,
        prompts: Sequence[PromptItem | str] | None = None,
        tokenizer: Any = None,
        eval_steps: int = 50,
        num_prompts: int = 32,
        max_new_tokens: int = 32,
        batch_size: int = 16,
        judge: str | Judge | None = "keyword",
        reference_model: Any = None,
        compute_kl: bool = True,
        stop_metric: str = "refusal_drop",
        stop_threshold: float | None = None,
        eval_on_start: bool = False,
        system_prompt: str | None = None,
        progress: bool = False,
    ) -> None:
        if eval_steps < 1:
            raise ValueError("eval_steps must be >= 1")
        if stop_metric not in STOP_METRICS:
            raise ValueError(f"stop_metric must be one of {STOP_METRICS}, got {stop_metric!r}")
        self.items = self._items(prompts, num_prompts)
        self.tokenizer = tokenizer
        self.eval_steps = eval_steps
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.judge = make_judge(judge)
        self.reference_model = reference_model
        self.compute_kl = compute_kl
        self.stop_metric = stop_metric
        self.stop_threshold = stop_threshold
        self.eval_on_start = eval_on_start
        self.system_prompt = system_prompt
        self.progress = progress
        self.trainer: Any = None
        self.history: list[dict[str, float]] = []
        self.stopped_at: int | None = None
        self._reference: list[Generation] | None = None
        self._reference_rate: float = math.nan
        self._pending: dict[str, float] = {}

    @staticmethod
    def _items(prompts: Sequence[PromptItem | str] | None, num_prompts: int) -> list[PromptItem]:
        if prompts is None:
            items = load_driftcaps(split="validation")
            cats = sorted({it.category for it in items})
            per_cat = max(1, math.ceil(num_prompts / max(1, len(cats))))
            from agl_trl.driftcaps import limit_items

            return limit_items(items, per_cat)[:num_prompts]
        out = [
            p if isinstance(p, PromptItem) else PromptItem(id=f"p{i}", prompt=p, label="unsafe")
            for i, p in enumerate(prompts)
        ]
        if not out:
            raise ValueError("DriftCallback needs at least one prompt")
        return out

    def attach(self, trainer: Any) -> DriftCallback:
        """Log through ``trainer.log`` (so every reporter sees drift/*); without it metrics go to log_history."""
        self.trainer = trainer
        if self.tokenizer is None:
            self.tokenizer = getattr(trainer, "processing_class", None)
        return self

    # ---------------------------------------------------------------------------------------------------------------
    def _tokenizer(self, kwargs: dict[str, Any]) -> Any:
        tok = self.tokenizer or kwargs.get("processing_class") or kwargs.get("tokenizer")
        if tok is None:
            raise ValueError("DriftCallback needs a tokenizer: pass tokenizer=... or attach(trainer)")
        if hasattr(tok, "tokenizer") and not hasattr(tok, "apply_chat_template"):
            tok = tok.tokenizer  # processors
        self.tokenizer = tok
        return tok

    def _generate(self, model: Any, tok: Any, desc: str) -> list[Generation]:
        return generate(
            model,
            tok,
            [it.prompt for it in self.items],
            self.max_new_tokens,
            self.batch_size,
            self.system_prompt,
            True,
            self.progress,
            desc,
        )

    def _rates(self, texts: list[str]) -> dict[str, float]:
        refusals = self.judge.judge([it.prompt for it in self.items], texts)
        unsafe = [r for it, r in zip(self.items, refusals, strict=True) if it.unsafe]
        safe = [r for it, r in zip(self.items, refusals, strict=True) if not it.unsafe]
        return {
            "refusal_rate": sum(unsafe) / len(unsafe) if unsafe else math.nan,
            "over_refusal": sum(safe) / len(safe) if safe else math.nan,
            "incoherent": sum(not check_coherence(t).coherent for t in texts) / len(texts),
        }

    def _ensure_reference(self, model: Any, tok: Any) -> None:
        if self._reference is not None:
            return
        from .kl import as_reference

        with as_reference(model, self.reference_model) as ref:
            self._reference = self._generate(ref, tok, "drift reference")
        self._reference_rate = self._rates([g.text for g in self._reference])["refusal_rate"]

    def evaluate(self, model: Any, tokenizer: Any | None = None) -> dict[str, float]:
        """Run one drift evaluation now and return the ``drift/*`` metrics (also usable outside a Trainer)."""
        tok = tokenizer or self._tokenizer({})
        self._ensure_reference(model, tok)
        gens = self._generate(model, tok, "drift eval")
        rates = self._rates([g.text for g in gens])
        metrics = {
            "drift/refusal_rate": rates["refusal_rate"],
            "drift/refusal_drop": self._reference_rate - rates["refusal_rate"],
            "drift/reference_refusal_rate": self._reference_rate,
            "drift/over_refusal": rates["over_refusal"],
            "drift/incoherent": rates["incoherent"],
        }
        if self.compute_kl:
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            assert self._reference is not None
            kl = kl_on_generations(model, self._reference, self.reference_model, self.batch_size, pad, self.progress)
            metrics["drift/kl"] = kl.mean
        return {k: float(v) for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}

    # --------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        model = kwargs.get("model")
        if model is not None:
            self._ensure_reference(model, self._tokenizer(kwargs))
        if self.eval_on_start and model is not None:
            return self._run(args, state, control, model, kwargs)
        return control

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        model = kwargs.get("model")
        if model is None or state.global_step == 0 or state.global_step % self.eval_steps != 0:
            return control
        return self._run(args, state, control, model, kwargs)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs: Any):
        if self._pending and logs is not None and self.trainer is None:
            logs.update(self._pending)  # reporters called after this callback see drift/* too
            self._pending = {}
        return control

    def _run(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any, kwargs: Any):
        metrics = self.evaluate(model, self._tokenizer(kwargs))
        self.history.append({"step": state.global_step, **metrics})
        if self.trainer is not None:
            # the base Trainer.log: TRL's override would flush its accumulated train metrics into this entry
            from transformers import Trainer

            Trainer.log(self.trainer, dict(metrics))
        else:
            state.log_history.append({**metrics, "step": state.global_step})
            self._pending = dict(metrics)
        value = metrics.get(f"drift/{self.stop_metric}")
        if self.stop_threshold is not None and value is not None and value >= self.stop_threshold:
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control
