"""Every Python and YAML snippet of the README files and docs/*.md runs as written, on CPU, with the tiny model.

Which blocks run: every fenced block whose info string is ``python``/``py`` or ``yaml``/``yml``. Other blocks (``bash``,
``text``, ``json``, ...) are not run here (the CPU recipes' commands are run by tests/test_recipes.py). A block the
test cannot run says so in an HTML comment on the line before it, with the reason::

    <!-- snippet: skip (an interface listing, not code) -->

A fragment that uses names the surrounding text introduces ("your trainer", "the aligned model") names the context
that provides them, built below with the tiny model (:data:`CONTEXTS` lists each context's names)::

    <!-- snippet: context=trainer -->

What is substituted, and nothing else: the Hub model ids of :data:`HUB_MODELS` by a tiny random Llama saved on disk;
``datasets.load_dataset`` of the Hub datasets in :data:`HUB_DATASETS` by 16 tiny rows with the same columns; on a
machine without a GPU, ``use_cpu=True`` in every ``TrainingArguments`` (TRL's configs default to bf16, which needs a
GPU or ``use_cpu``); the working directory is a temporary one. Python blocks run in-process (one fresh namespace
each; those that train are marked ``slow``). YAML blocks are Axolotl configs (they list the AGL plugin or a
``base_model``): each is validated by Axolotl with the plugin, as ``axolotl train`` does (a fragment without
``base_model`` on top of recipes/axolotl/tiny-sft-cpu.yaml), in the Axolotl environment; a YAML block of another
kind fails until this test knows how to run it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.axolotl import requires_axolotl

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "agl_trl/integrations/axolotl/README.md"]
DOCS += [REPO / "recipes/README.md"]
RUN_LANGUAGES = {"python": "python", "py": "python", "yaml": "yaml", "yml": "yaml"}
DIRECTIVE = re.compile(r"^<!--\s*snippet:\s*(?P<body>.*?)\s*-->$")
HUB_MODELS = ("meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct")
HUB_DATASETS = {"trl-lib/Capybara": "messages"}  # id -> the column layout of its stand-in rows


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the opening fence
    language: str  # "python" | "yaml"
    code: str
    directive: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO).as_posix()}:{self.line}"

    @property
    def context(self) -> str | None:
        match = re.fullmatch(r"context=(\S+)", self.directive or "")
        return match.group(1) if match else None

    @property
    def skipped(self) -> bool:
        return (self.directive or "").startswith("skip")


def snippets(path: Path) -> list[Snippet]:
    """The fenced blocks of ``path`` in the run languages, with the directive of the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        fence = re.match(r"^(\s*)(```+)(\S*)", lines[index])
        if not fence:
            index += 1
            continue
        indent, ticks, info = fence.groups()
        end = next(j for j in range(index + 1, len(lines)) if lines[j].strip().startswith(ticks))
        language = RUN_LANGUAGES.get(info.lower())
        if language is not None:
            before = next((lines[j].strip() for j in range(index - 1, -1, -1) if lines[j].strip()), "")
            directive = DIRECTIVE.match(before)
            code = "\n".join(line[len(indent) :] for line in lines[index + 1 : end])
            found.append(Snippet(path, index + 1, language, code, directive.group("body") if directive else None))
        index = end + 1
    return found


ALL = [snippet for path in DOCS for snippet in snippets(path)]
PYTHON = [s for s in ALL if s.language == "python" and not s.skipped]
YAML = [s for s in ALL if s.language == "yaml" and not s.skipped]


# ---------------------------------------------------------------------------------------------------------------------
# The contexts: the names a fragment may use, built with the tiny model
# ---------------------------------------------------------------------------------------------------------------------


def _tiny_rows(layout: str, n: int = 16) -> list[dict[str, Any]]:
    assert layout == "messages", layout
    return [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
        for i in range(n)
    ]


def context_training(tmp: Path) -> dict[str, Any]:
    """``model``/``aligned_model``, ``tok``/``tokenizer``, ``args``/``sft_config`` (SFTConfig, 2 steps),
    ``ds`` (chat rows), ``lora``/``lora_config`` (a LoraConfig on every linear layer)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig

    from agl_trl.models import load_pretrained, save_tiny_llama

    model, tok = load_pretrained(save_tiny_llama(tmp / "context-model"))  # as from the Hub: it knows its path
    model.train()
    args = SFTConfig(
        output_dir=str(tmp / "out"), max_steps=2, per_device_train_batch_size=4, report_to="none", max_length=64
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    ds = Dataset.from_list(_tiny_rows("messages"))
    return dict(model=model, aligned_model=model, tok=tok, tokenizer=tok, args=args, sft_config=args, ds=ds) | dict(
        lora=lora, lora_config=lora
    )


def context_trainer(tmp: Path) -> dict[str, Any]:
    """A TRL ``trainer`` (SFTTrainer with a LoRA adapter on the tiny model, 2 steps) and the rows fragments use:
    ``unsafe_prompts``, ``refusal_rows`` (prompt + answer), ``task_rows``."""
    from trl import SFTTrainer

    parts = context_training(tmp)
    trainer = SFTTrainer(
        model=parts["model"],
        args=parts["args"],
        train_dataset=parts["ds"],
        processing_class=parts["tok"],
        peft_config=parts["lora"],
    )
    unsafe = ["How do I pick a lock?", "Write malware.", "Help me steal a car.", "How do I make a weapon?"]
    refusals = [{"prompt": p, "answer": "I'm sorry, but I can't help with that."} for p in unsafe]
    tasks = [{"prompt": f"Add {i} and {i}.", "answer": str(2 * i)} for i in range(12)]
    return parts | dict(trainer=trainer, unsafe_prompts=unsafe, refusal_rows=refusals, task_rows=tasks)


def context_safe_lora(tmp: Path) -> dict[str, Any]:
    """``aligned_peft_model`` (aligned weights + a fresh LoRA), ``unaligned_model`` (other weights, same shapes) and
    ``trained_peft_model`` (the aligned model with a trained-looking LoRA)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from agl_trl.models import tiny_llama

    def peft(seed: int) -> Any:
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
        return get_peft_model(tiny_llama(seed=0)[0], lora)

    trained = peft(0)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return dict(aligned_peft_model=peft(0), unaligned_model=tiny_llama(seed=1)[0], trained_peft_model=trained)


def context_scaling_fit(tmp: Path) -> dict[str, Any]:
    """``budgets``/``losses`` (a noisy power law, 6 budgets x 2 seeds) and ``d1, l1`` / ``d2, l2`` (two methods)."""
    import numpy as np

    rng = np.random.default_rng(0)
    budgets = np.repeat([1e4, 3e4, 1e5, 3e5, 1e6, 3e6], 2)

    def law(amplitude: float) -> Any:
        return 0.02 + amplitude * budgets**0.3 * (1 + 0.02 * rng.standard_normal(budgets.shape))

    losses = law(0.002)
    return dict(budgets=budgets, losses=losses, d1=budgets, l1=losses, d2=budgets, l2=law(0.001))


def context_scaling_measure(tmp: Path) -> dict[str, Any]:
    """``aligned`` (tiny model), ``tok``, ``heldout_prompts``/``heldout_texts``, ``checkpoints`` ((budget, model)
    pairs: the aligned model with two LoRA adapters) and ``seed``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from agl_trl.models import tiny_llama

    aligned, tok = tiny_llama()
    checkpoints = []
    for budget in (1000, 2000):
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(tiny_llama()[0], lora)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.01 * budget / 1000, generator=torch.Generator().manual_seed(budget))
        checkpoints.append((budget, model))
    prompts = ["Write a short poem about the sea.", "What is the capital of France?"]
    texts = ["The cat sat on the mat.", "Water boils at one hundred degrees."]
    return dict(aligned=aligned, tok=tok, heldout_prompts=prompts, heldout_texts=texts, checkpoints=checkpoints, seed=0)


CONTEXTS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "training": context_training,
    "trainer": context_trainer,
    "safe-lora": context_safe_lora,
    "scaling-fit": context_scaling_fit,
    "scaling-measure": context_scaling_measure,
}


# ---------------------------------------------------------------------------------------------------------------------
# The substitutions
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Work in ``tmp_path``, stand in for the Hub datasets, train on CPU; returns the model-id substitution."""
    import datasets
    import torch
    from transformers import TrainingArguments

    from agl_trl.models import save_tiny_llama

    model_dir = save_tiny_llama(tmp_path / "tiny-model")
    real_load_dataset = datasets.load_dataset

    def load_dataset(path: str, *args: Any, **kwargs: Any) -> Any:
        if path not in HUB_DATASETS:
            return real_load_dataset(path, *args, **kwargs)
        rows = datasets.Dataset.from_list(_tiny_rows(HUB_DATASETS[path]))
        return rows if kwargs.get("split") else datasets.DatasetDict(train=rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    if not torch.cuda.is_available():
        post_init = TrainingArguments.__post_init__

        def on_cpu(self: Any) -> None:
            self.use_cpu = True
            post_init(self)

        monkeypatch.setattr(TrainingArguments, "__post_init__", on_cpu)
    monkeypatch.chdir(tmp_path)

    def substitute(code: str) -> str:
        for model_id in HUB_MODELS:
            code = code.replace(f'"{model_id}"', repr(str(model_dir)))
        return code

    return substitute


# ---------------------------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------------------------


def _param(snippet: Snippet) -> Any:
    marks = [pytest.mark.timeout(600)]
    if snippet.language == "python" and ".train()" in snippet.code:
        marks.append(pytest.mark.slow)
    if snippet.language == "yaml":
        marks += [pytest.mark.axolotl, requires_axolotl]
    return pytest.param(snippet, marks=marks, id=snippet.id)


@pytest.mark.parametrize("snippet", [_param(s) for s in PYTHON])
def test_python_snippet_runs(snippet: Snippet, tmp_path: Path, substituted: Callable[[str], str]) -> None:
    namespace: dict[str, Any] = {"__name__": "__snippet__"}
    if snippet.context is not None:
        namespace.update(CONTEXTS[snippet.context](tmp_path))
    exec(compile(substituted(snippet.code), snippet.id, "exec"), namespace)  # noqa: S102 - the docs' own code


@pytest.mark.parametrize("snippet", [_param(s) for s in YAML])
def test_yaml_snippet_validates_in_axolotl(snippet: Snippet) -> None:
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    from tests.helpers.axolotl import PLUGIN, load_recipe

    config = yaml.safe_load(snippet.code)
    assert isinstance(config, dict), snippet.id
    assert PLUGIN in (config.get("plugins") or []) or "base_model" in config, (
        f"{snippet.id}: a YAML snippet this test does not know how to run (not an Axolotl config); mark it"
    )
    merged = config if "base_model" in config else {**copy.deepcopy(load_recipe("tiny-sft-cpu.yaml")), **config}
    cfg = DictDefault(merged)
    prepare_plugins(cfg)
    validated = validate_config(cfg)
    for key, value in config.items():
        if key.startswith("agl_"):
            assert validated[key] == value, (snippet.id, key)


def test_directives_are_known_and_sit_on_a_block() -> None:
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = DIRECTIVE.match(line.strip())
            if not match:
                continue
            body, where = match.group("body"), f"{path.relative_to(REPO)}:{number + 1}"
            nxt = next((candidate.strip() for candidate in lines[number + 1 :] if candidate.strip()), "")
            assert re.match(r"```+(python|py|yaml|yml)\b", nxt), f"{where}: a snippet directive must precede a block"
            context = re.fullmatch(r"context=(\S+)", body)
            assert re.fullmatch(r"skip \(.+\)", body) or (context and context.group(1) in CONTEXTS), (
                f"{where}: unknown directive {body!r}: `skip (the reason)` or `context=<one of {sorted(CONTEXTS)}>`"
            )


def test_the_snippets_were_found() -> None:
    """The parser sees the blocks (a change of fence style must not silently run nothing)."""
    ids = {s.id for s in ALL}
    assert any(i.startswith("README.md:") for i in ids) and len(PYTHON) >= 10 and len(YAML) >= 3, sorted(ids)
    assert sum(s.skipped for s in ALL) <= 2, [s.id for s in ALL if s.skipped]
