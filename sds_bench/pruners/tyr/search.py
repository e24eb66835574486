"""Evolutionary search over the supernet's per-layer levels under an exact budget per kind of structure.

One parent per generation; each offspring shifts 1-4 levels (fewer more likely) from one layer to another of the
same kind, so every kind keeps its total exactly. Offspring are ranked in stages of increasing token counts, each
keeping fewer survivors; the parent rejoins before the last stage (elitism) and the best becomes the next parent.
Fitness: mean KL divergence of the pruned model's next-token distribution from the dense model's, on the
dense model's top-k tokens per position (k = the vocabulary gives the exact KL).
"""

from __future__ import annotations

import random

import torch
from torch import nn
from tqdm.auto import tqdm

from sds_bench.pruners.tyr.supernet import Slot, Supernet

Levels = tuple[int, ...]


def mutate(levels: Levels, slots: list[Slot], rng: random.Random) -> Levels:
    """Raise one slot's level and lower another's of the same kind, min(U{1..4}, U{1..4}) times."""
    child = list(levels)
    for _ in range(min(rng.randint(1, 4), rng.randint(1, 4))):
        ups = [a for a, s in enumerate(slots) if child[a] + 1 in s.levels]
        if not ups:
            break
        a = rng.choice(ups)
        downs = [b for b, s in enumerate(slots)
                 if b != a and s.kind.name == slots[a].kind.name and child[b] - 1 in s.levels]
        if downs:
            b = rng.choice(downs)
            child[a], child[b] = child[a] + 1, child[b] - 1
    return tuple(child)


def stage_batches(tokens: torch.Tensor, count: int, batch_size: int, rng: random.Random) -> list[torch.Tensor]:
    """`count` tokens from randomly drawn calibration sequences (the last one cut short), in forward batches."""
    n, length = tokens.shape
    order = rng.sample(range(n), min(n, -(-count // length)))
    full, rest = divmod(count, length)
    batches = list(tokens[order[:full]].split(batch_size))
    return batches + [tokens[order[full:full + 1], :rest]] if rest else batches


@torch.no_grad()
def teacher(model: nn.Module, batches: list[torch.Tensor], topk: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The dense model's next-token log-probabilities per batch: all of them (ids None) when topk covers the
    vocabulary, else the top-k with their token ids."""
    device = next(model.parameters()).device
    out = []
    for x in batches:
        logp = torch.log_softmax(model(x.to(device), use_cache=False).logits.float(), -1)
        out.append((logp, None) if topk >= logp.shape[-1] else tuple(logp.topk(topk, dim=-1)))
    return out


@torch.no_grad()
def kl_fitness(model: nn.Module, batches: list[torch.Tensor],
               targets: list[tuple[torch.Tensor, torch.Tensor | None]]) -> float:
    """Mean over positions of sum over the dense model's (top-k) tokens of p (log p - log q)."""
    device = next(model.parameters()).device
    total, positions = 0.0, 0
    for x, (logp, ids) in zip(batches, targets):
        logq = torch.log_softmax(model(x.to(device), use_cache=False).logits.float(), -1)
        logq = logq if ids is None else logq.gather(-1, ids)
        total += float((logp.exp() * (logp - logq)).sum())
        positions += x.numel()
    return total / positions


def evolve(model: nn.Module, net: Supernet, tokens: torch.Tensor, offspring: int, generations: int,
           stages: list[tuple[int, int]], topk: int, batch_size: int, rng: random.Random,
           quiet: bool) -> tuple[Levels, list[float]]:
    """Search from the centre allocation (all levels 0); return the best levels and the best fitness per generation.
    The model is left dense."""
    parent: Levels = (0,) * len(net.slots)
    curve = []
    for _ in tqdm(range(generations), desc="tyr search", unit="gen", disable=quiet):
        children: dict[Levels, None] = {}
        for _attempt in range(100 * offspring):
            if len(children) == offspring:
                break
            child = mutate(parent, net.slots, rng)
            if child != parent:
                children[child] = None
        if not children:
            break
        candidates = list(children)
        for stage, (count, survivors) in enumerate(stages):
            if stage == len(stages) - 1 and parent not in candidates:
                candidates.append(parent)
            batches = stage_batches(tokens, count, batch_size, rng)
            net.load(None)
            targets = teacher(model, batches, topk)
            fitness = []
            for levels in candidates:
                net.load(levels)
                fitness.append(kl_fitness(model, batches, targets))
            ranked = sorted(range(len(candidates)), key=fitness.__getitem__)[:survivors]
            candidates, best = [candidates[i] for i in ranked], fitness[ranked[0]]
        parent = candidates[0]
        curve.append(best)
    net.load(None)
    return parent, curve
