"""The sequential layer-wise pass of SparseGPT and Wanda, independent of any particular pruner (`apply_pruner`).

Capture the inputs of block 0 for the calibration sequences; then, block by block: gather the statistics
the pruner asked for in one pass through the still-dense block, prune each Linear, and re-run the pruned
block to produce the next block's inputs. Only the current block is on the compute device.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sds_bench import checks
from sds_bench.models import adapter_for, prunable_linears
from sds_bench.passes import capture_block_inputs, gather_stats, move_to, run_block
from sds_bench.plugin import Pruner
from sds_bench.sparsity import Sparsity
from sds_bench.stats import COL_SQ, DENSE_GRAM, GRAM, LayerStats

OFFLOAD = ("cpu", "device")
"""Where calibration activations wait while one block is on the compute device."""


def apply_pruner(model: nn.Module, pruner: Pruner, sparsity: Sparsity | str, calibration: torch.Tensor | None,
                options: Any = None, device: str | torch.device | None = None, offload: str = "cpu",
                batch_size: int = 1, quiet: bool = False) -> dict[str, Any]:
    """Prune every prunable Linear of every decoder block in place; return the per-layer record."""
    sparsity = Sparsity.parse(sparsity)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if pruner.prune_model is not None:
        return checks.pruned_model(pruner.name, model, pruner.prune_model(
            model, calibration, sparsity, options, device=device, batch_size=batch_size, quiet=quiet), sparsity)
    needs = pruner.required_stats(options)
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
    dense_inputs = inputs.clone() if DENSE_GRAM in needs else None
    layers: dict[str, dict[str, Any]] = {}
    for i, block in enumerate(tqdm(blocks, desc=f"{pruner.name} {sparsity}", unit="block", disable=quiet)):
        home = next(block.parameters()).device
        block.to(device)
        linears = prunable_linears(block)
        stats = {name: LayerStats(f"{adapter.blocks}.{i}.{name}", model_params=model_params) for name in linears}
        if needs:
            accs, _ = gather_stats(block, linears, inputs, kwargs, needs & {GRAM, COL_SQ}, device, batch_size)
            for name, acc in accs.items():
                stats[name].nsamples = calibration.shape[0]
                stats[name].gram = acc[GRAM].value if GRAM in acc else None
                stats[name].col_sq = acc[COL_SQ].value if COL_SQ in acc else None
        if dense_inputs is not None:
            accs, dense_inputs = gather_stats(block, linears, dense_inputs, kwargs, {GRAM}, device, batch_size)
            for name, acc in accs.items():
                stats[name].dense_gram = acc[GRAM].value
        for name, lin in linears.items():
            weight = lin.weight.data
            sparsity.check(weight)
            new = pruner.prune(weight.clone(), stats[name], sparsity, options)
            lin.weight.data = checks.pruned_weight(pruner.name, stats[name].name, weight, new, sparsity)
            layers[stats[name].name] = {"shape": list(weight.shape),
                                        "sparsity": float((lin.weight.data == 0).float().mean()), **stats[name].record}
        del stats
        if needs:
            inputs = run_block(block, inputs, kwargs, device, batch_size)
        block.to(home)
    return {"layers": layers, "seconds": time.perf_counter() - started}
