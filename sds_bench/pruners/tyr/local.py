"""Local pruning of one layer's structures: groups of input columns of the projection that reads them.

Each function takes that projection's weight W [out, in], the Gram matrix H of its calibration inputs X, the
columns per structure, and the kept counts wanted, and returns for each count the new weight (pruned columns
zero) and the per-structure keep flags. Candidates of one layer are nested: one greedy sweep removes groups
from the dense layer down to the sparsest count and snapshots each count on the way.
"""

from __future__ import annotations

import math

import torch

from sds_bench.pruners.tyr.structures import expand
from sds_bench.stats import damp_in_place

Candidates = dict[int, tuple[torch.Tensor, torch.Tensor]]


def damped(gram: torch.Tensor, weight: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """H + damp * mean(diag H) * I in fp32, dead inputs (zero diagonal) given diagonal 1 and zero weight."""
    H, W = gram.float().clone(), weight.float().clone()
    damp_in_place(H, W, damp)
    return H, W


def group_scores(B: torch.Tensor, Hinv: torch.Tensor, width: int, removed: torch.Tensor) -> torch.Tensor:
    """OBS error of removing each group S alone: 1/2 tr(B_S^T (Hinv_SS)^-1 B_S); removed groups score +inf."""
    count = removed.numel()
    blocks = torch.diagonal(Hinv.view(count, width, count, width), dim1=0, dim2=2).permute(2, 0, 1).clone()
    blocks[removed] = torch.eye(width, device=B.device)
    Bg = B.view(count, width, -1)
    return (0.5 * (Bg * torch.linalg.solve(blocks, Bg)).sum((1, 2))).masked_fill(removed, torch.inf)


def least_squares(H: torch.Tensor, G: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Weight [out, in] minimising ||XW - XW'||^2 over the kept columns: W'_K = H_KK^-1 G_K, the rest zero."""
    B = torch.zeros_like(G)
    if keep.any():
        B[keep] = torch.cholesky_solve(G[keep], torch.linalg.cholesky(H[keep][:, keep]))
    return B.t()


def obs_candidates(weight: torch.Tensor, gram: torch.Tensor, width: int, kept_counts: list[int], damp: float,
                   rounds: int) -> Candidates:
    """Remove the lowest-scoring groups by the OBS group score, at most ceil(count/rounds) per update of the
    remaining weights and inverse Hessian, then re-solve each candidate's kept weights by least squares."""
    H, W = damped(gram, weight, damp)
    count = W.shape[1] // width
    B = W.t().contiguous()
    G = H @ B
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    removed = torch.zeros(count, dtype=torch.bool, device=W.device)
    chunk = max(1, math.ceil(count / rounds))
    out = {}
    for kept in sorted(set(kept_counts), reverse=True):
        while count - int(removed.sum()) > kept:
            scores = group_scores(B, Hinv, width, removed)
            pick = torch.topk(scores, min(chunk, count - int(removed.sum()) - kept), largest=False).indices
            mask = torch.zeros(count, dtype=torch.bool, device=W.device)
            mask[pick] = True
            idx = expand(mask, width).nonzero().squeeze(1)
            factor = torch.linalg.cholesky(Hinv[idx][:, idx])
            B -= Hinv[:, idx] @ torch.cholesky_solve(B[idx], factor)
            Hinv -= Hinv[:, idx] @ torch.cholesky_solve(Hinv[idx], factor)
            B[idx], Hinv[idx], Hinv[:, idx] = 0, 0, 0
            removed |= mask
        out[kept] = (least_squares(H, G, expand(~removed, width)), ~removed)
    return out


def wanda_sp_candidates(weight: torch.Tensor, gram: torch.Tensor, width: int, kept_counts: list[int]) -> Candidates:
    """Wanda-sp baseline: group score sum over its columns j of ||X_j|| * sum_i |W_ij|; keep the top groups,
    no weight update."""
    W = weight.float()
    count = W.shape[1] // width
    score = (W.abs().sum(0) * torch.sqrt(torch.diag(gram).float().clamp(min=0))).view(count, width).sum(1)
    order = torch.argsort(score, descending=True, stable=True)
    out = {}
    for kept in kept_counts:
        keep = torch.zeros(count, dtype=torch.bool, device=W.device)
        keep[order[:kept]] = True
        out[kept] = (W * expand(keep, width), keep)
    return out
