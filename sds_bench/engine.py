"""The sequential layer-wise pass of SparseGPT and Wanda, independent of any particular pruner.

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

from sds_bench.models import adapter_for, prunable_linears
from sds_bench.plugin import Pruner
from sds_bench.sparsity import Sparsity
from sds_bench.stats import COL_SQ, DENSE_GRAM, GRAM, Accumulator, LayerStats


class _Captured(Exception):
    """Raised by the hook on block 0 to stop the forward pass once its inputs are captured."""


@torch.no_grad()
def capture_block_inputs(model: nn.Module, tokens: torch.Tensor, device: torch.device, store: torch.device,
                         batch_size: int = 1) -> tuple[torch.Tensor, dict[str, Any]]:
    """Inputs of decoder block 0 for every sequence [N, L, d], and the other arguments the model passes it."""
    adapter = adapter_for(model)
    blocks = adapter.decoder_blocks(model)
    parts = [*adapter.embedding_modules(model), blocks[0]]
    homes = [next(p.parameters(), torch.empty(0)).device for p in parts]
    for p in parts:
        p.to(device)
    hidden, kwargs = [], {}

    def catch(module, args, kw):
        hidden.append((args[0] if args else kw["hidden_states"]).to(store))
        if not kwargs:
            kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _Captured

    handle = blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for batch in tokens.split(batch_size):
            try:
                model(batch.to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
        for p, home in zip(parts, homes):
            p.to(home)
    return torch.cat(hidden), kwargs


@torch.no_grad()
def run_block(block: nn.Module, inputs: torch.Tensor, kwargs: dict[str, Any], device: torch.device,
              batch_size: int = 1) -> torch.Tensor:
    """The block's outputs for every sequence, stored where the inputs are."""
    outs = [_output(block(x.to(device), **kwargs)).to(inputs.device) for x in inputs.split(batch_size)]
    return torch.cat(outs)


@torch.no_grad()
def gather_stats(block: nn.Module, linears: dict[str, nn.Linear], inputs: torch.Tensor, kwargs: dict[str, Any],
                 kinds: set[str], device: torch.device, batch_size: int = 1) -> tuple[dict, torch.Tensor]:
    """One pass through the block with hooks on its Linears: the requested statistics, and the block's outputs."""
    accs = {name: {k: Accumulator(k, lin.in_features, device) for k in kinds} for name, lin in linears.items()}

    def hook(name):
        def add(module, args, output):
            for acc in accs[name].values():
                acc.add(args[0].detach())
        return add

    handles = [lin.register_forward_hook(hook(name)) for name, lin in linears.items()] if kinds else []
    try:
        outs = run_block(block, inputs, kwargs, device, batch_size)
    finally:
        for h in handles:
            h.remove()
    return accs, outs


def prune_model(model: nn.Module, pruner: Pruner, sparsity: Sparsity | str, calibration: torch.Tensor | None,
                options: Any = None, device: str | torch.device | None = None, offload: str = "cpu",
                batch_size: int = 1, quiet: bool = False) -> dict[str, Any]:
    """Prune every prunable Linear of every decoder block in place; return the per-layer record."""
    sparsity = Sparsity.parse(sparsity)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if pruner.prune_model is not None:
        return pruner.prune_model(model, calibration, sparsity, options, device=device, batch_size=batch_size, quiet=quiet)
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
        kwargs = _to(kwargs, device)
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
            lin.weight.data = new.to(weight.dtype)
            layers[stats[name].name] = {"shape": list(weight.shape),
                                        "sparsity": float((lin.weight.data == 0).float().mean()), **stats[name].record}
        del stats
        if needs:
            inputs = run_block(block, inputs, kwargs, device, batch_size)
        block.to(home)
    return {"layers": layers, "seconds": time.perf_counter() - started}


def _output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value
