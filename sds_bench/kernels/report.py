"""The 2:4 benchmark's outputs per GPU: CSV (one row per measurement), Markdown tables, a speedup plot, the protocol."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any

from tabulate import tabulate

from sds_bench.record import write_atomic, write_json_atomic

ENV_COLUMNS = ("gpu", "driver", "torch", "cuda", "cusparselt")
KERNEL_COLUMNS = ("gpu", "dtype", "shape", "out_features", "in_features", "models", "tokens", "backend", "alg_id",
                  "timing", "weight_copies", "dense_ms", "dense_iqr_ms", "sparse_ms", "sparse_iqr_ms", "speedup",
                  "dense_tflops", "sparse_tflops", "dense_peak_frac", "sparse_peak_frac", "max_abs_err", "status",
                  "driver", "torch", "cuda", "cusparselt")
E2E_COLUMNS = ("gpu", "model", "dtype", "phase", "batch", "seq", "new_tokens", "backend", "dense_ms", "dense_iqr_ms",
               "sparse_ms", "sparse_iqr_ms", "speedup", "dense_tokens_per_s", "sparse_tokens_per_s", "max_rel_err",
               "status", "driver", "torch", "cuda", "cusparselt")


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': the results folder of one GPU."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Rows as CSV with a fixed column order; missing values are empty cells."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if row.get(k) is None else row[k] for k in columns} for row in rows)
    return out.getvalue()


def header(meta: dict[str, Any], title: str, method: str) -> str:
    """Markdown heading naming the GPU, driver, torch, CUDA and cuSPARSELt versions and how the times were taken."""
    gpu = meta["gpu"]
    peak = f"{gpu['peak_tflops']:g} TFLOP/s" if gpu.get("peak_tflops") else "unknown (give --peak-tflops)"
    return "\n".join([
        f"# {title} on {gpu['gpu']}", "",
        f"- GPU: {gpu['gpu']} (compute capability {gpu['capability']}), driver {gpu['driver'] or 'unknown'}",
        f"- torch {gpu['torch']}, CUDA {gpu['cuda']}, cuSPARSELt {gpu['cusparselt'] or 'not available'}",
        f"- dense fp16/bf16 tensor-core peak: {peak}", f"- {method}", "", ""])


def kernels_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The kernel table: dense against sparse time, speedup, throughput and fraction of the dense peak."""
    protocol = meta["protocol"]
    how = ("CUDA graph replays of back-to-back calls" if protocol["timing"] == "graph"
           else "eager back-to-back calls (Python dispatch included)")
    method = (f"{how} between CUDA events, {protocol['warmup']} warm-up and {protocol['reps']} timed repetitions, "
              "median ± half the interquartile range; the calls cycle through copies of the weight larger than the "
              "L2 cache; TFLOP/s count the dense work 2·tokens·out·in for both kernels")
    table = [(r["dtype"], r["shape"], r["models"], r["tokens"], r["backend"], _ms(r, "dense"), _ms(r, "sparse"),
              _num(r.get("speedup"), ".2f"), _num(r.get("dense_tflops"), ".1f"), _num(r.get("sparse_tflops"), ".1f"),
              _num(r.get("dense_peak_frac"), ".0%"), _num(r.get("sparse_peak_frac"), ".0%"), r["status"])
             for r in rows]
    headers = ("dtype", "shape (out×in)", "models", "tokens", "backend", "dense ms", "sparse ms", "speedup",
               "dense TFLOP/s", "sparse TFLOP/s", "dense % peak", "sparse % peak", "status")
    return header(meta, "2:4 sparse Linear kernels", method) + tabulate(table, headers, tablefmt="github", disable_numparse=True) + "\n"


def e2e_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The end-to-end table: a pruned model's prefill and decode with dense against sparse block Linears."""
    e2e = meta["protocol"]["e2e"]
    method = (f"eager forward passes between CUDA events, {e2e['reps']} timed repetitions, median ± half the "
              f"interquartile range; decode: ms per token over {e2e['new_tokens']} steps after a {e2e['context']}-token "
              "context; only decoder-block Linears are sparse (the LM head stays dense); cuSPARSELt runs its default "
              "algorithm")
    table = [(r["model"], r["dtype"], r.get("phase", ""), r.get("batch", ""), r.get("seq", ""), r["backend"],
              _ms(r, "dense"), _ms(r, "sparse"), _num(r.get("speedup"), ".2f"),
              _num(r.get("dense_tokens_per_s"), ".0f"), _num(r.get("sparse_tokens_per_s"), ".0f"), r["status"])
             for r in rows]
    headers = ("model", "dtype", "phase", "batch", "seq", "backend", "dense ms", "sparse ms", "speedup",
               "dense tok/s", "sparse tok/s", "status")
    return header(meta, "2:4 sparse model forward", method) + tabulate(table, headers, tablefmt="github", disable_numparse=True) + "\n"


def plot_speedup(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Speedup against token count, one panel per shape, one line per backend and dtype; False if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    shapes = list(dict.fromkeys(r["shape"] for r in ok))
    if not shapes:
        return False
    cols = min(3, len(shapes))
    rows_n = math.ceil(len(shapes) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False, sharey=True)
    for ax, shape in zip(axes.flat, shapes):
        mine = [r for r in ok if r["shape"] == shape]
        for series in dict.fromkeys((r["backend"], r["dtype"]) for r in mine):
            points = sorted((r["tokens"], r["speedup"]) for r in mine if (r["backend"], r["dtype"]) == series)
            ax.plot(*zip(*points), marker="o", label=" ".join(series))
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ticks = sorted({r["tokens"] for r in mine})
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_title(f"{shape} ({mine[0]['models']})" if mine[0]["models"] else shape, fontsize=9)
        ax.set_xlabel("tokens")
        ax.set_ylabel("speedup over dense")
    for ax in axes.flat[len(shapes):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return True


def write_results(out_dir: str | Path, meta: dict[str, Any], kernels: list[dict[str, Any]],
                  e2e: list[dict[str, Any]]) -> dict[str, Path]:
    """Write everything under out_dir/<gpu>/ and return the paths by kind."""
    folder = Path(out_dir) / gpu_slug(meta["gpu"]["gpu"])
    env = {k: meta["gpu"].get(k) for k in ENV_COLUMNS}
    outputs = {"kernels.csv": lambda p: p.write_text(csv_text([{**r, **env} for r in kernels], KERNEL_COLUMNS)),
               "kernels.md": lambda p: p.write_text(kernels_markdown(kernels, meta))}
    if e2e:
        outputs["e2e.csv"] = lambda p: p.write_text(csv_text([{**r, **env} for r in e2e], E2E_COLUMNS))
        outputs["e2e.md"] = lambda p: p.write_text(e2e_markdown(e2e, meta))
    paths = {}
    for name, write in outputs.items():
        write_atomic(folder / name, write)
        paths[name] = folder / name
    if plot_speedup(kernels, folder / "speedup.png", f"2:4 speedup over dense F.linear, {meta['gpu']['gpu']}"):
        paths["speedup.png"] = folder / "speedup.png"
    write_json_atomic(folder / "protocol.json", meta)
    paths["protocol.json"] = folder / "protocol.json"
    return paths


def _ms(row: dict[str, Any], kind: str) -> str:
    ms, iqr = row.get(f"{kind}_ms"), row.get(f"{kind}_iqr_ms")
    return "" if ms is None else f"{ms:.4g} ± {iqr / 2:.2g}"


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)
