"""SparseGPT (Frantar & Alistarh, 2023): mask selection and optimal-brain-surgeon updates with the inverse Hessian.

Reproduces IST-DASLab/sparsegpt @ 147d215 (``SparseGPT.fasterprune``) operation for operation.
"""

from dataclasses import dataclass

import torch

from sds_bench.hookspecs import hookimpl
from sds_bench.plugin import Pruner, option
from sds_bench.sparsity import Sparsity, pattern_mask
from sds_bench.stats import GRAM, LayerStats, damp_in_place


@dataclass
class SparseGPTOptions:
    blocksize: int = option(128, ge=1)
    """Columns per lazy-update block (the mask of unstructured pruning is chosen once per block)."""
    percdamp: float = option(0.01, ge=0)
    """Dampening added to diag(H), as a fraction of its mean."""
    exact: bool = False
    """Prune exactly int(numel*s) weights per block instead of the reference's threshold (one more)."""


def inverse_hessian_factor(gram: torch.Tensor, weight: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp*I)^-1; dead inputs get diag 1 and their weight column zeroed (in place)."""
    H = gram.clone()
    damp_in_place(H, weight, percdamp)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)


def sparsegpt(weight: torch.Tensor, stats: LayerStats, sparsity: Sparsity, options: SparseGPTOptions) -> torch.Tensor:
    """Prune column by column in blocks, compensating each pruned weight on the later columns of its row."""
    W = weight.clone().float()
    Hinv = inverse_hessian_factor(stats.gram, W, options.percdamp)
    n, m = sparsity.n, sparsity.m
    for b1 in range(0, W.shape[1], options.blocksize):
        b2 = min(b1 + options.blocksize, W.shape[1])
        W1, Hinv1 = W[:, b1:b2].clone(), Hinv[b1:b2, b1:b2]
        d = torch.diag(Hinv1)
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        if sparsity.is_nm:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            mask1 = pattern_mask(W1**2 / d.reshape(1, -1) ** 2, sparsity, options.exact)
        for i in range(b2 - b1):
            if sparsity.is_nm and i % m == 0:
                score = W1[:, i : i + m] ** 2 / d[i : i + m].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(score, n, dim=1, largest=False)[1], True)
            w = W1[:, i]
            q = w.masked_fill(mask1[:, i], 0)
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, b1:b2] = Q1
        W[:, b2:] -= Err1.matmul(Hinv[b1:b2, b2:])
    return W.to(weight.dtype)


@hookimpl
def register_pruners(register):
    register(Pruner("sparsegpt", "SparseGPT: OBS mask selection and weight update from H = XX^T (Frantar & Alistarh, 2023)",
                    prune=sparsegpt, needs=(GRAM,), options=SparseGPTOptions))
