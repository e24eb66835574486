"""The paper's tables from a suite's rows, as Markdown and CSV beside the rows in ``<results>/<suite>/``.

``perplexity``: per model, rows method, columns sparsity pattern (the layout of the SDS paper's main table; the
dense row repeats its value in every column); ``sds_deltas``: SDS-P minus P for every pair ``sds-P`` / ``P`` of
the suite's methods; ``sparsity``: measured sparsity; ``metrics``: every metric of every cell as a column
(zero-shot per task and average, ...). Where ``baselines/`` has the published number of a cell, the paper's value
and our difference (ours minus paper) stand beside ours.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sds_bench.errors import UserError
from sds_bench.report.plots import metric_plot
from sds_bench.runner.cells import DENSE, expand, pattern_label
from sds_bench.runner.store import FAILED, OK, Store
from sds_bench.runner.suite import Suite

BASELINES_DIR = Path(__file__).resolve().parents[2] / "baselines"
"""The repository's published numbers (absent from an installed wheel: pass --baselines there)."""
SDS_PREFIX = "sds-"
KEYS = ["model", "method", "pattern", "metric"]


def long_results(suite: Suite, results: str | Path) -> tuple[pd.DataFrame, list[dict]]:
    """One line per (cell of the suite's grid with a successful row, metric), and the cells whose row failed.

    A metric name that two evaluators of the suite both produce is qualified by the evaluator's label."""
    latest = Store(Path(results) / suite.name).latest()
    lines, failed = [], []
    for cell in expand(suite):
        row = latest.get(cell.key)
        if row is None:
            continue
        if row["status"] == FAILED:
            failed.append({"cell": cell.name, "error": row["error"], "finished": row["finished"]})
        for metric, value in row["metrics"].items() if row["status"] == OK else ():
            lines.append({"model": cell.model, "method": cell.method, "pattern": cell.pattern, "metric": metric,
                          "evaluator": cell.evaluator, "value": value, "measured_sparsity": row["measured_sparsity"]})
    long = pd.DataFrame(lines, columns=[*KEYS, "evaluator", "value", "measured_sparsity"])
    shared = long.groupby("metric")["evaluator"].nunique()
    qualify = long["metric"].isin(shared[shared > 1].index)
    long.loc[qualify, "metric"] = long["evaluator"] + "/" + long["metric"]
    return long, failed


def load_baselines(directory: str | Path | None) -> pd.DataFrame:
    """Published numbers from every CSV in `directory` (model, method, sparsity, metric, value, unit, source, ...),
    with the sparsity as a table column label and percentages as fractions (the unit our evaluators report)."""
    columns = [*KEYS, "paper", "source"]
    files = sorted(Path(directory).glob("*.csv")) if directory and Path(directory).is_dir() else []
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "paper" else object) for c in columns})
    frame = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files])
    try:
        frame["pattern"] = [DENSE if s == DENSE else pattern_label(s) for s in frame["sparsity"]]
        frame["paper"] = frame["value"].astype(float) / frame["unit"].map({"%": 100.0}).fillna(1.0)
        frame["source"] = (frame["source"] + " (" + frame["version"] + "), " + frame["location"]
                           + frame["secondary"].map(lambda s: "" if s in ("", "no") else f"; secondary: {s}"))
    except (KeyError, ValueError, UserError) as e:
        raise UserError(f"baselines in {directory}: bad or missing column: {e}") from None
    return frame.drop_duplicates(KEYS)[columns]


def with_paper(long: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """Each result with the paper's value for the same (model, method, pattern, metric) and ours minus paper."""
    out = long.merge(baselines, on=KEYS, how="left")
    return out.assign(diff=out["value"] - out["paper"])


def sds_deltas(long: pd.DataFrame) -> pd.DataFrame:
    """SDS-P minus P per model, pattern and metric (and the same difference of the paper's values)."""
    sds = long[long["method"].str.startswith(SDS_PREFIX)]
    sds = sds.assign(base=sds["method"].str.removeprefix(SDS_PREFIX))
    pairs = sds.merge(long, left_on=["model", "base", "pattern", "metric"], right_on=["model", "method", "pattern", "metric"],
                      suffixes=("", "_base"))
    value, paper = pairs["value"] - pairs["value_base"], pairs["paper"] - pairs["paper_base"]
    return pd.DataFrame({"model": pairs["model"], "method": pairs["method"] + " − " + pairs["base"],
                         "pattern": pairs["pattern"], "metric": pairs["metric"], "value": value, "paper": paper,
                         "diff": value - paper})


def layout(long: pd.DataFrame, models: list[str], methods: list[str], patterns: list[str]) -> pd.DataFrame:
    """Rows (model, method), one column per pattern, with 'P paper' and 'P Δ' beside it where the paper has P."""
    if long.empty:
        return pd.DataFrame(columns=["model", "method"])
    dense = long[long["pattern"] == DENSE]
    long = pd.concat([long[long["pattern"] != DENSE], *(dense.assign(pattern=p) for p in patterns)])
    fields = ["value"] + (["paper", "diff"] if "paper" in long and long["paper"].notna().any() else [])
    wide = long.pivot_table(index=["model", "method"], columns="pattern", values=fields, aggfunc="first", dropna=False)
    present = set(zip(long["model"], long["method"]))
    rows = [(m, x) for m in models for x in methods if (m, x) in present]
    cols = [(f, p) for p in patterns for f in fields if (f, p) in wide.columns and wide[(f, p)].notna().any()]
    table = wide.reindex(index=pd.MultiIndex.from_tuples(rows, names=["model", "method"]), columns=cols)
    table.columns = [p if f == "value" else f"{p} {'paper' if f == 'paper' else 'Δ'}" for f, p in cols]
    return table.reset_index()


def metrics_table(long: pd.DataFrame, models: list[str], methods: list[str], patterns: list[str]) -> pd.DataFrame:
    """Rows (model, method, pattern), a column per metric (with paper and Δ where published) and measured sparsity."""
    if long.empty:
        return pd.DataFrame(columns=["model", "method", "pattern"])
    fields = ["value"] + (["paper", "diff"] if long["paper"].notna().any() else [])
    wide = long.pivot_table(index=["model", "method", "pattern"], columns="metric", values=fields, aggfunc="first",
                            dropna=False)
    metrics = sorted(long["metric"].unique(), key=lambda m: (not m.startswith("ppl"), m))
    cols = [(f, m) for m in metrics for f in fields if (f, m) in wide.columns and wide[(f, m)].notna().any()]
    present = set(zip(long["model"], long["method"], long["pattern"]))
    rows = [(m, x, p) for m in models for x in methods for p in [DENSE, *patterns] if (m, x, p) in present]
    table = wide.reindex(index=pd.MultiIndex.from_tuples(rows, names=["model", "method", "pattern"]), columns=cols)
    table.columns = [m if f == "value" else f"{m} {'paper' if f == 'paper' else 'Δ'}" for f, m in cols]
    sparsity = long.drop_duplicates(["model", "method", "pattern"]).set_index(["model", "method", "pattern"])
    return table.assign(measured_sparsity=sparsity["measured_sparsity"].reindex(table.index)).reset_index()


def write_report(suite: Suite, results: str | Path, baselines: str | Path | None = BASELINES_DIR) -> list[Path]:
    """Write report.md, perplexity.csv, sds_deltas.csv, sparsity.csv, metrics.csv and one plot per perplexity."""
    out = Path(results) / suite.name
    long, failed = long_results(suite, results)
    if long.empty and not failed:
        raise UserError(f"no results for suite {suite.name!r} in {out}; run `sds-bench run {suite.name}` first")
    long = with_paper(long, load_baselines(baselines))
    tables = build_tables(suite, long)
    written = []
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        written.append(out / f"{name}.csv")
    models, methods, patterns = _axes(suite)
    for metric in perplexity_metrics(long):
        written.append(metric_plot(long[long["metric"] == metric], metric, models, methods, patterns,
                                   out / f"{metric.replace('/', '_')}.png"))
    (out / "report.md").write_text(_markdown(suite, tables, long, failed))
    return [out / "report.md", *written]


def build_tables(suite: Suite, long: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The report's tables by file name, from the results with the paper's values attached."""
    models, methods, patterns = _axes(suite)
    deltas = sds_deltas(long)
    cells = long.drop_duplicates(["model", "method", "pattern"])
    pruned = cells[cells["method"] != DENSE].drop(columns="paper").assign(value=lambda d: d["measured_sparsity"])
    return {
        "perplexity": _stack(long, perplexity_metrics(long), models, methods, patterns),
        "sds_deltas": _stack(deltas, list(dict.fromkeys(deltas["metric"])), models,
                             list(dict.fromkeys(deltas["method"])), patterns),
        "sparsity": layout(pruned, models, methods, patterns),
        "metrics": metrics_table(long, models, methods, patterns),
    }


def perplexity_metrics(long: pd.DataFrame) -> list[str]:
    """The perplexity metrics among the results (ppl_wikitext2, ppl_embedded, ...), in order of appearance."""
    return [m for m in dict.fromkeys(long["metric"]) if m.split("/")[-1].startswith("ppl")]


def _stack(long: pd.DataFrame, metrics: list[str], models: list[str], methods: list[str],
           patterns: list[str]) -> pd.DataFrame:
    """One `layout` per metric, stacked with a metric column."""
    parts = [layout(long[long["metric"] == m], models, methods, patterns).assign(metric=m) for m in metrics]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["model", "method", "metric"])


def _axes(suite: Suite) -> tuple[list[str], list[str], list[str]]:
    """Models, methods (dense first) and pattern labels in suite order."""
    return (list(suite.models), [DENSE, *(m.name for m in suite.methods)],
            [pattern_label(s) for s in suite.sparsities])


def _markdown(suite: Suite, tables: dict[str, pd.DataFrame], long: pd.DataFrame, failed: list[dict]) -> str:
    cal, run = suite.calibration, suite.run
    done = long.drop_duplicates(["model", "method", "pattern", "evaluator"]).shape[0]
    lines = [f"# Suite `{suite.name}`", "", suite.description, "",
             f"{len(expand(suite))} cells: {done} with results, {len(failed)} failed. "
             f"Calibration: {cal.source}, {cal.nsamples} x {cal.seqlen or 'model context'} tokens, seed {cal.seed}. "
             f"Evaluators: {', '.join(f'{e.name} {e.options}' for e in suite.evaluators)}. "
             f"Device {run.device}, dtype {run.dtype}.", ""]
    for metric, part in tables["perplexity"].groupby("metric", sort=False):
        lines += [f"## {metric} (lower is better)", ""] + _per_model(part.drop(columns="metric"), ".2f")
    perplexities = set(perplexity_metrics(long))
    for metric in dict.fromkeys(long["metric"]):
        if _headline(metric) and metric not in perplexities:  # zero-shot averages
            part = layout(long[long["metric"] == metric], *_axes(suite))
            lines += [f"## {metric} (higher is better)", ""] + _per_model(part, ".4f")
    if not tables["sds_deltas"].empty:
        lines += ["## SDS-P minus P (for perplexity, negative means SDS is better)", ""]
        for metric, part in tables["sds_deltas"].groupby("metric", sort=False):
            if not _headline(metric):  # per-task deltas: in sds_deltas.csv
                continue
            lines += [f"### {metric}", ""] + _per_model(part.drop(columns="metric"), ".2f" if "ppl" in metric else ".4f",
                                                        "####")
    for title, name, fmt in (("Measured sparsity of the decoder Linears", "sparsity", ".4f"),
                             ("All metrics", "metrics", None)):
        if not tables[name].empty:
            lines += [f"## {title}", "", _md(tables[name], fmt), ""]
    sources = sorted(set(long["source"].dropna()))
    if sources:
        lines += ["## Published numbers", "", *(f"- {s}" for s in sources), ""]
    if failed:
        lines += ["## Failed cells", "", _md(pd.DataFrame(failed), None), ""]
    return "\n".join(lines)


def _headline(metric: str) -> bool:
    """Perplexities and averages: the metrics whose SDS deltas the Markdown shows."""
    name = metric.split("/")[-1]
    return name.startswith("ppl") or name.endswith("avg")


def _per_model(table: pd.DataFrame, fmt: str, heading: str = "###") -> list[str]:
    lines = []
    for model, part in table.groupby("model", sort=False):
        lines += [f"{heading} {model}", "", _md(part.drop(columns="model").dropna(axis=1, how="all"), fmt), ""]
    return lines


def _md(table: pd.DataFrame, fmt: str | None) -> str:
    """Markdown with blanks for missing values; perplexity with 2 decimals, fractions with 4."""
    formats = [fmt or (".2f" if "ppl" in str(c) else ".4f") for c in table.columns]
    return table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=formats, missingval="")
