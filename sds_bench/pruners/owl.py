"""OWL (Yin et al., ICML 2024): Outlier Weighed Layerwise sparsity, a non-uniform per-block sparsity allocation.

Blocks whose Wanda scores |W_ij| * ||X_j||_2 hold more outliers (scores above M times the block's mean) matter more
to the model, so they are pruned less: each block's outlier ratio is min-max scaled onto a band 2λ wide, and the
band is shifted so that the blocks' mean sparsity is the target. The rule follows luuyin/OWL lib/prune_all.py
(`prune_wanda_outlier`): the ratios come from the dense model's statistics, block by block, before any pruning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sds_bench.hookspecs import hookimpl
from sds_bench.plugin import Allocator, option
from sds_bench.sparsity import Sparsity
from sds_bench.stats import COL_SQ, LayerStats

FLOOR = 0.01
"""The official code's sparsity for a block whose allocated sparsity is zero or below."""


@dataclass
class OWLOptions:
    m: float = option(5.0, gt=0)
    """M: a score is an outlier above M times its block's mean score (5 in the official README and scripts; main.py's
    argparse default is 3)."""
    lam: float = option(0.08, ge=0)
    """λ: the block sparsities span a band 2λ wide about the target (0.08 in the official README, scripts and main.py)."""


def wanda_metric(weight: torch.Tensor, col_sq: torch.Tensor) -> torch.Tensor:
    """Wanda's score |W_ij| * sqrt(s_j) of one Linear (fp32), s its col_sq statistic (the official `scaler_row`)."""
    return weight.abs().float() * torch.sqrt(col_sq.reshape(1, -1))


def outlier_ratio(metrics: list[torch.Tensor], m: float) -> float:
    """A block's outlier ratio in percent: the share of its Linears' scores, pooled, above m times their pooled mean.

    As the official `check_outlier_mean`: one threshold for the whole block (not one per Linear), the mean taken in
    fp32 on the CPU over the scores flattened and concatenated in the block's module order."""
    scores = torch.cat([torch.flatten(x.cpu()) for x in metrics])
    count = (scores > torch.mean(scores) * m).sum().item()
    return float(count) / scores.numel() * 100


def owl_sparsities(ratios: list[float], target: float, options: OWLOptions) -> list[float]:
    """Per-block sparsity from the blocks' outlier ratios: more outliers, lower sparsity; mean sparsity = target.

    As the official code, in float64: the ratios min-max scaled onto [0, 2λ] are the blocks' extra density; shifted
    to mean 1 - target, each block's sparsity is 1 minus it, raised to 0.01 where it is zero or below. Where every
    ratio is equal (the official code divides by zero and gets NaN) every block gets the target."""
    r = np.array(ratios, dtype=np.float64)
    if r.max() == r.min():
        return [float(target)] * len(r)
    r = (r - r.min()) * (1 / (r.max() - r.min()) * options.lam * 2)
    density = r - np.mean(r) + (1 - target)
    return [float(s) if s > 0 else FLOOR for s in 1 - density]


def owl(blocks: list[dict[str, tuple[torch.Tensor, LayerStats]]], sparsity: Sparsity,
        options: OWLOptions) -> dict[str, float]:
    """Every Linear's sparsity: its block's, from the block's outlier ratio (the allocator `owl`)."""
    ratios = [outlier_ratio([wanda_metric(w, stats[COL_SQ]) for w, stats in block.values()], options.m)
              for block in blocks]
    return {name: s for block, s in zip(blocks, owl_sparsities(ratios, sparsity.ratio, options)) for name in block}


@hookimpl
def register_allocators(register):
    register(Allocator("owl", "OWL: less sparsity for blocks with more outlier Wanda scores (Yin et al., ICML 2024)",
                       allocate=owl, needs=(COL_SQ,), options=OWLOptions))
