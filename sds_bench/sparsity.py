"""The target sparsity pattern (50% unstructured, 2:4, 4:8, any N:M) and the masks that realise it."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from sds_bench.errors import UserError

ACCEPTED = "a fraction in [0, 1) such as 0.5, a percentage such as 50%, 'unstructured:0.5', or N:M with 0 < N < M such as 2:4"


class SparsityError(UserError, ValueError):
    """A sparsity spec that is not one of the accepted forms."""


@dataclass(frozen=True)
class Sparsity:
    """Fraction of weights to prune, either unstructured or as N pruned in every M consecutive inputs (SparseGPT's and
    Wanda's N:M; NVIDIA's "2:4" counts the non-zeros kept, which agrees only for N = M/2)."""

    ratio: float
    n: int = 0
    m: int = 0

    @property
    def is_nm(self) -> bool:
        return self.m > 0

    @property
    def kind(self) -> str:
        """'nm' or 'unstructured': the pattern family a pruner declares in `Pruner.patterns`."""
        return "nm" if self.is_nm else "unstructured"

    @classmethod
    def parse(cls, spec: str | float | Sparsity) -> Sparsity:
        """Parse '0.5', '50%', 'unstructured:0.5', '2:4' (N:M), rejecting anything else with a clear message."""
        if isinstance(spec, Sparsity):
            return spec
        text = str(spec).strip().lower()
        if (nm := re.fullmatch(r"(\d+):(\d+)", text)) is not None:
            n, m = int(nm[1]), int(nm[2])
            if not 0 < n < m:
                raise SparsityError(f"bad sparsity {spec!r}: N:M needs 0 < N < M; accepted: {ACCEPTED}")
            return cls(n / m, n, m)
        text = text.removeprefix("unstructured:")
        try:
            ratio = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise SparsityError(f"bad sparsity {spec!r}; accepted: {ACCEPTED}") from None
        if not 0 <= ratio < 1:
            raise SparsityError(f"bad sparsity {spec!r}: the fraction must be in [0, 1); accepted: {ACCEPTED}")
        return cls(ratio)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.is_nm else f"{self.ratio:g}"

    @property
    def slug(self) -> str:
        """File-name friendly form: '2of4', 'unstructured50'."""
        return f"{self.n}of{self.m}" if self.is_nm else f"unstructured{round(self.ratio * 100):g}"

    def check(self, weight: torch.Tensor) -> None:
        """Raise if an N:M pattern does not tile the weight's input columns."""
        if self.is_nm and weight.shape[1] % self.m:
            raise SparsityError(f"{self} needs the input width {weight.shape[1]} to be a multiple of {self.m}")


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Pruning mask (True = prune) with the n lowest scores of every aligned group of m columns in each row."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    idx = torch.topk(groups, n, dim=-1, largest=False)[1]
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True).reshape(rows, cols)


def threshold_mask(score: torch.Tensor, ratio: float) -> torch.Tensor:
    """Reference-code threshold: prune score <= sorted(score)[int(numel*ratio)], i.e. int(numel*ratio)+1 entries plus ties."""
    if ratio == 0:
        return torch.zeros_like(score, dtype=torch.bool)
    flat = score.flatten()
    thresh = torch.sort(flat)[0][int(flat.numel() * ratio)]
    return score <= thresh


def count_mask(score: torch.Tensor, ratio: float, dim: int | None = None) -> torch.Tensor:
    """Prune exactly int(size*ratio) lowest scores, per row along `dim` or over the whole tensor (stable sort)."""
    if dim is None:
        flat = score.flatten()
        k = int(flat.numel() * ratio)
        idx = torch.sort(flat, stable=True)[1][:k]
        return torch.zeros_like(flat, dtype=torch.bool).scatter_(0, idx, True).reshape(score.shape)
    k = int(score.shape[dim] * ratio)
    idx = torch.sort(score, dim=dim, stable=True)[1].narrow(dim, 0, k)
    return torch.zeros_like(score, dtype=torch.bool).scatter_(dim, idx, True)


def pattern_mask(score: torch.Tensor, sparsity: Sparsity, exact: bool = False) -> torch.Tensor:
    """Mask of one matrix by its scores: N:M per group, else one threshold per matrix (reference) or an exact count."""
    if sparsity.is_nm:
        return nm_mask(score, sparsity.n, sparsity.m)
    return count_mask(score, sparsity.ratio) if exact else threshold_mask(score, sparsity.ratio)


def satisfies(weight: torch.Tensor, sparsity: Sparsity) -> bool:
    """True when every N:M group has at least N zeros, or the unstructured fraction of zeros is reached."""
    zeros = weight == 0
    if sparsity.is_nm:
        rows, cols = weight.shape
        return bool((zeros.reshape(rows, cols // sparsity.m, sparsity.m).sum(-1) >= sparsity.n).all())
    return int(zeros.sum()) >= int(weight.numel() * sparsity.ratio)
