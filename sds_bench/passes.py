"""The pieces of a sequential block-by-block pass: capture block 0's inputs, run a block, gather statistics.

Below both the engine (the layer-wise pruning pass) and the whole-model pruners that build their own pass (Týr's
supernet), so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from sds_bench.models import adapter_for
from sds_bench.plugin import Statistic
from sds_bench.stats import Accumulator


class _Captured(Exception):
    """Raised by the hook on block 0 to stop the forward pass once its inputs are captured."""


BlockKwargs = dict[int, dict[str, Any]]
"""The arguments other than the hidden states the model passes block 0, by batch size: the calibration sequences
share one length and have no padding, so these (attention mask, positions, rotary embeddings) depend only on the
number of sequences in the batch, and a last batch shorter than the others has its own."""


@torch.no_grad()
def capture_block_inputs(model: nn.Module, tokens: torch.Tensor, device: torch.device, store: torch.device,
                         batch_size: int = 1) -> tuple[torch.Tensor, BlockKwargs]:
    """Inputs of decoder block 0 for every sequence [N, L, d], and the other arguments the model passes it."""
    adapter = adapter_for(model)
    blocks = adapter.decoder_blocks(model)
    parts = [*adapter.embedding_modules(model), blocks[0]]
    homes = [next(p.parameters(), torch.empty(0)).device for p in parts]
    for p in parts:
        p.to(device)
    hidden, kwargs = [], {}

    def catch(module, args, kw):
        states = args[0] if args else kw["hidden_states"]
        hidden.append(states.to(store))
        kwargs.setdefault(len(states), {k: v for k, v in kw.items() if k != "hidden_states"})
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
def run_block(block: nn.Module, inputs: torch.Tensor, kwargs: BlockKwargs, device: torch.device,
              batch_size: int = 1) -> torch.Tensor:
    """The block's outputs for every sequence, stored where the inputs are; each batch with its own size's kwargs."""
    outs = [_output(block(x.to(device), **kwargs[len(x)])).to(inputs.device) for x in inputs.split(batch_size)]
    return torch.cat(outs)


@torch.no_grad()
def gather_stats(block: nn.Module, linears: dict[str, nn.Linear], inputs: torch.Tensor, kwargs: BlockKwargs,
                 statistics: Iterable[Statistic], device: torch.device, batch_size: int = 1,
                 share: bool = True) -> tuple[dict[str, dict[str, Accumulator]], torch.Tensor]:
    """One pass through the block with hooks on its Linears: the statistics' accumulators by Linear and statistic
    name, and the block's outputs. Linears fed the very same input tensor (q/k/v, gate/up) share one set of
    accumulators (`share`): the same values, bit for bit, at a fraction of the cost (the Gram is in_features² per
    token)."""
    statistics = list(statistics)
    accs = {name: {s.name: Accumulator(s, lin.in_features, device) for s in statistics}
            for name, lin in linears.items()}
    fed: dict[int, tuple[torch.Tensor, str]] = {}  # this forward's inputs by id, held so that no id is reused
    owner: dict[str, str | None] = {}  # each Linear's input came from (None: its own) on every forward so far

    def reset(module, args, kw):
        fed.clear()

    def hook(name):
        def add(module, args, output):
            x = args[0]
            first = fed.setdefault(id(x), (x, name))[1] if share else name
            x = x.detach()
            source = None if first == name else first
            if owner.setdefault(name, source) != source:
                raise RuntimeError(f"{name}: its input is shared with another Linear on some calibration batches "
                                   "only; gather with share=False")
            if source is None:
                for acc in accs[name].values():
                    acc.add(x)
        return add

    handles = [lin.register_forward_hook(hook(name)) for name, lin in linears.items()] if statistics else []
    handles += [block.register_forward_pre_hook(reset, with_kwargs=True)] if statistics else []
    try:
        outs = run_block(block, inputs, kwargs, device, batch_size)
    finally:
        for h in handles:
            h.remove()
        fed.clear()
    return {name: accs[owner.get(name) or name] for name in accs}, outs


def _output(out: Any) -> torch.Tensor:
    """The hidden states of a block's output (a tuple in most transformers versions)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def move_to(value: Any, device: torch.device) -> Any:
    """`value` with every tensor in it (nested in tuples, lists, dicts) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(move_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: move_to(v, device) for k, v in value.items()}
    return value
