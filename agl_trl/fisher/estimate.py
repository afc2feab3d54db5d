"""Estimate the alignment subspace: a Kronecker-factored (default) or diagonal Fisher of every LoRA module at W0.

One pass over the probe data, adapters disabled (the Fisher of the *aligned* weights). The likelihood is the sum of
log p(y_{t+1} | y_<=t) over the positions t that predict a response token (targets sampled from the model: true
Fisher; or the data's: empirical). Forward hooks on each LoRA layer collect its inputs x_t, tensor hooks the
gradients g_t of that summed log-likelihood w.r.t. the layer output at t, at the positions ``positions`` selects:

``"all"`` (default): every non-padding position. The output at a prompt position moves the response's likelihood
through attention, so g_t != 0 there too. The gradient of one sequence is G = sum_t g_t x_t^T over all its positions;
dropping the cross-position terms of E[vec G vec G^T] (K-FAC-expand, Eschenhagen et al. 2023) and factorising,

    sum_t (g_t g_t^T) (x) (x_t x_t^T)  ~=  N_all E_all[g g^T] (x) E_all[x x^T],

summed over the N_all collected positions of the probe set. Divided by the N_resp response tokens (the KL's unit is
nats per response token) this is S_out (x) S_in with

    S_in = (sum_all x x^T) / N_all,     S_out = (sum_all g g^T) / N_resp,

so 0.5 vec(dW)^T (S_out (x) S_in) vec(dW) = 0.5 tr(S_out dW S_in dW^T) estimates KL(aligned || tuned) per response
token. The diagonal estimator keeps the per-position terms without factorising: F_diag = sum_all (g^2)(x^2)^T / N_resp.

``"response"``: only the positions that predict a response token (N_all = N_resp: S_in, S_out and F_diag are all
means over them). It ignores how prompt-position outputs move the response, and underestimates the KL more (about
3x on SmolLM2 for task-like updates; figures on the tiny test model in docs/method.md).

Memory: ``sketch="exact"`` accumulates S_in = sum x x^T and S_out = sum g g^T (d x d per factor; modules that share
an input, like q/k/v, share S_in). ``sketch="nystrom"`` streams a randomised Nystrom sketch Y = S @ Omega instead,
O(d * l) per factor with l = 4 * max_rank + 32 (Tropp et al. 2017), for models whose factors do not fit (8B MLPs).
``"auto"`` picks exact when every factor fits in ``memory_budget_gb``. Under torch.distributed, each rank takes a
shard of the probe data and the sums are all-reduced before the eigendecomposition.

Sharded engines (FSDP2, DeepSpeed ZeRO-3): every forward and backward gathers parameters collectively, so every
rank runs the same number of passes: a rank whose shard is shorter (or holds a batch with no response token) runs
an idle one-token pass that collects nothing. The hooks see full activations (only parameters are sharded).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from agl_trl.fisher.artifact import FisherArtifact, ModuleFisher, model_fingerprint
from agl_trl.fisher.probe import build_sequences, fill_missing_responses, records_hash
from agl_trl.lora import (
    LoraModule,
    adapters_disabled,
    find_lora_modules,
    lora_factors,
    no_cpu_4bit_repacking,
    no_lora_message,
)
from agl_trl.parallel.ranks import max_over_ranks, rank_and_world, same_on_every_rank, sum_over_ranks
from agl_trl.parallel.sharding import enable_fsdp_generate, sharding_engine
from agl_trl.settings import AGLUserError, FisherSettings
from agl_trl.teacher_forcing import collate, predicting_positions

logger = logging.getLogger(__name__)


class _Factor:
    """Running second moment of row vectors: exact (d x d sum) or a Nystrom sketch (d x l)."""

    def __init__(self, dim: int, sketch_width: int | None, seed: int, device: torch.device):
        self.dim = dim
        self.trace = torch.zeros((), dtype=torch.float64, device=device)
        if sketch_width is None or sketch_width >= dim:
            self.omega = None
            self.moment = torch.zeros(dim, dim, device=device)
        else:
            generator = torch.Generator().manual_seed(seed)
            self.omega = torch.randn(dim, sketch_width, generator=generator).to(device)
            self.omega, _ = torch.linalg.qr(self.omega)
            self.moment = torch.zeros(dim, sketch_width, device=device)

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.float()
        self.trace += rows.square().sum().double()
        if self.omega is None:
            self.moment.addmm_(rows.T, rows)
        else:
            self.moment.addmm_(rows.T, rows @ self.omega)

    def all_reduce(self) -> None:
        sum_over_ranks([self.moment, self.trace])

    def top_eigenpairs(self, count: float, max_rank: int, explained: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Kept eigenvectors (d x k), eigenvalues (k), trace of the normalised factor."""
        trace = float(self.trace) / count
        if self.omega is None and 2 * (max_rank + 16) >= self.dim:
            values, vectors = torch.linalg.eigh(self.moment.double() / count)
            values, vectors = values.flip(0).clamp_min(0.0), vectors.flip(1)
        elif self.omega is None:
            # top-k by randomised subspace iteration (2 power steps): within a few % on the kept eigenvalues,
            # well inside the sampling noise of a probe set, and ~100x cheaper than eigh at d=1536
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(self.dim)
            vectors, values, _ = torch.svd_lowrank(self.moment / count, q=max_rank + 16, niter=2)
            torch.random.set_rng_state(generator_state)
            values, vectors = values.double(), vectors.double()
        else:
            values, vectors = _nystrom_eigenpairs(self.moment.double() / count, self.omega.double())
        values, vectors = values[:max_rank], vectors[:, :max_rank]
        if trace > 0:
            cumulative = torch.cumsum(values, 0) / trace
            k = int(torch.searchsorted(cumulative, torch.tensor(explained, dtype=cumulative.dtype)).item()) + 1
        else:
            k = 1
        k = max(1, min(k, values.numel()))
        self.moment = None  # free the d x d (or d x l) buffer as soon as it is decomposed
        return vectors[:, :k].float().contiguous(), values[:k].float().contiguous(), trace


def _nystrom_eigenpairs(sketch: torch.Tensor, omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of the PSD matrix S from Y = S @ Omega (stable single-pass Nystrom; Tropp et al. 2017, Alg. 3)."""
    shift = math.sqrt(sketch.shape[0]) * torch.finfo(torch.float32).eps * torch.linalg.norm(sketch)
    shifted = sketch + shift * omega
    core = omega.T @ shifted
    core = 0.5 * (core + core.T)
    chol = torch.linalg.cholesky(core + 1e-12 * torch.eye(core.shape[0], dtype=core.dtype, device=core.device))
    factor = torch.linalg.solve_triangular(chol, shifted.T, upper=False).T
    vectors, singular, _ = torch.linalg.svd(factor, full_matrices=False)
    values = (singular.square() - shift).clamp_min(0.0)
    return values, vectors


def _auto_sketch(modules: list[LoraModule], settings: FisherSettings) -> int | None:
    """Sketch width, or None for exact factors when they all fit in the memory budget."""
    width = 4 * settings.max_rank + 32
    if settings.sketch == "exact" or settings.estimator == "diagonal":
        return None
    if settings.sketch == "nystrom":
        return width
    exact_bytes = 4 * sum(m.d_in**2 + m.d_out**2 for m in modules)
    return None if exact_bytes <= settings.memory_budget_gb * 2**30 else width


class _Collector:
    """Forward/backward hooks that accumulate the factors of every LoRA module on the collected positions."""

    def __init__(self, modules: list[LoraModule], settings: FisherSettings, device: torch.device):
        # every rank builds its factors in the same order (see probe_structure): the all-reduce relies on it
        self.modules = modules
        self.diagonal = settings.estimator == "diagonal"
        width = _auto_sketch(modules, settings)
        self.sketched = width is not None
        self.inputs: dict[str, _Factor] = {}
        self.outputs: dict[str, _Factor] = {}
        self.diag: dict[str, torch.Tensor] = {}
        self.input_key: dict[str, str] = {}
        self.positions: torch.Tensor | None = None
        self._batch_inputs: dict[tuple, str] = {}
        self._saved_x: dict[str, torch.Tensor] = {}
        self._alive: list[torch.Tensor] = []
        self._handles: list[Any] = []
        for index, module in enumerate(modules):
            if self.diagonal:
                self.diag[module.name] = torch.zeros(module.d_out, module.d_in, device=device)
            else:
                self.outputs[module.name] = _Factor(module.d_out, width, settings.seed + 7919 * index + 1, device)
        self._width, self._seed, self._device = width, settings.seed, device

    def __enter__(self) -> _Collector:
        for module in self.modules:
            self._handles.append(module.layer.register_forward_hook(self._forward_hook(module)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def start_batch(self, positions: torch.Tensor) -> None:
        """``positions``: flat indices (into batch x sequence) of the rows collected from this batch."""
        self.positions = positions
        self._batch_inputs.clear()
        self._saved_x.clear()
        self._alive.clear()

    def probe_structure(self, model: nn.Module, token_id: int, device: torch.device) -> None:
        """One gradient-free forward on a one-token batch that collects no row: it finds which modules share an
        input and creates every input factor, in forward order, before any data is seen. Every rank does it, so
        every rank holds the same factors in the same order even when its shard of the probe data is empty."""
        self.start_batch(torch.zeros(0, dtype=torch.long, device=device))
        ids = torch.full((1, 1), token_id, dtype=torch.long, device=device)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        self.start_batch(torch.zeros(0, dtype=torch.long, device=device))

    def structure_digest(self) -> int:
        """A 62-bit digest of the factor set (module -> input factor, in order), to check that ranks agree."""
        import hashlib

        text = repr((sorted(self.input_key.items()), list(self.inputs), list(self.outputs), list(self.diag)))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 2

    def _forward_hook(self, module: LoraModule):
        def hook(layer: nn.Module, args: tuple, output: torch.Tensor) -> None:
            x = args[0]
            # modules fed the very same tensor (q/k/v, gate/up) share one input factor
            key = (x.data_ptr(), tuple(x.shape))
            shared = self._batch_inputs.get(key)
            if shared is None:
                shared = module.name
                self._batch_inputs[key] = shared
                self._alive.append(x)  # keep it referenced so its address cannot be reused within the batch
                rows = x.detach().reshape(-1, x.shape[-1])[self.positions].float()
                if self.diagonal:
                    self._saved_x[shared] = rows.square()
                else:
                    if shared not in self.inputs:
                        seed = self._seed + 104729 * (len(self.inputs) + 1)
                        self.inputs[shared] = _Factor(module.d_in, self._width, seed, self._device)
                    self.inputs[shared].add(rows)
            if self.input_key.setdefault(module.name, shared) != shared and not self.diagonal:
                raise RuntimeError(f"Module {module.name} changed its input sharing between batches.")
            if output.requires_grad:
                output.register_hook(self._grad_hook(module, shared))

        return hook

    def _grad_hook(self, module: LoraModule, input_key: str):
        def hook(grad: torch.Tensor) -> None:
            rows = grad.detach().reshape(-1, grad.shape[-1])[self.positions].float()
            if self.diagonal:
                self.diag[module.name].addmm_(rows.square().T, self._saved_x[input_key])
            else:
                self.outputs[module.name].add(rows)

        return hook


def estimate_fisher(
    model: nn.Module,
    tokenizer,
    records: list[dict[str, Any]],
    settings: FisherSettings | None = None,
    show_progress: bool = True,
    *,
    probe_hash: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> FisherArtifact:
    """Estimate the Fisher of every active LoRA module of ``model`` at W0 (adapters disabled) on ``records``.

    Args:
        model: a PeftModel (or a model with LoRA layers); 4-bit (QLoRA) bases work, the base weights are never read.
        tokenizer: the model's tokenizer (chat template used when present).
        records: probe records (see :mod:`agl_trl.fisher.probe`); missing responses are generated by the model.
        settings: :class:`FisherSettings`.
        show_progress: tqdm progress bars (only on the main process).
        probe_hash: the probe data's hash to record (default: that of ``records``; a caller that filled in the
            responses records the hash of the data as given, so that a later run recognises it).
        on_batch: called with ``(passes done, passes)`` after each pass (e.g. to time the first one).

    Returns:
        A :class:`FisherArtifact` holding, per module, the kept eigenpairs of S_out and S_in (K-FAC) or the
        diagonal, with metadata (fingerprint, settings, probe hash, token count). Deterministic under ``seed``.
    """
    from tqdm.auto import tqdm

    settings = settings if settings is not None else FisherSettings()  # validated when built
    modules = find_lora_modules(model)
    if not modules:  # the Fisher is estimated per LoRA-adapted linear module
        raise AGLUserError(no_lora_message(model))
    rank, world = rank_and_world()
    show_progress = show_progress and rank == 0
    started = time.perf_counter()
    device = next(p for p in model.parameters()).device
    records = list(records)[: settings.max_samples]
    probe_hash = probe_hash if probe_hash is not None else records_hash(records)
    was_training = model.training
    model.eval()
    embeddings = model.get_input_embeddings()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    generator = torch.Generator(device="cpu").manual_seed(settings.seed + rank)
    embed_out: list[torch.Tensor] = []

    def capture_embeddings(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        output = output.detach().requires_grad_(True)  # the graph starts here: no parameter gets a .grad
        embed_out.append(output)
        return output

    collector = _Collector(modules, settings, device)
    embed_handle = embeddings.register_forward_hook(capture_embeddings)
    tokens = tokens_all = 0  # N_resp (positions predicting a response token), N_all (positions collected)
    lockstep = world > 1 and sharding_engine(lora_factors(model)) is not None  # FSDP2 / ZeRO-3: collective forwards
    try:
        with adapters_disabled(model), no_cpu_4bit_repacking(model):
            enable_fsdp_generate(model)  # FSDP2: generate() must run the root's all-gather
            records = fill_missing_responses(
                model, tokenizer, records, settings.max_new_tokens, max(settings.batch_size, 8), show_progress
            )
            sequences = build_sequences(tokenizer, records, settings.max_length)[rank::world]
            starts = list(range(0, len(sequences), settings.batch_size))
            passes = max_over_ranks(len(starts), device) if lockstep else len(starts)
            with collector:
                # before any data, and on every rank (a rank may get no sequence): the same factors in the same order
                collector.probe_structure(model, pad_id, device)
                for index in tqdm(range(passes), desc="AGL Fisher estimation", disable=not show_progress):
                    if index >= len(starts):  # this rank's shard is done: an idle pass keeps the ranks in step
                        _idle_pass(model, collector, embed_out, pad_id, device)
                        continue
                    start = starts[index]
                    batch = collate(sequences[start : start + settings.batch_size], pad_id, device)
                    batch_tokens, batch_all = _accumulate_batch(
                        model, batch, collector, embed_out, settings, generator, lockstep, pad_id
                    )
                    tokens, tokens_all = tokens + batch_tokens, tokens_all + batch_all
                    if on_batch is not None:
                        on_batch(index + 1, passes)
    finally:
        embed_handle.remove()
        model.train(was_training)
    counts = torch.tensor([float(tokens), float(tokens_all)], dtype=torch.float64, device=device)
    if world > 1:
        # every rank runs these collectives, in this order, whatever its shard held
        if not same_on_every_rank(collector.structure_digest(), device):  # seen by every rank alike: all raise
            raise RuntimeError(
                "Fisher estimation: the ranks found different LoRA modules or input sharing (are the models and "
                "adapters the same on every rank?)."
            )
        sum_over_ranks([counts])
        for factor in (*collector.inputs.values(), *collector.outputs.values()):
            factor.all_reduce()
        sum_over_ranks(list(collector.diag.values()))
    count, count_all = float(counts[0].item()), float(counts[1].item())
    if count == 0:
        raise ValueError("The probe data produced no response tokens; check the records and max_length.")
    fishers = _finalise(modules, collector, count, count_all, settings, show_progress)
    metadata = {
        "estimator": settings.estimator,
        "settings": asdict(settings),
        "sketch": "nystrom" if collector.sketched else "exact",
        "model_fingerprint": model_fingerprint(model),
        "probe_hash": probe_hash,
        "probe_records": len(records),
        "tokens": int(count),  # N_resp: the response tokens the KL is normalised by
        "tokens_all": int(count_all),  # N_all: the positions collected (== tokens for positions="response")
        "world_size": world,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return FisherArtifact(modules=fishers, metadata=metadata)


def _idle_pass(
    model: nn.Module, collector: _Collector, embed_out: list[torch.Tensor], pad_id: int, device: torch.device
) -> None:
    """A forward and backward on one token that collect nothing: the parameter gathers of a sharded engine (FSDP2,
    ZeRO-3) are collective, so a rank with no batch left still takes part in every other rank's passes."""
    collector.start_batch(torch.zeros(0, dtype=torch.long, device=device))
    embed_out.clear()
    ids = torch.full((1, 1), pad_id, dtype=torch.long, device=device)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
    torch.autograd.grad(logits.float().sum() * 0.0, embed_out[0])


def _accumulate_batch(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    collector: _Collector,
    embed_out: list[torch.Tensor],
    settings: FisherSettings,
    generator: torch.Generator,
    lockstep: bool = False,
    pad_id: int = 0,
) -> tuple[int, int]:
    """One forward/backward on a batch; returns (response positions, collected positions) it contributed.
    ``lockstep``: a batch with nothing to collect still runs an idle pass (sharded engines, see the module)."""
    predicts = predicting_positions(batch["response_mask"])  # the likelihood terms: next token is a response token
    positions = predicts.flatten().nonzero().squeeze(1)
    if positions.numel() == 0:
        if lockstep:
            _idle_pass(model, collector, embed_out, pad_id, batch["input_ids"].device)
        return 0, 0  # no likelihood term: g = 0 everywhere, and no position is counted
    if settings.positions == "all":
        collected = batch["attention_mask"].flatten().nonzero().squeeze(1)
    else:
        collected = positions
    collector.start_batch(collected)
    embed_out.clear()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    log_probs = torch.log_softmax(logits.float().reshape(-1, logits.shape[-1])[positions], dim=-1)
    if settings.targets == "sampled":
        with torch.no_grad():
            targets = torch.multinomial(log_probs.exp().cpu(), 1, generator=generator).squeeze(1)
        targets = targets.to(log_probs.device)
    else:
        targets = batch["input_ids"][:, 1:].flatten()[predicts[:, :-1].flatten().nonzero().squeeze(1)]
    log_likelihood = log_probs.gather(1, targets[:, None]).sum()
    torch.autograd.grad(log_likelihood, embed_out[0])
    return int(positions.numel()), int(collected.numel())


def _finalise(
    modules: list[LoraModule],
    collector: _Collector,
    count: float,
    count_all: float,
    settings: FisherSettings,
    show_progress: bool = False,
) -> dict[str, ModuleFisher]:
    """Normalise and keep the top eigenpairs of each factor (freeing buffers as it goes; a progress bar per module).

    ``count`` = N_resp, ``count_all`` = N_all (module docstring): S_in = sum x x^T / N_all, S_out = sum g g^T /
    N_resp, F_diag = sum g^2 (x^2)^T / N_resp. With positions="response" both counts are N_resp.
    """
    fishers: dict[str, ModuleFisher] = {}
    if collector.diagonal:
        for module in modules:
            diag = collector.diag.pop(module.name) / count
            fishers[module.name] = ModuleFisher(
                d_out=module.d_out, d_in=module.d_in, trace_out=0.0, trace_in=0.0, diag=diag.cpu()
            )
        return fishers
    from tqdm.auto import tqdm

    decomposed_inputs: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for module in tqdm(modules, desc="AGL Fisher eigendecomposition", disable=not show_progress, leave=False):
        key = collector.input_key.get(module.name)
        if key is None:
            raise RuntimeError(f"LoRA module {module.name} was never called during Fisher estimation.")
        if key not in decomposed_inputs:
            decomposed_inputs[key] = collector.inputs[key].top_eigenpairs(
                count_all, settings.max_rank, settings.explained_variance
            )
        q_in, eig_in, trace_in = decomposed_inputs[key]
        q_out, eig_out, trace_out = collector.outputs.pop(module.name).top_eigenpairs(
            count, settings.max_rank, settings.explained_variance
        )
        fishers[module.name] = ModuleFisher(
            d_out=module.d_out,
            d_in=module.d_in,
            trace_out=trace_out,
            trace_in=trace_in,
            q_out=q_out.cpu(),
            eig_out=eig_out.cpu(),
            q_in=q_in.cpu(),
            eig_in=eig_in.cpu(),
        )
    return fishers
