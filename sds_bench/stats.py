"""Statistics of a Linear layer's calibration inputs that a pruner may ask for, and their accumulators.

Both are accumulated one calibration sequence at a time as running means, in the exact order the
reference SparseGPT and Wanda code use, so that results match theirs bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

GRAM = "gram"
"""H = (2/N) * sum over tokens of x x^T (in_features x in_features, fp32), N counting sequences (SparseGPT).
Hence for any W' the output error ||W' X||^2 = (N/2) tr(W' H W'^T), with gradient N W' H: losses on X need only H."""
COL_SQ = "col_sq"
"""s = (1/N) * sum over tokens of x_j^2 per input column (fp32), N counting sequences (Wanda's ||X_j||^2 / N)."""
DENSE_GRAM = "dense_gram"
"""GRAM of the inputs the same layer sees in the dense model (the engine runs a dense stream beside the pruned one)."""
KNOWN = (GRAM, COL_SQ, DENSE_GRAM)


def damp_in_place(H: torch.Tensor, W: torch.Tensor, damp: float) -> None:
    """H + damp * mean(diag H) * I, dead inputs (zero diagonal) first given diagonal 1 and a zero weight column in W
    (SparseGPT's conditioning, shared by Týr's local pruning)."""
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))


@dataclass
class LayerStats:
    """What a pruner receives besides the weight: the statistics it asked for, and a dict to report diagnostics."""

    name: str
    nsamples: int = 0
    gram: torch.Tensor | None = None
    col_sq: torch.Tensor | None = None
    dense_gram: torch.Tensor | None = None
    model_params: int = 0
    """Parameter count of the whole model (SDS skips weight adjustment from about 3B on, as the paper does)."""
    record: dict = field(default_factory=dict)


class Accumulator:
    """Running-mean accumulation of one statistic over calibration sequences fed one at a time."""

    def __init__(self, kind: str, in_features: int, device: torch.device | str = "cpu"):
        self.kind = kind
        self.n = 0
        shape = (in_features, in_features) if kind in (GRAM, DENSE_GRAM) else (in_features,)
        self.value = torch.zeros(shape, dtype=torch.float32, device=device)

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of sequences [B, L, in] (or [L, in]), one sequence at a time."""
        x = x.reshape(-1, x.shape[-2], x.shape[-1]) if x.dim() > 2 else x.unsqueeze(0)
        for seq in x:
            self.n += 1
            self.value *= (self.n - 1) / self.n
            seq = seq.float()
            if self.kind == COL_SQ:
                self.value += torch.norm(seq, p=2, dim=0) ** 2 / self.n
            else:
                seq = math.sqrt(2 / self.n) * seq
                self.value += seq.t() @ seq
