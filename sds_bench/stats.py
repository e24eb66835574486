"""Statistics of a Linear layer's calibration inputs that a pruner may ask for, and their accumulator.

Each is accumulated one calibration sequence at a time as a running mean, in the exact order the reference
SparseGPT, Wanda and DSnoT code use, so that results match theirs bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sds_bench.hookspecs import hookimpl
from sds_bench.plugin import Statistic

GRAM = "gram"
"""H = (2/N) * sum over tokens of x x^T (in_features x in_features, fp32), N counting sequences (SparseGPT).
Hence for any W' the output error ||W' X||^2 = (N/2) tr(W' H W'^T), with gradient N W' H: losses on X need only H."""
COL_SQ = "col_sq"
"""s = (1/N) * sum over tokens of x_j^2 per input column (fp32), N counting sequences (Wanda's ||X_j||^2 / N)."""
COL_SUM = "col_sum"
"""(1/N) * sum over tokens of x_j per input column, N counting sequences (DSnoT's sum_metric_row): the column mean
times the tokens per sequence, in COL_SQ's scale."""
COL_VAR = "col_var"
"""Per input column, the variance over each sequence's tokens (population), averaged over sequences (DSnoT's var:
within-sequence variance, not the pooled one; calibration sequences share one length, which the running form uses)."""
DENSE_GRAM = "dense_gram"
"""GRAM of the inputs the same layer sees in the dense model (the engine runs a dense stream beside the pruned one)."""


def _square(in_features: int, device) -> torch.Tensor:
    return torch.zeros((in_features, in_features), dtype=torch.float32, device=device)


def _vector(in_features: int, device) -> torch.Tensor:
    return torch.zeros((in_features,), dtype=torch.float32, device=device)


def _add_gram(H: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    H *= (n - 1) / n
    x = math.sqrt(2 / n) * x
    return H.add_(x.t() @ x)


def _add_col_sq(s: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    s *= (n - 1) / n
    return s.add_(torch.norm(x, p=2, dim=0) ** 2 / n)


def _add_col_sum(s: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    s *= (n - 1) / n
    return s.add_(torch.sum(x, dim=0) / n)


def _add_col_var(v: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    var, tokens = torch.var(x, dim=0, unbiased=False), x.shape[0]
    return var if n == 1 else (v * ((n - 1) * tokens) + var * tokens) / (n * tokens)


BUILTIN = {s.name: s for s in (
    Statistic(GRAM, "Gram of the inputs, 2/N sum x x^T (SparseGPT's H)", _square, _add_gram),
    Statistic(COL_SQ, "squared norm of each input column over N (Wanda's ||X_j||^2)", _vector, _add_col_sq),
    Statistic(COL_SUM, "sum of each input column over N (DSnoT's mean term)", _vector, _add_col_sum),
    Statistic(COL_VAR, "within-sequence variance of each input column (DSnoT's)", _vector, _add_col_var),
    Statistic(DENSE_GRAM, "Gram of the inputs the dense model gives the same Linear", _square, _add_gram, dense=True),
)}
"""The built-in statistics, registered like a plugin's; each accumulates in the reference code's exact order."""


@hookimpl
def register_statistics(register):
    for statistic in BUILTIN.values():
        register(statistic)


def damp_in_place(H: torch.Tensor, W: torch.Tensor, damp: float) -> None:
    """H + damp * mean(diag H) * I, dead inputs (zero diagonal) first given diagonal 1 and a zero weight column in W
    (SparseGPT's conditioning, shared by Týr's local pruning)."""
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))


FIELDS = (GRAM, COL_SQ, DENSE_GRAM)
"""The built-in statistics that are also fields of LayerStats (the plugin API's first form, kept)."""


@dataclass
class LayerStats:
    """What a pruner receives besides the weight: the statistics it asked for, and a dict to report diagnostics.
    Every statistic is `stats[name]`; the built-in Gram, column norms and dense Gram are also fields, filled from
    `values` (or into it) on construction, and a field set later is what `stats[name]` reads."""

    name: str
    nsamples: int = 0
    gram: torch.Tensor | None = None
    col_sq: torch.Tensor | None = None
    dense_gram: torch.Tensor | None = None
    model_params: int = 0
    """Parameter count of the whole model (SDS skips weight adjustment from about 3B on, as the paper does)."""
    record: dict = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    """Every statistic gathered, by name."""

    def __post_init__(self) -> None:
        self.values = dict(self.values)
        for name in FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, self.values.get(name))
            else:
                self.values[name] = getattr(self, name)

    def __getitem__(self, name: str) -> torch.Tensor:
        value = getattr(self, name) if name in FIELDS else self.values.get(name)
        if value is None:
            raise KeyError(f"statistic {name!r} was not gathered for {self.name}: name it in the pruner's needs")
        return value


class Accumulator:
    """Running accumulation of one statistic over calibration sequences fed one at a time."""

    def __init__(self, statistic: Statistic, in_features: int, device: torch.device | str = "cpu"):
        self.statistic = statistic
        self.n = 0
        self.value = statistic.start(in_features, device)

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of sequences [B, L, in] (or [L, in]), one sequence at a time."""
        x = x.reshape(-1, x.shape[-2], x.shape[-1]) if x.dim() > 2 else x.unsqueeze(0)
        for seq in x:
            self.n += 1
            self.value = self.statistic.add(self.value, seq.float(), self.n)
