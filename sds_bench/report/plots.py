"""Plots of a suite's results (matplotlib, Agg canvas, PNG): a metric by method and sparsity pattern, per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sds_bench.record import write_atomic
from sds_bench.runner.cells import DENSE, model_label


def metric_plot(long: pd.DataFrame, metric: str, models: list[str], methods: list[str], patterns: list[str],
                path: str | Path) -> Path:
    """A dot per (method, pattern), methods side by side within each pattern, the dense value as a dashed line, a
    panel per model; a log axis when the values span more than a factor of 5 (2:4 perplexities can), else an axis
    fitted to the values so that differences of a few percent stay visible."""
    models = [m for m in models if m in set(long["model"])]
    fig = Figure(figsize=(1.2 + 4.6 * len(models), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    pruned = [m for m in methods if m != DENSE and m in set(long["method"])]
    x, width = np.arange(len(patterns)), 0.6 / max(len(pruned), 1)
    for ax, model in zip(axes, models):
        values = long[long["model"] == model].set_index(["method", "pattern"])["value"]
        for i, method in enumerate(pruned):
            heights = [values.get((method, p), np.nan) for p in patterns]
            ax.plot(x - 0.3 + width * (i + 0.5), heights, marker="o", linestyle="none", label=method)
        if (DENSE, DENSE) in values.index:
            ax.axhline(values[(DENSE, DENSE)], color="black", linestyle="--", linewidth=1, label=DENSE)
        finite = values[np.isfinite(values) & (values > 0)]
        if len(finite) and finite.max() > 5 * finite.min():
            ax.set_yscale("log")
        ax.set_xticks(x, patterns)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(model_label(model))
        ax.set_xlabel("sparsity pattern")
        ax.set_ylabel(metric)
    axes[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return Path(path)
