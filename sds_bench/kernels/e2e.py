"""The model-level part of the 2:4 benchmark: a whole model's prefill and decode, timed eagerly, with its decoder-block
Linears 2:4-pruned and swapped for each sparse backend's form against the same model with dense pruned weights."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from sds_bench.errors import first_line
from sds_bench.kernels.backends import TWO_FOUR, quiet_prototype_warnings, torchao_sparsify
from sds_bench.kernels.plan import E2EPlan, Plan
from sds_bench.kernels.shapes import model_config, model_label
from sds_bench.kernels.timing import median_spread, time_calls
from sds_bench.models import DTYPES, adapter_for, load_model, prunable_linears, resolve_model_path
from sds_bench.sparsity import nm_mask, satisfies

E2E_TOLERANCE = 5e-2  # max |logit difference| / max |logit| after a whole pruned model, sparse vs dense kernels


def build_model(name: str, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """A local or embedded checkpoint as it is; a hub id built from its config with random weights on the GPU."""
    if os.path.isdir(resolve_model_path(name)):
        return load_model(name, dtype, str(device))[0]
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        return AutoModelForCausalLM.from_config(model_config(name), dtype=dtype).eval()


def prune_blocks_24(model: nn.Module) -> dict[str, torch.Tensor]:
    """Make every block Linear 2:4 (by magnitude, unless it already is); return the pruned weights by module name."""
    weights = {}
    for i, block in enumerate(adapter_for(model).decoder_blocks(model)):
        for name, layer in prunable_linears(block).items():
            w = layer.weight.detach()
            if not satisfies(w, TWO_FOUR):
                w = w.masked_fill(nm_mask(w.abs(), TWO_FOUR.n, TWO_FOUR.m), 0)
            layer.weight = nn.Parameter(w, requires_grad=False)
            weights[f"{adapter_for(model).blocks}.{i}.{name}"] = w
    return weights


def swap_weights(model: nn.Module, weights: dict[str, torch.Tensor], backend: str | None) -> None:
    """Give each block Linear its dense pruned weight (backend None) or that weight compressed for `backend`."""
    if backend == "torchao":
        swap_weights(model, weights, None)
        targets = {id(model.get_submodule(name)) for name in weights}
        torchao_sparsify(model, lambda module, fqn: id(module) in targets)
        return
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    convert = {None: lambda w: w, "cutlass": SparseSemiStructuredTensorCUTLASS.from_dense,
               "cusparselt": SparseSemiStructuredTensorCUSPARSELT.from_dense}[backend]
    for name, w in weights.items():
        model.get_submodule(name).weight = nn.Parameter(convert(w), requires_grad=False)


def time_prefill(model: nn.Module, ids: torch.Tensor, warmup: int, reps: int) -> list[float]:
    """Milliseconds per eager prefill of the whole (batch, sequence) input, keeping the last logits as generation does."""
    return time_calls([partial(model, ids, use_cache=False, logits_to_keep=1)], warmup, reps, graph=False)


def time_decode(model: nn.Module, ids: torch.Tensor, new_tokens: int, warmup: int, reps: int) -> list[float]:
    """Milliseconds per decoded token: `new_tokens` eager steps after a prefilled KV cache of `ids`, the first
    `warmup` of `warmup + reps` repetitions untimed."""
    times = []
    for _ in range(warmup + reps):
        cache = model(ids, use_cache=True, logits_to_keep=1).past_key_values
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(new_tokens):
            cache = model(ids[:, -1:], past_key_values=cache, use_cache=True).past_key_values
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / new_tokens)
    return times[warmup:]


@torch.no_grad()
def bench_model(name: str, dtype: str, backends: tuple[str, ...], e2e: E2EPlan, device: torch.device,
                warmup: int) -> list[dict[str, Any]]:
    """A whole 2:4-pruned model: dense block Linears against sparse ones, per workload and backend."""
    model = build_model(name, DTYPES[dtype], device)
    weights = prune_blocks_24(model)
    limit = getattr(model.config, "max_position_embeddings", None) or math.inf
    generator = torch.Generator(device).manual_seed(0)
    workloads = {w: torch.randint(0, model.config.vocab_size, w[1:], generator=generator, device=device)
                 for w in e2e.workloads() if w[2] + (e2e.new_tokens if w[0] == "decode" else 0) <= limit}
    measure = {"prefill": lambda ids: time_prefill(model, ids, warmup, e2e.reps),
               "decode": lambda ids: time_decode(model, ids, e2e.new_tokens, warmup, e2e.reps)}
    dense = {w: _attempt(measure[w[0]], ids) for w, ids in workloads.items()}
    probe = min(workloads.values(), key=torch.Tensor.numel, default=None)
    reference = None if probe is None else model(probe, use_cache=False).logits.float()
    rows = []
    for backend in backends:
        base = {"model": model_label(name), "dtype": dtype, "backend": backend}
        try:
            swap_weights(model, weights, backend)
            error = None if probe is None else ((model(probe, use_cache=False).logits.float() - reference).abs().max()
                                                / reference.abs().max()).item()
        except (RuntimeError, NotImplementedError, ValueError) as e:
            rows.append({**base, "status": f"unsupported: {first_line(e)}"})
            swap_weights(model, weights, None)
            continue
        for phase, batch, seq in e2e.workloads():
            row = {**base, "phase": phase, "batch": batch, "seq": seq,
                   "new_tokens": e2e.new_tokens if phase == "decode" else None, "max_rel_err": error}
            if (phase, batch, seq) not in workloads:
                rows.append({**row, "status": f"skipped: longer than the model's {limit} positions"})
                continue
            if not error <= E2E_TOLERANCE:  # also catches NaN
                rows.append({**row, "status": f"mismatch: max relative logit error {error:.3g}"})
                continue
            (dense_times, dense_error), (sparse_times, sparse_error) = (
                dense[(phase, batch, seq)], _attempt(measure[phase], workloads[(phase, batch, seq)]))
            if dense_error or sparse_error:
                rows.append({**row, "status": f"failed ({'dense' if dense_error else 'sparse'}): "
                                              f"{dense_error or sparse_error}"})
            else:
                rows.append({**row, **_e2e_columns(phase, batch, seq, dense_times, sparse_times), "status": "ok"})
        swap_weights(model, weights, None)
    return rows


def _attempt(measure: Callable[[torch.Tensor], list[float]], ids: torch.Tensor) -> tuple[list[float] | None, str | None]:
    """Times, or the one-line reason this workload could not run (out of memory, an op the sparse path lacks)."""
    try:
        return measure(ids), None
    except (RuntimeError, NotImplementedError, ValueError) as e:
        torch.cuda.empty_cache()
        return None, first_line(e)


def _e2e_columns(phase: str, batch: int, seq: int, dense: list[float], sparse: list[float]) -> dict[str, Any]:
    (dense_ms, dense_iqr), (sparse_ms, sparse_iqr) = median_spread(dense), median_spread(sparse)
    tokens = batch * (seq if phase == "prefill" else 1)
    return {"dense_ms": dense_ms, "dense_iqr_ms": dense_iqr, "sparse_ms": sparse_ms, "sparse_iqr_ms": sparse_iqr,
            "speedup": dense_ms / sparse_ms, "dense_tokens_per_s": tokens / dense_ms * 1e3,
            "sparse_tokens_per_s": tokens / sparse_ms * 1e3}


def bench_e2e(plan: Plan, device: torch.device, warmup: int, quiet: bool = False) -> list[dict[str, Any]]:
    """Every model of the plan at every dtype, through the plan's end-to-end workloads, `warmup` untimed runs each."""
    from tqdm.auto import tqdm

    rows = []
    with quiet_prototype_warnings():
        for name, dtype in tqdm(list(itertools.product(plan.models, plan.dtypes)), desc="2:4 end to end",
                                disable=quiet):
            rows += bench_model(name, dtype, plan.backends, plan.e2e, device, warmup)
            torch.cuda.empty_cache()
    return rows
