"""The sparse paths the 2:4 benchmark compares with dense ``F.linear``: PyTorch's CUTLASS and cuSPARSELt tensors and
torchao's ``sparsify_``, and the 2:4-pruned weights they are given."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sds_bench.errors import first_line
from sds_bench.sparsity import Sparsity, nm_mask

TWO_FOUR = Sparsity(0.5, 2, 4)


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
def quiet_prototype_warnings() -> Iterator[None]:
    """Silence the 'prototype API' and search-deprecation notices PyTorch prints once per process."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*SparseSemiStructuredTensor.*prototype")
        warnings.filterwarnings("ignore", message=".*_cslt_sparse_mm_search is deprecated")
        yield
