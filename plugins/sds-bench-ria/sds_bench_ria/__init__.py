"""RIA: Relative Importance and Activations (Zhang et al., "Plug-and-Play", ICLR 2024), an sds-bench plugin.

Score of weight (i, j): RI_ij * ||X_j||_2^a, with relative importance
RI_ij = |W_ij| / sum_k |W_kj|  +  |W_ij| / sum_k |W_ik|   (its share of input channel j and of output row i),
compared within each output row (unstructured) or within every group of M inputs (N:M). No weight update.
The paper's optional channel permutation for N:M is not implemented.
"""

from dataclasses import dataclass

import torch

from sds_bench import COL_SQ, LayerStats, Pruner, Sparsity, hookimpl
from sds_bench.plugin import option
from sds_bench.sparsity import count_mask, nm_mask


@dataclass
class RIAOptions:
    a: float = option(0.5, ge=0)
    """Exponent of the activation norm (the paper's default 0.5)."""


def ria(weight: torch.Tensor, stats: LayerStats, sparsity: Sparsity, options: RIAOptions) -> torch.Tensor:
    """Prune the lowest relative-importance x activation scores per row (or per N:M group)."""
    w = weight.abs().float()
    relative = w / w.sum(dim=0, keepdim=True) + w / w.sum(dim=1, keepdim=True)
    score = relative * stats.col_sq.sqrt().reshape(1, -1) ** options.a
    mask = nm_mask(score, sparsity.n, sparsity.m) if sparsity.is_nm else count_mask(score, sparsity.ratio, dim=-1)
    return weight.masked_fill(mask, 0)


@hookimpl
def register_pruners(register):
    register(Pruner("ria", "RIA: relative importance x activation^a per row (Zhang et al., ICLR 2024)",
                    prune=ria, needs=(COL_SQ,), options=RIAOptions))
