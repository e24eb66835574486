"""The report's statistics: mean ± standard deviation over calibration seeds, the paired difference of two methods
over the same seeds with its 95% Student-t interval, and whether a published value is reproduced within a tolerance.

A difference measured on one seed has no spread over seeds; where the evaluator gives a standard error (lm-eval's,
for zero-shot accuracy) its interval is the normal one from the two standard errors, taken as independent (an upper
bound for two models scored on the same items).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from sds_bench.runner.cells import model_label

LEVEL = 0.95
SEEDS, STDERR = "seeds", "lm-eval stderr"
"""What an interval rests on: the spread of the paired difference over seeds, or the evaluator's standard errors."""
EXACT = 1e-9
"""Slack of the tolerance test, so that a difference of exactly the tolerance counts as within it despite rounding."""


@dataclass(frozen=True)
class Interval:
    """A mean difference with its two-sided interval (NaN bounds when there is none), over n seeds, and its basis."""

    mean: float
    low: float
    high: float
    n: int
    basis: str | None

    @property
    def significant(self) -> bool | None:
        """Whether the interval excludes 0; None when there is no interval."""
        return None if math.isnan(self.low) else bool(self.low > 0 or self.high < 0)


def spread(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (n - 1 in the denominator; NaN for one value) and n of `values`."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)


def paired_interval(a: Sequence[float], b: Sequence[float], stderr: float = math.nan, level: float = LEVEL) -> Interval:
    """Mean of a - b over paired draws (same seed at the same position) with its Student-t interval; for a single
    draw, the normal interval from `stderr` (the difference's standard error) where it is known."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean, sd, n = spread(d)
    if n > 1:
        half = stats.t.ppf((1 + level) / 2, n - 1) * sd / math.sqrt(n)
        return Interval(mean, mean - half, mean + half, n, SEEDS)
    if math.isfinite(stderr):
        half = stats.norm.ppf((1 + level) / 2) * stderr
        return Interval(mean, mean - half, mean + half, n, STDERR)
    return Interval(mean, math.nan, math.nan, n, None)


def difference_stderr(a: float, b: float) -> float:
    """Standard error of a difference of two independent estimates with standard errors `a` and `b`."""
    return math.sqrt(a**2 + b**2)


def reproduced(ours: float, paper: float, tolerance: float) -> bool | None:
    """Whether our value is within `tolerance` of the published one (ends included); None without a published one."""
    if paper is None or math.isnan(paper):
        return None
    return bool(abs(ours - paper) <= tolerance + EXACT)


def seed_summary(long: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of `keys`: mean, std and n of 'value' over its seeds, the mean 'stderr' and 'measured_sparsity'."""
    groups = long.groupby(keys, sort=False, dropna=False)
    spreads = groups["value"].agg(spread)
    summary = pd.DataFrame(spreads.tolist(), index=spreads.index, columns=["value", "std", "n"]).astype({"n": int})
    return summary.join(groups[["stderr", "measured_sparsity"]].mean()).reset_index()


def paired_differences(long: pd.DataFrame, pairs: list[tuple[str, str]], level: float = LEVEL) -> pd.DataFrame:
    """For each (method, base) pair and each model, pattern and metric both have: method minus base over the seeds
    both have, with its interval, n, basis, whether it is significant, and the difference's lm-eval stderr."""
    rows = []
    for method, base in pairs:
        both = long[long["method"] == method].merge(long[long["method"] == base],
                                                    on=["model", "pattern", "metric", "seed"], suffixes=("", "_base"))
        for (model, pattern, metric), g in both.groupby(["model", "pattern", "metric"], sort=False):
            se = difference_stderr(g["stderr"].mean(), g["stderr_base"].mean())
            iv = paired_interval(g["value"], g["value_base"], se, level)
            rows.append({"model": model, "method": method, "base": base, "pattern": pattern, "metric": metric,
                         "value": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "basis": iv.basis,
                         "significant": iv.significant, "stderr": se})
    columns = ["model", "method", "base", "pattern", "metric", "value", "low", "high", "n", "basis", "significant",
               "stderr"]
    return pd.DataFrame(rows, columns=columns)


def verdict_line(verdicts: pd.Series, tolerance: str) -> str:
    """'12 of 14 published values reproduced (within ±1 perplexity)'; '' when nothing is published."""
    known = verdicts.dropna()
    return f"{int(known.sum())} of {len(known)} published values reproduced (within {tolerance})" if len(known) else ""


def direction_line(deltas: pd.DataFrame, lower_is_better: bool) -> str:
    """One line over a metric's paired differences: how many are significant gains, which are significant losses
    (the refinement or allocation worse than its base), and how many are not significant."""
    significant = deltas[deltas["significant"].fillna(False).astype(bool)]
    worse = significant[(significant["value"] > 0) == lower_is_better]
    losses = ", ".join(f"{r.method.split(' − ')[0]} {r.pattern} ({model_label(r.model)})"
                       for r in worse.itertuples(index=False))
    return (f"{len(significant) - len(worse)} of {len(deltas)} differences are significant gains over the base, "
            f"{len(worse)} significant losses{': ' + losses if losses else ''}; "
            f"{len(deltas) - len(significant)} not significant.")
