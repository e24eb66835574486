"""The allocation axis: a sparsity per Linear from the dense model's statistics, before pruning starts.

`uniform` (every Linear gets the target) is the default and costs nothing; any other allocator first runs the dense
model block by block over the calibration inputs, gathering the statistics it needs (one extra forward pass).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sds_bench import checks
from sds_bench.hookspecs import hookimpl
from sds_bench.models import adapter_for, prunable_linears
from sds_bench.passes import capture_block_inputs, gather_stats, move_to
from sds_bench.plugin import Allocator
from sds_bench.registry import registry
from sds_bench.sparsity import Sparsity
from sds_bench.stats import LayerStats

UNIFORM = "uniform"


def allocate(model: nn.Module, allocator: Allocator, options: Any, sparsity: Sparsity, calibration: torch.Tensor,
             device: torch.device, store: torch.device, batch_size: int = 1, quiet: bool = False) -> dict[str, float]:
    """Each prunable Linear's sparsity by full name, from `allocator` over the dense model's statistics (checked:
    every Linear gets one, in [0, 1))."""
    needs = [registry().statistic(name, allocator.name) for name in allocator.needs]
    adapter = adapter_for(model)
    inputs, kwargs = capture_block_inputs(model, calibration, device, store, batch_size)
    kwargs = move_to(kwargs, device)
    blocks = []
    for i, block in enumerate(tqdm(adapter.decoder_blocks(model), desc=f"{allocator.name} allocation", unit="block",
                                   disable=quiet)):
        home = next(block.parameters()).device
        block.to(device)
        linears = prunable_linears(block)
        accs, inputs = gather_stats(block, linears, inputs, kwargs, needs, device, batch_size)
        block.to(home)  # before reading the weights, so that no block's device copy outlives its turn
        blocks.append({f"{adapter.blocks}.{i}.{name}": (lin.weight.data, LayerStats(
            f"{adapter.blocks}.{i}.{name}", nsamples=calibration.shape[0],
            values={k: a.value.to(home) for k, a in accs[name].items()})) for name, lin in linears.items()})
    return checks.allocation(allocator.name, allocator.allocate(blocks, sparsity, options), blocks)


@hookimpl
def register_allocators(register):
    register(Allocator(UNIFORM, "every Linear at the target (the default)", patterns=("unstructured", "nm")))
