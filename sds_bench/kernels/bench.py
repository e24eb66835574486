"""What 2:4 sparsity buys on this GPU: dense ``F.linear`` against PyTorch's semi-structured sparse kernels.

For every Linear shape of the models, token count, dtype and backend: a random weight is 2:4-pruned by magnitude
(values do not change the speed), compressed, checked against the dense product, then both are timed with CUDA
events. Calls run back to back (as CUDA graph replays by default, so Python dispatch is not counted) and cycle through
copies of the weight larger together than the L2 cache, so every call reads its weight from memory as in a forward
pass. The end-to-end part times a whole model's prefill and decode with its block Linears swapped for sparse ones.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import platform
import re
import statistics
import subprocess
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sds_bench.errors import UserError, first_line
from sds_bench.kernels import report
from sds_bench.kernels.shapes import (
    LinearShape,
    collect_shapes,
    model_config,
    model_label,
    parse_pairs,
    parse_shapes,
)
from sds_bench.models import DTYPES, adapter_for, load_model, prunable_linears, resolve_model_path
from sds_bench.record import environment
from sds_bench.sparsity import Sparsity, nm_mask, satisfies

BACKENDS = ("cutlass", "cusparselt", "torchao")
DEFAULT_MODELS = ("facebook/opt-125m", "huggyllama/llama-7b")
DEFAULT_TOKENS = (1, 16, 128, 512, 2048, 8192)
DEFAULT_DTYPES = ("float16", "bfloat16")
TWO_FOUR = Sparsity(0.5, 2, 4)
TOLERANCE = {"float16": 1e-2, "bfloat16": 2e-2}  # rtol = atol for O(1) outputs of fp32-accumulated GEMMs
E2E_TOLERANCE = 5e-2  # max |logit difference| / max |logit| after a whole pruned model, sparse vs dense kernels
# Dense fp16/bf16 tensor-core peak (fp32 accumulate, no sparsity) in TFLOP/s, from NVIDIA's datasheets; first match wins.
PEAK_TFLOPS = ((r"H100.*NVL", 835.5), (r"H100.*PCIe", 756.5), (r"\bH100\b|\bGH200\b", 989.4),
               (r"H200.*NVL", 835.5), (r"\bH200\b", 989.4), (r"\bA100\b", 312.0), (r"\bL40S\b", 362.1),
               (r"\bL40\b", 181.0), (r"\bL4\b", 121.0), (r"RTX 4090", 165.2))


@dataclass(frozen=True)
class E2EPlan:
    """End-to-end workloads: prefill at (batch, sequence) sizes, decode of new tokens after a context."""

    prefill: tuple[tuple[int, int], ...] = ((1, 128), (1, 512), (1, 2048), (8, 512))
    decode_batches: tuple[int, ...] = (1, 16)
    context: int = 512
    new_tokens: int = 16
    reps: int = 10

    def workloads(self) -> list[tuple[str, int, int]]:
        """(phase, batch, tokens per sequence) in the order they run."""
        return [("prefill", b, s) for b, s in self.prefill] + [("decode", b, self.context) for b in self.decode_batches]

    def describe(self) -> str:
        prefill = ", ".join(f"{b}x{s}" for b, s in self.prefill) or "none"
        decode = ", ".join(map(str, self.decode_batches)) or "none"
        return (f"end to end: prefill (batch x seq) {prefill}; decode batches {decode}, {self.new_tokens} new tokens "
                f"after {self.context}; {self.reps} repetitions")


@dataclass(frozen=True)
class Plan:
    """What would be timed: each shape at each token count and dtype, dense once and then every sparse backend."""

    shapes: tuple[LinearShape, ...]
    tokens: tuple[int, ...] = DEFAULT_TOKENS
    dtypes: tuple[str, ...] = DEFAULT_DTYPES
    backends: tuple[str, ...] = ("cutlass", "cusparselt")
    models: tuple[str, ...] = ()
    e2e: E2EPlan | None = None

    def cells(self) -> list[tuple[str, LinearShape, int]]:
        """(dtype, shape, tokens) in the order they run."""
        return list(itertools.product(self.dtypes, self.shapes, self.tokens))

    def describe(self) -> str:
        cells = len(self.cells())
        lines = [f"{len(self.shapes)} shapes x {len(self.tokens)} token counts x {len(self.dtypes)} dtypes = {cells} "
                 f"cells: {cells} dense and {cells * len(self.backends)} sparse timings "
                 f"(backends: {', '.join(self.backends)})", f"tokens: {', '.join(map(str, self.tokens))}"]
        lines += [f"  {s.label:>12}  {', '.join(s.models)}" for s in self.shapes]
        return "\n".join(lines + ([self.e2e.describe() + f" for {', '.join(self.models)}"] if self.e2e else []))


def default_backends() -> tuple[str, ...]:
    """Both PyTorch backends, and torchao's 2:4 path when torchao is installed."""
    return ("cutlass", "cusparselt") + (("torchao",) if importlib.util.find_spec("torchao") else ())


def parse_list(text: str, kind: type, name: str, allowed: tuple = ()) -> tuple:
    """A comma-separated option ('1,16,128', 'float16,bfloat16') checked item by item."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    try:
        values = tuple(dict.fromkeys(kind(s) for s in items))
    except ValueError:
        raise UserError(f"bad {name} {text!r}: expected comma-separated {kind.__name__} values") from None
    bad = [v for v in values if (allowed and v not in allowed) or (kind is int and v <= 0)]
    if bad or not values:
        hint = f"; choose from {', '.join(map(str, allowed))}" if allowed else ""
        raise UserError(f"bad {name} {text!r}{hint}")
    return values


def make_plan(models: list[str] | None = None, shapes: str | None = None,
              tokens: str | None = None, dtypes: str | None = None, backends: str | None = None,
              e2e: E2EPlan | None = None) -> Plan:
    """The plan from the CLI's choices: the Linear shapes of models (names, directories) or explicit shapes."""
    if e2e and shapes:
        raise UserError("the end-to-end benchmark needs models (--model or --suite), not --shapes")
    if shapes:
        found, models = parse_shapes(shapes), []
    else:
        models = list(models or DEFAULT_MODELS)
        found = collect_shapes(models)
    half = tuple(k for k, v in DTYPES.items() if v != torch.float32)
    return Plan(shapes=tuple(found),
                tokens=parse_list(tokens, int, "--tokens") if tokens else DEFAULT_TOKENS,
                dtypes=tuple(dict.fromkeys(_dtype_name(d) for d in parse_list(dtypes, str, "--dtype", half)))
                if dtypes else DEFAULT_DTYPES,
                backends=parse_list(backends, str, "--backend", BACKENDS) if backends else default_backends(),
                models=tuple(models), e2e=e2e)


def make_e2e_plan(prefill: str | None = None, decode: str | None = None, context: int = 512, new_tokens: int = 16,
                  reps: int = 10) -> E2EPlan:
    """The end-to-end workloads from the CLI: prefill '1x128,8x512' (batch x sequence), decode batches '1,16'."""
    if min(context, new_tokens) <= 0:
        raise UserError("--context and --new-tokens must be positive")
    return E2EPlan(prefill=tuple(parse_pairs(prefill, "prefill size", "1x2048 (BATCHxSEQLEN)")) if prefill
                   else E2EPlan.prefill,
                   decode_batches=parse_list(decode, int, "--decode") if decode else E2EPlan.decode_batches,
                   context=context, new_tokens=new_tokens, reps=reps)


def gpu_problem(device: str | None = None) -> str | None:
    """Why 2:4 cannot be timed here (no CUDA GPU, or one older than compute capability 8.0), or None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU found; 2:4 sparse tensor cores need compute capability 8.0 or newer"
    dev = torch.device(device or "cuda")
    if dev.type != "cuda":
        return f"device {device!r} is not a CUDA GPU; 2:4 sparse tensor cores need one of compute capability >= 8.0"
    if (dev.index or 0) >= torch.cuda.device_count():
        return f"there is no {device}; this machine has {torch.cuda.device_count()} CUDA GPU(s)"
    major, minor = torch.cuda.get_device_capability(dev)
    if major < 8:
        return (f"{torch.cuda.get_device_name(dev)} has compute capability {major}.{minor}; "
                "2:4 sparse tensor cores need 8.0 or newer")
    return None


def gpu_info(device: torch.device, peak_tflops: float | None = None) -> dict[str, Any]:
    """Where the numbers come from: GPU, capability, driver, torch, CUDA and cuSPARSELt versions, dense peak."""
    props = torch.cuda.get_device_properties(device)
    version = torch.backends.cusparselt.version() if torch.backends.cusparselt.is_available() else None
    return {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "driver": _driver_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cusparselt": f"{version // 1000}.{version // 100 % 10}.{version % 100}" if version else None,
            "peak_tflops": peak_tflops or next((p for pat, p in PEAK_TFLOPS if re.search(pat, props.name)), None),
            "l2_bytes": props.L2_cache_size, "python": platform.python_version()}


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


# --- timing -----------------------------------------------------------------------------------------------------

def time_calls(calls: list[Callable[[], Any]], warmup: int, reps: int, graph: bool) -> list[float]:
    """Milliseconds per call of `reps` repetitions, each running all `calls` back to back between two CUDA events."""
    def run() -> None:
        for call in calls:
            call()

    step = _graph_replay(run) if graph else run
    for _ in range(warmup):
        step()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        step()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / len(calls) for start, end in events]


def _graph_replay(run: Callable[[], None]) -> Callable[[], None]:
    """Capture `run` in a CUDA graph (after a warm-up on a side stream, as capture requires); return its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def median_spread(times: list[float]) -> tuple[float, float]:
    """Median and interquartile range."""
    q1, _, q3 = statistics.quantiles(times, n=4)
    return statistics.median(times), q3 - q1


def tflops(out_features: int, in_features: int, tokens: int, ms: float) -> float:
    """Dense-equivalent throughput, 2*tokens*out*in per call, for the dense and the sparse kernel alike."""
    return 2 * tokens * out_features * in_features / (ms * 1e9)


# --- the sparse paths -------------------------------------------------------------------------------------------

def pruned_weight(out_features: int, in_features: int, dtype: torch.dtype, device: torch.device,
                  generator: torch.Generator) -> torch.Tensor:
    """A random weight (unit-variance outputs) with the 2 smallest magnitudes of every 4 inputs set to zero."""
    w = torch.randn(out_features, in_features, generator=generator, device=device) / math.sqrt(in_features)
    return w.masked_fill(nm_mask(w.abs(), TWO_FOUR.n, TWO_FOUR.m), 0).to(dtype)


def sparse_calls(backend: str, weights: list[torch.Tensor], x: torch.Tensor) -> tuple[list[Callable], int | None]:
    """One `F.linear(x, W)` call per weight copy through `backend`, and the cuSPARSELt algorithm id it uses."""
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    if backend == "cutlass":
        return [partial(F.linear, x, SparseSemiStructuredTensorCUTLASS.from_dense(w)) for w in weights], None
    if backend == "cusparselt":
        if not torch.backends.cusparselt.is_available():
            raise RuntimeError("this PyTorch build has no cuSPARSELt")
        alg_id = cusparselt_alg_id(SparseSemiStructuredTensorCUSPARSELT.from_dense(weights[0]), x)
        return [partial(F.linear, x, SparseSemiStructuredTensorCUSPARSELT.from_dense(w, alg_id=alg_id))
                for w in weights], alg_id
    linears = torchao_sparsify(nn.Sequential(*(_linear(w) for w in weights)))
    return [partial(layer, x) for layer in linears], None


def cusparselt_alg_id(sparse: torch.Tensor, x: torch.Tensor) -> int:
    """cuSPARSELt's algorithm search on the operands `F.linear(x, sparse)` hands it: x padded to whole row tiles,
    transposed, with a transposed result."""
    rows = type(sparse)._DTYPE_SHAPE_CONSTRAINTS[x.dtype].dense_min_rows
    padded = F.pad(x, (0, 0, 0, -x.shape[0] % rows))
    return int(torch._cslt_sparse_mm_search(sparse.packed, padded.t(), transpose_result=True))


def torchao_sparsify(model: nn.Module, filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """torchao's 2:4 path (`sparsify_` with `semi_sparse_weight`) applied in place; an error if torchao won't import."""
    try:
        from torchao.sparsity import semi_sparse_weight, sparsify_
    except (ImportError, OSError, AttributeError) as e:  # absent, or built for another torch
        raise RuntimeError(f"torchao cannot be imported: {first_line(e)}") from None
    sparsify_(model, semi_sparse_weight(), filter_fn)
    return model


def _linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    layer.weight = nn.Parameter(weight, requires_grad=False)
    return layer


@contextmanager
def _quiet_prototype_warnings() -> Iterator[None]:
    """Silence the 'prototype API' and search-deprecation notices PyTorch prints once per process."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*SparseSemiStructuredTensor.*prototype")
        warnings.filterwarnings("ignore", message=".*_cslt_sparse_mm_search is deprecated")
        yield


# --- the kernel benchmark ---------------------------------------------------------------------------------------

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
    with _quiet_prototype_warnings():
        for dtype, shape, tokens in tqdm(plan.cells(), desc="2:4 kernels", disable=quiet):
            rows += bench_cell(shape, tokens, dtype, plan.backends, device, warmup, reps, graph, gpu)
            torch.cuda.empty_cache()
    return rows


# --- end to end -------------------------------------------------------------------------------------------------

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


def time_decode(model: nn.Module, ids: torch.Tensor, new_tokens: int, reps: int) -> list[float]:
    """Milliseconds per decoded token: `new_tokens` eager steps after a prefilled KV cache of `ids` (one warm-up)."""
    times = []
    for _ in range(reps + 1):
        cache = model(ids, use_cache=True, logits_to_keep=1).past_key_values
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(new_tokens):
            cache = model(ids[:, -1:], past_key_values=cache, use_cache=True).past_key_values
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / new_tokens)
    return times[1:]


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
               "decode": lambda ids: time_decode(model, ids, e2e.new_tokens, e2e.reps)}
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


def bench_e2e(plan: Plan, device: torch.device, warmup: int = 3, quiet: bool = False) -> list[dict[str, Any]]:
    """Every model of the plan at every dtype, through the plan's end-to-end workloads."""
    from tqdm.auto import tqdm

    rows = []
    with _quiet_prototype_warnings():
        for name, dtype in tqdm(list(itertools.product(plan.models, plan.dtypes)), desc="2:4 end to end",
                                disable=quiet):
            rows += bench_model(name, dtype, plan.backends, plan.e2e, device, warmup)
            torch.cuda.empty_cache()
    return rows


def run(plan: Plan, out_dir: str, device: str | None = None, warmup: int = 5, reps: int = 30, graph: bool = True,
        peak_tflops: float | None = None, quiet: bool = False) -> dict[str, Any]:
    """Time the plan (and the end-to-end workloads), write the tables and the plot; return the written paths."""
    if reps < 3 or (plan.e2e and plan.e2e.reps < 3):
        raise UserError("--reps and --e2e-reps need at least 3 repetitions for a median and a spread")
    dev = torch.device(device or "cuda")
    gpu = gpu_info(dev, peak_tflops)
    kernels = bench_kernels(plan, dev, gpu, warmup, reps, graph, quiet)
    e2e_rows = bench_e2e(plan, dev, quiet=quiet) if plan.e2e else []
    protocol = {"warmup": warmup, "reps": reps, "timing": "graph" if graph else "eager", "tolerance": TOLERANCE,
                "e2e": None if plan.e2e is None else {**asdict(plan.e2e), "tolerance": E2E_TOLERANCE}}
    meta = {"gpu": gpu, "protocol": protocol, "plan": asdict(plan), "environment": environment(dev)}
    return report.write_results(out_dir, meta, kernels, e2e_rows)


def _dtype_name(name: str) -> str:
    return next(k for k in DEFAULT_DTYPES if DTYPES[k] == DTYPES[name])
