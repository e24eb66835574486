"""A third-party statistic (col_absmax), allocator (ramp) and refinement (swap), as a plugin author writes them."""

from dataclasses import dataclass

import torch

from sds_bench import LayerStats, Sparsity, hookimpl
from sds_bench.plugin import Allocator, Refinement, Statistic, option


def start(in_features, device):
    return torch.zeros(in_features, device=device)


def add(state, x, n):
    """The running maximum of |x_j| over every calibration token."""
    return torch.maximum(state, x.abs().amax(dim=0))


@dataclass
class RampOptions:
    delta: float = option(0.1, ge=0, lt=0.5)
    """Sparsity rises linearly from target - delta (first block) to target + delta (last block)."""


def ramp(blocks, sparsity: Sparsity, options: RampOptions):
    steps = max(len(blocks) - 1, 1)
    return {name: sparsity.ratio + options.delta * (2 * i / steps - 1)
            for i, block in enumerate(blocks) for name in block}


def swap(weight: torch.Tensor, stats: LayerStats, sparsity: Sparsity, options, base) -> torch.Tensor:
    """Per row, regrow the pruned weight of largest |W| * absmax and prune the kept one of smallest: counts hold."""
    pruned = base(weight)
    score = weight.abs() * stats["col_absmax"]
    kept = pruned != 0
    grow = score.masked_fill(kept, -1).argmax(dim=1, keepdim=True)
    cut = score.masked_fill(~kept, float("inf")).argmin(dim=1, keepdim=True)
    mask = kept.scatter(1, grow, True).scatter(1, cut, False)
    stats.record["swapped_rows"] = weight.shape[0]
    return weight * mask


@hookimpl
def register_statistics(register):
    register(Statistic("col_absmax", "largest |x_j| over the calibration tokens", start, add))


@hookimpl
def register_allocators(register):
    register(Allocator("ramp", "sparsity rising linearly with depth", allocate=ramp, options=RampOptions))


@hookimpl
def register_refinements(register):
    register(Refinement("swap", "one regrow-and-prune swap per row", refine=swap, needs=("col_absmax",),
                        patterns=("unstructured",)))
