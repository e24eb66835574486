"""The per-shape part of the 2:4 benchmark: one Linear shape, token count and dtype, dense against every backend.

A random weight is 2:4-pruned by magnitude (values do not change the speed), compressed, checked against the dense
product, then both are timed with CUDA events. Calls run back to back (as CUDA graph replays by default, so Python
dispatch is not counted) and cycle through copies of the weight larger together than the L2 cache, so every call reads
its weight from memory as in a forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from sds_bench.errors import first_line
from sds_bench.kernels.backends import pruned_weight, quiet_prototype_warnings, sparse_calls
from sds_bench.kernels.plan import Plan
from sds_bench.kernels.shapes import LinearShape
from sds_bench.kernels.timing import median_spread, tflops, time_calls
from sds_bench.models import DTYPES

TOLERANCE = {"float16": 1e-2, "bfloat16": 2e-2}  # rtol = atol for O(1) outputs of fp32-accumulated GEMMs


@torch.no_grad()
def bench_cell(shape: LinearShape, tokens: int, dtype: str, backends: tuple[str, ...], device: torch.device,
               warmup: int, reps: int, graph: bool, gpu: dict[str, Any]) -> list[dict[str, Any]]:
    """Dense against every backend for one shape, token count and dtype: one row per backend."""
    torch_dtype = DTYPES[dtype]
    generator = torch.Generator(device).manual_seed(0)
    weight = pruned_weight(shape.out_features, shape.in_features, torch_dtype, device, generator)
    copies = max(2, math.ceil(2 * gpu["l2_bytes"] / (weight.numel() * weight.element_size())))
    weights = [weight] + [weight.clone() for _ in range(copies - 1)]
    x = torch.randn(tokens, shape.in_features, generator=generator, device=device).to(torch_dtype)
    reference = F.linear(x, weight)
    dense_calls = [partial(F.linear, x, w) for w in weights]
    dense: dict[bool, list[float]] = {}
    rows = []
    for backend in backends:
        row = {"dtype": dtype, "shape": shape.label, "out_features": shape.out_features,
               "in_features": shape.in_features, "models": " ".join(shape.models), "tokens": tokens,
               "backend": backend, "weight_copies": copies}
        try:
            calls, row["alg_id"] = sparse_calls(backend, weights, x)
            out = calls[0]()
            row["max_abs_err"] = error = (out - reference).abs().max().item()
            tol = TOLERANCE[dtype]
            if not torch.allclose(out, reference, rtol=tol, atol=tol):
                rows.append({**row, "status": f"mismatch: max |sparse - dense| = {error:.3g}"})
                continue
            sparse, used_graph = _time_with_fallback(calls, warmup, reps, graph)
        except (RuntimeError, NotImplementedError, ValueError) as e:
            rows.append({**row, "status": f"unsupported: {first_line(e)}"})
            continue
        if used_graph not in dense:
            dense[used_graph] = time_calls(dense_calls, warmup, reps, used_graph)
        rows.append({**row, **_timing_columns(shape, tokens, dense[used_graph], sparse, gpu["peak_tflops"]),
                     "timing": "graph" if used_graph else "eager", "status": "ok"})
        del calls
    return rows


def _time_with_fallback(calls: list[Callable], warmup: int, reps: int, graph: bool) -> tuple[list[float], bool]:
    """Time as CUDA graph replays; if this path cannot be captured, time it eagerly (and say so in the row)."""
    if graph:
        try:
            return time_calls(calls, warmup, reps, True), True
        except RuntimeError:
            torch.cuda.synchronize()
    return time_calls(calls, warmup, reps, False), False


def _timing_columns(shape: LinearShape, tokens: int, dense: list[float], sparse: list[float],
                    peak: float | None) -> dict[str, Any]:
    (dense_ms, dense_iqr), (sparse_ms, sparse_iqr) = median_spread(dense), median_spread(sparse)
    dense_tf = tflops(shape.out_features, shape.in_features, tokens, dense_ms)
    sparse_tf = tflops(shape.out_features, shape.in_features, tokens, sparse_ms)
    return {"dense_ms": dense_ms, "dense_iqr_ms": dense_iqr, "sparse_ms": sparse_ms, "sparse_iqr_ms": sparse_iqr,
            "speedup": dense_ms / sparse_ms, "dense_tflops": dense_tf, "sparse_tflops": sparse_tf,
            "dense_peak_frac": dense_tf / peak if peak else None, "sparse_peak_frac": sparse_tf / peak if peak else None}


def bench_kernels(plan: Plan, device: torch.device, gpu: dict[str, Any], warmup: int = 5, reps: int = 30,
                  graph: bool = True, quiet: bool = False) -> list[dict[str, Any]]:
    """Every cell of the plan, one row per backend."""
    from tqdm.auto import tqdm

    rows = []
    with quiet_prototype_warnings():
        for dtype, shape, tokens in tqdm(plan.cells(), desc="2:4 kernels", disable=quiet):
            rows += bench_cell(shape, tokens, dtype, plan.backends, device, warmup, reps, graph, gpu)
            torch.cuda.empty_cache()
    return rows
