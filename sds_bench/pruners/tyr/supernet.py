"""The supernet: for every layer and kind, pruned candidates at kept counts center + j * step (j in -h..h).

Built block by block like SparseGPT's sequential pass, except that each block's candidates are calibrated on
inputs that carry the earlier blocks' pruning error in expectation: the next block sees the density-weighted
mean of the candidates' outputs (the reading projection is linear, so that is the output of the block whose
reading projections are the density-weighted mean of their candidates, taken sublayer by sublayer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from sds_bench.models import adapter_for
from sds_bench.passes import capture_block_inputs, gather_stats, run_block
from sds_bench.pruners.tyr.local import Candidates
from sds_bench.pruners.tyr.structures import Kind
from sds_bench.stats import BUILTIN, GRAM

ACCUMULATIONS = ("expectation", "center", "dense")
"""What the next block is calibrated on: the density-weighted mean of the candidates (the paper), the centre
candidate only (the public code's shortcut), or the dense model's outputs (no error accumulation)."""


@dataclass
class Slot:
    """One kind of structure in one layer: its level grid and, once built, each level's pruned reading weight."""

    kind: Kind
    layer: int
    center: int
    step: int
    levels: list[int]
    dense: torch.Tensor | None = None
    candidates: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """Level -> (reading projection's weight, keep flag per structure)."""

    def kept(self, level: int) -> int:
        return self.center + level * self.step


def grid(center: int, step: int, half: int, count: int) -> list[int]:
    """Levels -half..half whose kept count center + j * step lies in [0, count]: no level is clipped, so moving
    one layer up a level and another of the same kind down one keeps the total exact."""
    return [j for j in range(-half, half + 1) if 0 <= center + j * step <= count]


@dataclass
class Supernet:
    """The slots of a model (layer-major) and the Linears their candidates are loaded into."""

    slots: list[Slot]
    readers: list[nn.Linear]

    def load(self, levels: Sequence[int] | None) -> None:
        """Put each slot's candidate at `levels` (None: the dense weights) into the model."""
        for slot, reader, j in zip(self.slots, self.readers, levels or [None] * len(self.slots)):
            reader.weight.data = slot.dense if j is None else slot.candidates[j][0]


def expected_weight(slot: Slot) -> torch.Tensor:
    """Density-weighted mean of a slot's candidates (density = kept / count)."""
    densities = {j: slot.kept(j) / slot.kind.count for j in slot.candidates}
    if sum(densities.values()) == 0:
        return slot.candidates[0][0]
    mean = sum(d * slot.candidates[j][0].float() for j, d in densities.items()) / sum(densities.values())
    return mean.to(slot.dense.dtype)


def accumulated(slot: Slot, accumulation: str) -> torch.Tensor:
    """The reading weight the next block's calibration inputs are computed with."""
    if accumulation == "expectation":
        return expected_weight(slot)
    return slot.candidates[0][0] if accumulation == "center" else slot.dense


@torch.no_grad()
def build(model: nn.Module, tokens: torch.Tensor, slots: list[Slot],
          local: Callable[[torch.Tensor, torch.Tensor, int, list[int]], Candidates], accumulation: str,
          device: torch.device, batch_size: int, quiet: bool) -> Supernet:
    """Prune every slot at every level with `local`, block by block, and return the supernet (model left dense)."""
    adapter = adapter_for(model)
    inputs, kwargs = capture_block_inputs(model, tokens, device, device, batch_size)
    ordered, readers = [], []
    for i, block in enumerate(tqdm(adapter.decoder_blocks(model), desc="tyr supernet", unit="block", disable=quiet)):
        layer = [s for s in slots if s.layer == i]
        linears = {s.kind.name: block.get_submodule(s.kind.cols) for s in layer}
        accs, outs = gather_stats(block, linears, inputs, kwargs, [BUILTIN[GRAM]], device, batch_size)
        for slot in layer:
            reader = linears[slot.kind.name]
            slot.dense = reader.weight.data
            built = local(slot.dense, accs[slot.kind.name][GRAM].value, slot.kind.width,
                          [slot.kept(j) for j in slot.levels])
            slot.candidates = {j: (built[slot.kept(j)][0].to(slot.dense.dtype), built[slot.kept(j)][1])
                               for j in slot.levels}
            reader.weight.data = accumulated(slot, accumulation)
            ordered.append(slot)
            readers.append(reader)
        inputs = outs if accumulation == "dense" else run_block(block, inputs, kwargs, device, batch_size)
        for slot in layer:
            linears[slot.kind.name].weight.data = slot.dense
    return Supernet(ordered, readers)
