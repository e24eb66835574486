"""DSnoT (Zhang et al., ICLR 2024, "Dynamic Sparse No Training"): training-free prune-and-grow on a base mask.

For each output row i, with c_j = DSnoT's sum_metric_row (COL_SUM, N times the mean input), the reconstruction
error is e_i = sum over pruned j of W_ij c_j, the expected output lost to pruning. Starting from the mask of a base
pruner P (any per-layer pruner: ``dsnot-wanda``, ``dsnot-sparsegpt``, ...), every cycle swaps, in each row still
updating, one pruned weight back in (the one whose W_ij c_j / var_j ** pow_of_var most reduces e_i) for one kept
weight pruned out, and stops a row once |e_i| <= update_threshold or the swap fails its checks, for at most
max_cycle_time cycles. This follows zyxxmu/DSnoT lib/prune.py `prune_DSnoT` (commit dd4e2ee) branch by branch:

* unstructured: the pruning candidates are the kept weights with W_ij c_j of the sign that reduces e_i, the one with
  the smallest Wanda score |W_ij| sqrt(s_j) first; the sign check (e_i keeps its initial sign) only with same_sign.
* N:M: the weight pruned is the kept one with the smallest Wanda score in the regrown weight's block of M, so every
  block keeps N zeros; the sign check always applies, as in the official code. The official code ranks this with
  P's own score (its ``initial_metric``); P is a black box here, so it is Wanda's score for every P, exactly the
  official ranking for the Wanda-initialised DSnoT.

Deviation, to keep P's zeros per row (unstructured) or per block (N:M) exactly: the official regrowth list holds
every weight of the row, P's pruned ones by their score at both ends and P's kept ones (score 0) between them in
column order, and the official loop keeps writing a row's mask after the row stops; so a row whose pointer gets past
its pruned weights re-grows a weight DSnoT pruned earlier (count kept) or prunes a kept one (one zero too many), and a
pointer crossing its other end revisits a weight. Here a swap happens only where the weight regrown is pruned and the
weight pruned is kept at that moment (N:M: its block has a kept one left); otherwise the row stops, and a stopped row
is left alone. Every row the official loop leaves at P's count gets its mask exactly (tests/test_dsnot.py).

The result is the dense weights with the final mask zeroed, as the official code (no weight update): for a P with
a weight update (SparseGPT) that update is discarded, as in the official DSnoT-SparseGPT, unless weights='base'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from sds_bench.hookspecs import hookimpl
from sds_bench.plugin import Refinement, option
from sds_bench.sparsity import Sparsity
from sds_bench.stats import COL_SQ, COL_SUM, COL_VAR, LayerStats

STEP = torch.tensor([1, -1])
"""How a row's two pointers into a sorted candidate list move: the low end up, the high end down."""


@dataclass
class DSnoTOptions:
    """DSnoT's switches; defaults are the official main.py's (zyxxmu/DSnoT at 297993fd, as its README's command)."""

    max_cycle_time: int = option(50, ge=0)
    """Most prune-and-grow swaps per row (official --max_cycle_time 50)."""
    update_threshold: float = option(0.1, ge=0)
    """A row stops once its |reconstruction error| is at most this (official --update_threshold 0.1)."""
    pow_of_var: float = 1.0
    """Regrowth ranks W_ij c_j / var_j ** pow_of_var, 0 ranks W_ij c_j alone (official --pow_of_var_regrowing 1)."""
    same_sign: bool = False
    """Unstructured only: a row also stops when a swap would flip its error's sign (official --without_same_sign,
    inverted; its argparse default True, so off); the N:M branch always checks the sign, as the official code."""
    weights: Literal["dense", "base"] = "dense"
    """Kept weights' values: 'dense' the original ones (official), 'base' P's where P kept the weight (its update)."""


def dsnot(weight: torch.Tensor, stats: LayerStats, sparsity: Sparsity, options: DSnoTOptions,
          base: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """P's result on `weight`, its mask refined by DSnoT's prune-and-grow (module docstring)."""
    base_weight = base(weight)
    pruned = base_weight == 0
    W = weight.float()
    contribution = W * stats[COL_SUM].reshape(1, -1)
    wanda = W.abs() * torch.sqrt(stats[COL_SQ].reshape(1, -1))
    mask = refine_mask(pruned, contribution, wanda, stats[COL_VAR].reshape(1, -1), sparsity, options)
    kept_values = weight if options.weights == "dense" else torch.where(pruned, weight, base_weight)
    return kept_values.masked_fill(mask, 0)


def refine_mask(pruned: torch.Tensor, contribution: torch.Tensor, wanda: torch.Tensor, var: torch.Tensor,
                sparsity: Sparsity, options: DSnoTOptions) -> torch.Tensor:
    """The prune-and-grow loop on the mask `pruned` (True = pruned), all rows at once; returns the new mask."""
    mask = pruned.clone()
    error = contribution.masked_fill(~pruned, 0).sum(dim=1, keepdim=True)
    initial_sign = torch.sign(error)
    grow_order, grow_ptr = _candidates(_grow_score(contribution, pruned, var, options.pow_of_var))
    if sparsity.is_nm:
        prunable = wanda.masked_fill(pruned, torch.inf)
    else:
        prune_order, prune_ptr = _candidates(_prune_rank(contribution, wanda, pruned), pruned)
    update = torch.ones_like(error, dtype=torch.bool)
    for _ in range(options.max_cycle_time):
        if not update.any():
            break
        grow, has_grow = _take(grow_order, grow_ptr, (error > 0).long())
        if sparsity.is_nm:
            prune, has_prune = _block_partner(prunable, grow, sparsity.m)
        else:
            prune, has_prune = _take(prune_order, prune_ptr, (error < 0).long())
        grow_metric, prune_metric = contribution.gather(1, grow), contribution.gather(1, prune)
        after = error + prune_metric - grow_metric
        update &= has_grow & has_prune & mask.gather(1, grow) & ~mask.gather(1, prune)
        update &= error.abs() > options.update_threshold
        if sparsity.is_nm or options.same_sign:
            update &= initial_sign == torch.sign(after)
        if sparsity.is_nm:
            prunable.scatter_(1, prune, torch.where(update, torch.inf, prunable.gather(1, prune)))
        mask.scatter_(1, prune, update | mask.gather(1, prune))
        mask.scatter_(1, grow, ~update & mask.gather(1, grow))
        error += torch.where(update, prune_metric, torch.zeros_like(prune_metric))
        error -= torch.where(update, grow_metric, torch.zeros_like(grow_metric))
    return mask


def _grow_score(contribution: torch.Tensor, pruned: torch.Tensor, var: torch.Tensor, power: float) -> torch.Tensor:
    """The regrowth ranking W_ij c_j / var_j ** power of the pruned weights, 0 for the kept ones (the official
    metric_for_regrowing)."""
    score = contribution.masked_fill(~pruned, 0)
    return score / torch.pow(var, power) if power else score


def _prune_rank(contribution: torch.Tensor, wanda: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """A rank per weight putting the kept ones in the official pruning order (`return_reorder_indice` on the kept
    weights by ascending Wanda score): negative W_ij c_j first, lowest Wanda score first; then zero ones; then the
    positive ones, highest Wanda score first, so the lowest-scored positive one is at the high end."""
    order = wanda.masked_fill(pruned, torch.inf).argsort(dim=1, stable=True)
    sign, cols = contribution.gather(1, order).sign(), order.shape[1]
    pos = torch.arange(cols, device=order.device).expand_as(order)
    rank = torch.where(sign < 0, pos, torch.where(sign > 0, 3 * cols - pos, cols + pos))
    return torch.empty_like(rank).scatter_(1, order, rank)


def _candidates(score: torch.Tensor, excluded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's candidates (those not `excluded`) by ascending score (stable), any others after them, and the
    pointers [low, high] to the row's first and last candidate."""
    order = score.argsort(dim=1, stable=True)
    if excluded is None:
        excluded = torch.zeros_like(score, dtype=torch.bool)
    order = order.gather(1, excluded.gather(1, order).to(torch.uint8).argsort(dim=1, stable=True))
    count = (~excluded).sum(dim=1)
    return order, torch.stack((torch.zeros_like(count), count - 1), dim=1)


def _take(order: torch.Tensor, ptr: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidate at each row's pointer `end` (0 low, 1 high), whether the row has one left; moves that pointer."""
    has = ptr[:, :1] <= ptr[:, 1:]
    at = ptr.gather(1, end)
    ptr.scatter_(1, end, at + STEP.to(ptr.device)[end])
    return order.gather(1, at.clamp(0, order.shape[1] - 1)), has


def _block_partner(prunable: torch.Tensor, grow: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """In the block of M holding each row's regrown weight, the kept weight with the smallest Wanda score (official
    topk of initial_metric), and whether the block has one left."""
    start = grow - grow % m
    block = start + torch.arange(m, device=grow.device)
    score, at = torch.topk(prunable.gather(1, block), 1, dim=1, largest=False)
    return start + at, torch.isfinite(score)


@hookimpl
def register_refinements(register):
    register(Refinement("dsnot", "DSnoT: training-free prune-and-grow on P's mask, reducing each row's expected "
                                 "output error (Zhang et al., ICLR 2024)",
                        refine=dsnot, needs=(COL_SQ, COL_SUM, COL_VAR), options=DSnoTOptions,
                        patterns=("unstructured", "nm")))
