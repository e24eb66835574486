"""Magnitude pruning (the reference in locuslab/wanda): |W| scores, no calibration, no weight update."""

from dataclasses import dataclass

import torch

from sds_bench.hookspecs import hookimpl
from sds_bench.plugin import Pruner
from sds_bench.sparsity import Sparsity, pattern_mask
from sds_bench.stats import LayerStats


@dataclass
class MagnitudeOptions:
    exact: bool = False
    """Prune exactly int(numel*s) weights instead of the reference's `|W| <= sorted(|W|)[int(numel*s)]` (one more)."""


def magnitude(weight: torch.Tensor, stats: LayerStats, sparsity: Sparsity, options: MagnitudeOptions) -> torch.Tensor:
    """Zero the smallest |W|: one threshold per matrix (unstructured) or the N smallest of every M inputs per row."""
    return weight.masked_fill(pattern_mask(weight.abs(), sparsity, options.exact), 0)


@hookimpl
def register_pruners(register):
    register(Pruner("magnitude", "Smallest |W| per matrix (unstructured) or per N:M group; no calibration",
                    prune=magnitude, options=MagnitudeOptions))
