"""Plots of a suite's results (matplotlib, Agg canvas, PNG): a metric's mean by method and sparsity pattern, per
model, with its spread over seeds (or lm-eval's standard error) as error bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sds_bench.record import write_atomic
from sds_bench.runner.cells import DENSE, model_label


def metric_plot(summary: pd.DataFrame, metric: str, models: list[str], methods: list[str], patterns: list[str],
                path: str | Path) -> Path:
    """A dot per (method, pattern) at the mean over seeds ('value') with a bar of ± its standard deviation ('std'),
    or where there is one seed, ± lm-eval's standard error ('stderr') where known; methods side by side within each
    pattern, the dense value as a dashed line, a panel per model; a log axis when the values span more than a
    factor of 5 (2:4 perplexities can), else an axis fitted to the values so that differences of a few percent stay
    visible."""
    long = summary.assign(err=summary["std"].fillna(summary["stderr"]).fillna(0.0))
    kinds = [kind for kind, present in (("std over seeds", summary["std"].notna().any()),
                                        ("lm-eval stderr", (summary["std"].isna() & summary["stderr"].notna()).any()))
             if present]
    bars = f"(± {' or '.join(kinds)})" if kinds else ""
    models = [m for m in models if m in set(long["model"])]
    fig = Figure(figsize=(1.2 + 4.6 * len(models), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    pruned = [m for m in methods if m != DENSE and m in set(long["method"])]
    x, width = np.arange(len(patterns)), 0.6 / max(len(pruned), 1)
    for ax, model in zip(axes, models):
        here = long[long["model"] == model].set_index(["method", "pattern"])
        values = here["value"]
        for i, method in enumerate(pruned):
            heights = [values.get((method, p), np.nan) for p in patterns]
            errors = [here["err"].get((method, p), 0.0) for p in patterns]
            ax.errorbar(x - 0.3 + width * (i + 0.5), heights, yerr=errors, marker="o", linestyle="none", capsize=3,
                        label=method)
        if (DENSE, DENSE) in values.index:
            ax.axhline(values[(DENSE, DENSE)], color="black", linestyle="--", linewidth=1, label=DENSE)
        finite = values[np.isfinite(values) & (values > 0)]
        if len(finite) and finite.max() > 5 * finite.min():
            ax.set_yscale("log")
        ax.set_xticks(x, patterns)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(model_label(model))
        ax.set_xlabel("sparsity pattern")
        ax.set_ylabel(f"{metric} {bars}".strip())
    axes[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return Path(path)
