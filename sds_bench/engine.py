"""The sequential layer-wise pass of SparseGPT and Wanda, independent of any particular pruner (`apply_pruner`).

Capture the inputs of block 0 for the calibration sequences; then, block by block: gather the statistics
the pruner asked for in one pass through the still-dense block, prune each Linear, and re-run the pruned
block to produce the next block's inputs. Only the current block is on the compute device.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sds_bench import checks
from sds_bench.allocation import allocate
from sds_bench.models import adapter_for, prunable_linears
from sds_bench.passes import capture_block_inputs, gather_stats, move_to, run_block
from sds_bench.plugin import Allocator, Pruner
from sds_bench.registry import registry
from sds_bench.sparsity import Sparsity
from sds_bench.stats import LayerStats

OFFLOAD = ("cpu", "device")
"""Where calibration activations wait while one block is on the compute device."""


def apply_pruner(model: nn.Module, pruner: Pruner, sparsity: Sparsity | str, calibration: torch.Tensor | None,
                options: Any = None, device: str | torch.device | None = None, offload: str = "cpu",
                batch_size: int = 1, quiet: bool = False,
                allocation: tuple[Allocator, Any] | None = None) -> dict[str, Any]:
    """Prune every prunable Linear of every decoder block in place, each to its `allocation` (default: the target
    for all); return the per-layer record."""
    sparsity = Sparsity.parse(sparsity)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if pruner.prune_model is not None:
        return checks.pruned_model(pruner.name, model, pruner.prune_model(
            model, calibration, sparsity, options, device=device, batch_size=batch_size, quiet=quiet), sparsity)
    needs = [registry().statistic(name, pruner.name) for name in sorted(pruner.required_stats(options))]
    live, dense = [s for s in needs if not s.dense], [s for s in needs if s.dense]
    adapter = adapter_for(model)
    blocks = adapter.decoder_blocks(model)
    store = device if offload == "device" else torch.device("cpu")
    started = time.perf_counter()
    model_params = sum(p.numel() for p in model.parameters())
    if needs:
        if calibration is None:
            raise ValueError(f"{pruner.name} needs calibration data")
        inputs, kwargs = capture_block_inputs(model, calibration, device, store, batch_size)
        kwargs = move_to(kwargs, device)
    dense_inputs = inputs.clone() if dense else None
    allocator, allocator_options = allocation or (None, None)
    allocated = {} if allocator is None or allocator.allocate is None else allocate(
        model, allocator, allocator_options, sparsity, calibration, device, store, batch_size, quiet)
    layers: dict[str, dict[str, Any]] = {}
    for i, block in enumerate(tqdm(blocks, desc=f"{pruner.name} {sparsity}", unit="block", disable=quiet)):
        home = next(block.parameters()).device
        block.to(device)
        linears = prunable_linears(block)
        stats = {name: LayerStats(f"{adapter.blocks}.{i}.{name}", model_params=model_params) for name in linears}
        if needs:
            accs, _ = gather_stats(block, linears, inputs, kwargs, live, device, batch_size)
            if dense_inputs is not None:
                dense_accs, dense_inputs = gather_stats(block, linears, dense_inputs, kwargs, dense, device, batch_size)
                accs = {name: {**accs[name], **dense_accs[name]} for name in accs}
            given: set[int] = set()  # Linears that share an input share accumulators; each gets its own copy
            for name, acc in accs.items():
                stats[name] = replace(stats[name], nsamples=calibration.shape[0], values={
                    k: a.value.clone() if id(a) in given else a.value for k, a in acc.items()})
                given.update(id(a) for a in acc.values())
        for name, lin in linears.items():
            weight, layer = lin.weight.data, stats[name].name
            target = Sparsity.parse(allocated[layer]) if allocated else sparsity
            target.check(weight)
            new = pruner.prune(weight.clone(), stats[name], target, options)
            lin.weight.data = checks.pruned_weight(pruner.name, layer, weight, new, target)
            layers[layer] = {"shape": list(weight.shape), **({"allocated": target.ratio} if allocated else {}),
                             "sparsity": float((lin.weight.data == 0).float().mean()), **stats[name].record}
        del stats
        if needs:
            inputs = run_block(block, inputs, kwargs, device, batch_size)
        block.to(home)
    return {"layers": layers, "seconds": time.perf_counter() - started}
