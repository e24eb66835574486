"""Wanda (Sun et al., 2023): score |W_ij| * ||X_j||_2, compared within each output row; no weight update."""

from dataclasses import dataclass

import torch

from sds_bench.hookspecs import hookimpl
from sds_bench.plugin import Pruner
from sds_bench.sparsity import Sparsity, count_mask, nm_mask
from sds_bench.stats import COL_SQ, LayerStats


@dataclass
class WandaOptions:
    variant: bool = False
    """The paper's appendix variant: per-row cumulative-score threshold alpha, bisected to within 0.001 of the target."""


def wanda(weight: torch.Tensor, stats: LayerStats, sparsity: Sparsity, options: WandaOptions) -> torch.Tensor:
    """Prune the lowest |W|*sqrt(s) per row: int(cols*s) per row (stable sort), or the N lowest of every M."""
    score = weight.abs().float() * torch.sqrt(stats.col_sq).reshape(1, -1)
    if sparsity.is_nm:
        mask = nm_mask(score, sparsity.n, sparsity.m)
    elif options.variant:
        mask = cumulative_mask(score, sparsity.ratio)
    else:
        mask = count_mask(score, sparsity.ratio, dim=-1)
    return weight.masked_fill(mask, 0)


def cumulative_mask(score: torch.Tensor, ratio: float, tol: float = 0.001) -> torch.Tensor:
    """Wanda's variant: per row, prune scores up to where their sorted cumulative sum reaches alpha * row sum;
    alpha is bisected on [0, 0.8] from 0.4 until the whole matrix is within tol of the target."""
    sorted_score = torch.sort(score, dim=-1, stable=True)[0]
    cumsum, total = sorted_score.cumsum(dim=-1), score.sum(dim=-1, keepdim=True)

    def mask_at(alpha: float) -> torch.Tensor:
        count = (cumsum <= total * alpha).sum(dim=-1, keepdim=True)
        thres = sorted_score.gather(-1, (count - 1).clamp(min=0)).masked_fill(count == 0, -torch.inf)
        return score <= thres

    alpha, low, high = 0.4, 0.0, 0.8
    mask = mask_at(alpha)
    while abs(mask.float().mean().item() - ratio) > tol and high - low >= tol:
        if mask.float().mean().item() > ratio:
            high, alpha = alpha, (alpha + low) / 2
        else:
            low, alpha = alpha, (alpha + high) / 2
        mask = mask_at(alpha)
    return mask


@hookimpl
def register_pruners(register):
    register(Pruner("wanda", "Wanda: |W|*||X||_2 per output row, no weight update (Sun et al., 2023)",
                    prune=wanda, needs=(COL_SQ,), options=WandaOptions))
