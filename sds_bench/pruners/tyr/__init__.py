"""Týr-the-Pruner (Li et al., NeurIPS 2025, arXiv 2503.09657): global structural pruning by supernet search.

Attention KV groups and FFN channels are pruned under an exact per-kind budget. Each iteration builds a supernet
(every layer locally pruned at `levels` kept counts spaced `delta` of the layer apart, around the current
allocation, with expectation error accumulation) and evolves the per-layer levels to minimise the KL divergence
from the dense model; the next iteration halves `delta` around the best allocation. Also registers the Wanda-sp
structural baseline (uniform allocation, no weight update).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from sds_bench.errors import UserError
from sds_bench.hookspecs import hookimpl
from sds_bench.models import adapter_for
from sds_bench.plugin import Pruner, option
from sds_bench.pruners.tyr.local import obs_candidates, wanda_sp_candidates
from sds_bench.pruners.tyr.search import evolve
from sds_bench.pruners.tyr.structures import budget, kinds, layer_records, shrink, uniform, zero_pruned
from sds_bench.pruners.tyr.supernet import Slot, Supernet, build, grid
from sds_bench.sparsity import Sparsity

PAPER_LAYERS = 32
"""Depth the paper's search settings were made for (Llama-2-7B); auto offspring and generations scale with
depth / this."""


@dataclass
class TyrOptions:
    search: bool = True
    """Evolve the per-layer allocation; off: the uniform allocation, read from the same supernet."""
    accumulation: Literal["expectation", "center", "dense"] = "expectation"
    """Next block calibrated on the density-weighted mean of the candidates (paper), the centre one, or dense outputs."""
    levels: int = option(9, ge=1)
    """Candidates per layer and kind (odd): kept counts centre + j*step for j in -(levels//2)..levels//2. Paper: 9."""
    delta: float = option(0.125, gt=0, le=1)
    """Level spacing in the first iteration, as a fraction of a layer's structures (step = max(1, round(delta*count)));
    halved every iteration. Paper: 0.125 (12.5% -> 1.5625% over 4 iterations)."""
    iterations: int = option(4, ge=1)
    """Prune-and-search iterations, coarse to fine. Paper: 4."""
    offspring: int | None = option(None, ge=1)
    """Offspring per generation. Paper: 128. Auto: max(8, 128 * layers / 32), at most 128."""
    generations: int | None = option(None, ge=1)
    """Generations per iteration. Paper: 50. Auto: max(5, 50 * layers / 32), at most 50."""
    stage_tokens: str | None = None
    """Tokens per selection stage, comma-separated. Paper: 2048,16384,131072 of 4M calibration tokens. Auto: the
    same fractions (1/2048, 1/256, 1/32) of the calibration tokens, at least one sequence; capped at all of them."""
    stage_survivors: str | None = None
    """Survivors per selection stage. Paper: 16,4,2 (the best of the last stage is the next parent).
    Auto: offspring/8, offspring/32, 2, each at least 1."""
    kl_topk: int = option(8192, ge=1)
    """Dense top-k tokens per position in the KL (the full vocabulary if smaller: the exact KL). Paper: 8192."""
    damp: float = option(0.01, ge=0)
    """Dampening of H = X^T X, as a fraction of its mean diagonal. Paper: 0.01."""
    obs_rounds: int = option(16, ge=1)
    """Weight and inverse-Hessian updates while sweeping a layer from dense to empty (ceil(count/rounds) groups
    removed per update; 1 group per update when count <= rounds). Paper's code: 16 for FFN channels."""
    batch_size: int = option(8, ge=1)
    """Sequences per forward pass in supernet building and search."""
    shrink: bool = False
    """Physically remove the pruned structures (see structures.shrink); otherwise they are zeroed in place."""


@dataclass
class WandaSpOptions:
    accumulation: Literal["center", "dense"] = "center"
    """Next block calibrated on the pruned block's outputs, or on the dense ones."""
    batch_size: int = option(8, ge=1)
    shrink: bool = False


def _plan(options: TyrOptions, layers: int, tokens: torch.Tensor) -> dict[str, Any]:
    """The search settings actually used: options, or their depth-scaled defaults."""
    scale = min(1.0, layers / PAPER_LAYERS)
    offspring = options.offspring or max(8, round(128 * scale))
    counts = _ints(options.stage_tokens, "stage_tokens") or [max(tokens.shape[1], tokens.numel() // f)
                                                              for f in (2048, 256, 32)]
    survivors = _ints(options.stage_survivors, "stage_survivors") or [max(1, offspring // 8), max(1, offspring // 32), 2]
    if len(counts) != len(survivors):
        raise UserError("tyr: stage_tokens and stage_survivors need the same number of stages")
    return {"offspring": offspring, "generations": options.generations or max(5, round(50 * scale)),
            "stages": [(min(c, tokens.numel()), s) for c, s in zip(counts, survivors)]}


def _ints(text: str | None, name: str) -> list[int] | None:
    if not text or text == "auto":
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"tyr: {name} must be comma-separated integers such as 2048,16384, got {text!r}") from None
    if min(values) < 1:
        raise UserError(f"tyr: {name} must be positive, got {text!r}")
    return values


def _check(options: TyrOptions) -> None:
    """What the declared bounds cannot say: a centre level needs an odd count."""
    if options.levels % 2 == 0:
        raise UserError(f"tyr: levels must be odd, got {options.levels}")


def structural_prune(model: nn.Module, calibration: torch.Tensor, sparsity: Sparsity, options: TyrOptions,
                     local, arm: str, device: str | torch.device | None = None, batch_size: int | None = None,
                     quiet: bool = False) -> dict[str, Any]:
    """Allocate the exact budget (uniformly, or by iterated supernet search), prune, and return the record."""
    if calibration is None:
        raise UserError(f"{arm} needs calibration data")
    _check(options)
    started = time.perf_counter()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batch_size = batch_size or options.batch_size
    layers = len(adapter_for(model).decoder_blocks(model))
    structure_kinds = kinds(model)
    centers = {k.name: uniform(budget(k, layers, sparsity), layers) for k in structure_kinds}
    plan = _plan(options, layers, calibration) if options.search else {}
    rng = random.Random(torch.initial_seed())
    iterations, delta = [], options.delta
    for _ in range(options.iterations if options.search else 1):
        began = time.perf_counter()
        steps = {k.name: max(1, round(delta * k.count)) for k in structure_kinds}
        slots = [Slot(k, i, centers[k.name][i], steps[k.name],
                      grid(centers[k.name][i], steps[k.name], options.levels // 2, k.count))
                 for i in range(layers) for k in structure_kinds]
        net = build(model, calibration, slots, local, options.accumulation, device, batch_size, quiet)
        best, curve = (evolve(model, net, calibration, plan["offspring"], plan["generations"], plan["stages"],
                              options.kl_topk, batch_size, rng, quiet) if options.search else ((0,) * len(slots), []))
        centers = {k.name: [s.kept(j) for s, j in zip(net.slots, best) if s.kind is k] for k in structure_kinds}
        iterations.append({"delta": delta, "steps": steps, "fitness": curve, "seconds": time.perf_counter() - began})
        delta /= 2
    keep, records = _apply(model, net, best)
    prunable = sum(k.params * k.count * layers for k in structure_kinds)
    kept = sum(k.params * sum(centers[k.name]) for k in structure_kinds)
    if options.shrink:
        shrink(model, keep)
    return {"layers": records, "seconds": time.perf_counter() - started, "arm": arm, "allocation": centers,
            "parameters": {"prunable": prunable, "kept": kept, "removed": prunable - kept,
                           "structural_sparsity": 1 - kept / prunable,
                           "per_structure": {k.name: k.params for k in structure_kinds}},
            "search": {"plan": plan, "iterations": iterations}, "shrunk": options.shrink}


@torch.no_grad()
def _apply(model: nn.Module, net: Supernet, levels: tuple[int, ...]) -> tuple[dict[str, list], dict[str, dict]]:
    """Write the chosen candidates into the model and zero the rows feeding pruned structures; return the keep
    flags per kind and layer, and the per-Linear records."""
    adapter = adapter_for(model)
    blocks = adapter.decoder_blocks(model)
    keep, records = {}, {}
    for slot, reader, level in zip(net.slots, net.readers, levels):
        weight, mask = slot.candidates[level]
        reader.weight.data = weight.clone()
        zero_pruned(blocks[slot.layer], slot.kind, mask)
        keep.setdefault(slot.kind.name, []).append(mask)
        records.update(layer_records(blocks[slot.layer], f"{adapter.blocks}.{slot.layer}", slot.kind, mask))
    return keep, records


def tyr(model: nn.Module, calibration: torch.Tensor, sparsity: Sparsity, options: TyrOptions,
        **run: Any) -> dict[str, Any]:
    """Týr-the-Pruner: OBS group pruning with least-squares re-solve, supernet search unless options.search is off."""
    local = partial(obs_candidates, damp=options.damp, rounds=options.obs_rounds)
    arm = f"tyr search={'on' if options.search else 'off'} accumulation={options.accumulation}"
    return structural_prune(model, calibration, sparsity, options, local, arm, **run)


def wanda_sp(model: nn.Module, calibration: torch.Tensor, sparsity: Sparsity, options: WandaSpOptions,
             **run: Any) -> dict[str, Any]:
    """Wanda-sp: uniform allocation, group score ||X_j|| * sum_i |W_ij| summed over the group, no weight update."""
    plan = TyrOptions(search=False, levels=1, accumulation=options.accumulation, batch_size=options.batch_size,
                      shrink=options.shrink)
    return structural_prune(model, calibration, sparsity, plan, wanda_sp_candidates,
                            f"wanda-sp accumulation={options.accumulation}", **run)


@hookimpl
def register_pruners(register):
    register(Pruner("tyr", "Týr-the-Pruner: global structural pruning of heads and FFN channels by supernet search "
                    "(Li et al., 2025)", prune_model=tyr, options=TyrOptions, patterns=("unstructured",)))
    register(Pruner("wanda-sp", "Wanda-sp: structural Wanda scores, uniform heads/channels, no update (An et al., 2024)",
                    prune_model=wanda_sp, options=WandaSpOptions, patterns=("unstructured",)))

