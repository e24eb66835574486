"""SDS weight histograms of a pruning run (the paper's Figure 1): dense, first prune, re-dense and final weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sds_bench import files
from sds_bench.errors import UserError
from sds_bench.record import write_atomic

LABELS = {"dense": "dense", "initial_prune": "first prune", "redense": "re-dense", "final": "final"}


def layer_histograms(run_dir: str | Path) -> dict[str, dict]:
    """The recorded histograms of a run's pruning.json, by layer name."""
    path = Path(run_dir) / "pruning.json"
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist: give the directory a prune run wrote")
    record = files.read_json(path, "pruning record")
    layers = record.get("layers") if isinstance(record, dict) else None
    if not isinstance(layers, dict) or not all(isinstance(layer, dict) for layer in layers.values()):
        raise UserError(f"{str(path)!r} is not a pruning record: it needs an object 'layers' of per-layer objects")
    found = {name: layer["sds_histograms"] for name, layer in layers.items() if "sds_histograms" in layer}
    for name, hist in found.items():
        if not isinstance(hist, dict) or not {"range", "bins", "stages"} <= hist.keys():
            raise UserError(f"{str(path)!r}: the weight histograms of layer {name!r} are malformed")
    if not found:
        raise UserError(f"{str(path)!r} holds no weight histograms: prune with an SDS method, whose option "
                        "histograms=GLOB chooses the layers (default: block 0)")
    return found


def plot_weights(run_dir: str | Path, output: str | Path | None = None, columns: int = 3) -> Path:
    """A panel per layer, each stage's nonzero weights as a step histogram on a log count axis, zeros in the legend."""
    layers = layer_histograms(run_dir)
    rows, columns = math.ceil(len(layers) / columns), min(columns, len(layers))
    fig = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax, (name, hist) in zip(axes, layers.items()):
        edges = np.linspace(*hist["range"], hist["bins"] + 1)
        for stage, h in hist["stages"].items():
            zeros = h["zeros"] / h["numel"]
            ax.stairs(np.maximum(h["counts"], 0.5), edges, baseline=0.5,
                      label=f"{LABELS.get(stage, stage)} ({zeros:.0%} zero)")
        ax.set_yscale("log")
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("weight")
        ax.set_ylabel("nonzero weights")
        ax.legend(fontsize="x-small")
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    output = Path(output) if output else Path(run_dir) / "weights.png"
    write_atomic(output, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return output
