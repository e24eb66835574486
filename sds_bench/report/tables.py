"""The paper's tables from a suite's rows, as Markdown and CSV beside the rows in ``<results>/<suite>/``.

Every number is the mean over the calibration seeds a cell was run at, with the standard deviation and n beside it
(and lm-eval's standard error for zero-shot metrics). ``perplexity``: per model, rows method, columns sparsity
pattern (the layout of the SDS paper's main table; the dense row repeats its value in every column);
``sds_deltas``: every refinement minus its base (``sds-P`` minus ``P``, an SDS wrapper minus the suite's method it
wraps) over the same seeds, with its 95% interval and whether it is significant; ``cost``: median prune seconds and
peak memory per method and their ratio to the base; ``sparsity``: measured sparsity; ``metrics``: every metric of
every cell as a column. Where ``baselines/`` has the published number of a cell, the paper's value, our difference
(ours minus paper) and whether it is reproduced within the suite's tolerance stand beside ours.
"""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd

from sds_bench.allocation import UNIFORM
from sds_bench.errors import UserError
from sds_bench.eval.zeroshot import PREFIX as ZEROSHOT
from sds_bench.plugin import parse_options
from sds_bench.registry import registry
from sds_bench.report.plots import metric_plot
from sds_bench.report.significance import (
    direction_line,
    paired_differences,
    reproduced,
    seed_summary,
    verdict_line,
)
from sds_bench.runner.cells import DENSE, expand, pattern_label
from sds_bench.runner.store import FAILED, Store
from sds_bench.runner.suite import MethodSpec, Suite, ToleranceSpec

BASELINES_DIR = Path(__file__).resolve().parents[2] / "baselines"
"""The repository's published numbers (absent from an installed wheel: pass --baselines there)."""
KEYS = ["model", "method", "pattern", "metric"]
SUFFIX = {"value": "", "std": "std", "n": "n", "stderr": "se", "paper": "paper", "diff": "Δ",
          "reproduced": "reproduced"}
"""The fields of a wide table's cell, each a column 'PATTERN SUFFIX' (the mean is the bare pattern)."""
MEMORY = {"prune_cuda_peak_allocated_mb": "CUDA allocated, load to end of prune",
          "prune_process_peak_rss_mb": "resident, load to end of prune",
          "process_peak_rss_mb": "resident, whole process so far"}
"""The peak-memory readings a row may hold, by preference: the cost table takes, per model, the first one that all
its pruned rows have (rows written before the prune readings existed have the last only)."""


def long_results(suite: Suite, results: str | Path) -> tuple[pd.DataFrame, list[dict]]:
    """One line per (cell of the suite's grid with a successful row, metric), with its seed, lm-eval stderr, prune
    seconds and peak memory, and the cells whose row failed.

    A metric name that two evaluators of the suite both produce is qualified by the evaluator's label."""
    latest = Store(Path(results) / suite.name).latest()
    lines, failed = [], []
    for cell in expand(suite):
        row = latest.get(cell.key)
        if row is None:
            continue
        if row["status"] == FAILED:
            failed.append({"cell": cell.name, "error": row["error"], "finished": row["finished"]})
            continue
        stderrs, memory = _stderrs(row["evaluation"]), row.get("memory") or {}
        for metric, value in row["metrics"].items():
            lines.append({"model": cell.model, "method": cell.method, "pattern": cell.pattern, "metric": metric,
                          "evaluator": cell.evaluator, "seed": cell.seed, "value": value,
                          "stderr": stderrs.get(metric, math.nan), "measured_sparsity": row["measured_sparsity"],
                          "prune_seconds": row["times"].get("prune", math.nan),
                          **{k: memory.get(k, math.nan) for k in MEMORY}})
    long = pd.DataFrame(lines, columns=[*KEYS, "evaluator", "seed", "value", "stderr", "measured_sparsity",
                                        "prune_seconds", *MEMORY])
    long["measured_sparsity"] = long["measured_sparsity"].astype(float)
    shared = long.groupby("metric")["evaluator"].nunique()
    qualify = long["metric"].isin(shared[shared > 1].index)
    long.loc[qualify, "metric"] = long["evaluator"] + "/" + long["metric"]
    return long, failed


def _stderrs(evaluation: dict) -> dict[str, float]:
    """lm-eval's standard error of each zero-shot metric of a row; the average's from its tasks', as independent."""
    protocol = evaluation.get("protocol") or {}
    tasks = protocol.get("tasks") if protocol.get("harness") == "lm-eval" else None
    if not isinstance(tasks, dict):
        return {}
    out = {f"{ZEROSHOT}:{task}:{metric}": m["stderr"] for task, record in tasks.items()
           for metric, m in record["metrics"].items() if isinstance(m.get("stderr"), (int, float))}
    averaged = [out.get(f"{ZEROSHOT}:{t}:{m}") for t, m in protocol["average"]["metric_per_task"].items()]
    if averaged and None not in averaged:
        out[f"{ZEROSHOT}:avg"] = math.sqrt(sum(se**2 for se in averaged)) / len(averaged)
    return out


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


def is_perplexity(metric: str) -> bool:
    """Perplexity metrics (ppl_wikitext2, perplexity/ppl_file, ...): lower is better, tolerance in perplexity."""
    return metric.split("/")[-1].startswith("ppl")


def tolerance_of(metric: str, tolerance: ToleranceSpec) -> float:
    """The suite's tolerance for `metric` in the metric's own unit (accuracies are fractions, the tolerance points)."""
    return tolerance.perplexity if is_perplexity(metric) else tolerance.accuracy / 100


def with_paper(summary: pd.DataFrame, baselines: pd.DataFrame, tolerance: ToleranceSpec) -> pd.DataFrame:
    """Each result with the paper's value for the same (model, method, pattern, metric), ours minus paper, and
    whether ours reproduces it ('yes', 'no'; blank where nothing is published)."""
    out = summary.merge(baselines, on=KEYS, how="left")
    verdicts = [reproduced(v, p, tolerance_of(m, tolerance)) for v, p, m in zip(out["value"], out["paper"],
                                                                                 out["metric"])]
    return out.assign(diff=out["value"] - out["paper"],
                      reproduced=[None if r is None else "yes" if r else "no" for r in verdicts])


def refinement_pairs(suite: Suite) -> list[tuple[str, str]]:
    """(method, base) for every method of the suite that refines another: 'R-P' and 'P' by label (R a refinement:
    SDS, DSnoT), a refinement with --base P and the method that runs P with the same options, and a method with a
    non-uniform allocation (OWL) and the one that runs the same pruner uniformly."""
    parsed = {m.name: parse_options(registry().pruner(m.pruner), m.options) for m in suite.methods}

    def runs(m: MethodSpec, pruner: str, options: Any, allocation: str) -> bool:
        return m.pruner == pruner and m.allocation == allocation and parsed[m.name] == options

    pairs = []
    for method in suite.methods:
        pruner = registry().pruner(method.pruner)
        if method.allocation != UNIFORM:
            partners = [m.name for m in suite.methods if runs(m, method.pruner, parsed[method.name], UNIFORM)]
        elif pruner.wraps:
            base, raw = pruner.wraps(parsed[method.name])
            options = parse_options(registry().pruner(base), raw)
            partners = [m.name for m in suite.methods if runs(m, base, options, UNIFORM)]
            named = method.name.removeprefix(f"{pruner.refines}-")
            partners = [named] if named != method.name and named in parsed else partners
        else:  # a row labelled 'R-P' for a refinement R, beside a row 'P'
            partners = [rest for r in registry().refinements if (rest := method.name.removeprefix(f"{r}-")) !=
                        method.name and rest in parsed]
        if partners:
            pairs.append((method.name, partners[0]))
    return pairs


def differences(long: pd.DataFrame, summary: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Every pair's paired difference over seeds (significance.paired_differences), with the same difference of the
    paper's values where both are published, and ours minus the paper's."""
    paired = paired_differences(long[long["method"] != DENSE], pairs)
    paper = summary.set_index(KEYS)["paper"]
    published = pd.Series([paper.get((r.model, r.method, r.pattern, r.metric), math.nan)
                           - paper.get((r.model, r.base, r.pattern, r.metric), math.nan)
                           for r in paired.itertuples(index=False)], index=paired.index, dtype=float)
    labelled = paired.assign(method=paired["method"] + " − " + paired["base"], paper=published,
                             diff=paired["value"] - published)
    return labelled.drop(columns="base")


def cost_table(long: pd.DataFrame, models: list[str], methods: list[str],
               pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Rows (model, method) of the pruned methods: median prune seconds and peak memory over the pruned models
    (patterns x seeds), how many, which memory reading (one per model, see MEMORY), and each median's ratio to the
    method's base."""
    pruned = long[(long["method"] != DENSE) & long["prune_seconds"].notna()]
    pruned = pruned.drop_duplicates(["model", "method", "pattern", "seed"])
    if pruned.empty:
        return pd.DataFrame(columns=["model", "method"])
    pruned = pd.concat([_with_peak(rows) for _, rows in pruned.groupby("model", sort=False)])
    cost = pruned.groupby(["model", "method"]).agg(**{
        "pruned": ("value", "size"), "prune s": ("prune_seconds", "median"), "peak MB": ("peak_mb", "median"),
        "memory": ("memory", "first")})
    base = dict(pairs)
    for column in ("prune s", "peak MB"):
        of_base = [cost[column].get((model, base.get(method)), math.nan) for model, method in cost.index]
        cost[f"{column} × base"] = cost[column] / of_base
    rows = [r for r in product(models, methods) if r in cost.index]
    return cost.reindex(pd.MultiIndex.from_tuples(rows, names=["model", "method"]))[
        ["pruned", "prune s", "prune s × base", "peak MB", "peak MB × base", "memory"]].reset_index()


def _with_peak(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with 'peak_mb' and 'memory': the first reading of MEMORY that every row has (NaN if none)."""
    key = next((k for k in MEMORY if rows[k].notna().all()), None)
    return rows.assign(peak_mb=rows[key] if key else math.nan, memory=MEMORY.get(key))


def layout(long: pd.DataFrame, models: list[str], methods: list[str], patterns: list[str]) -> pd.DataFrame:
    """Rows (model, method), one column per pattern, with its std, n, se, and 'P paper', 'P Δ', 'P reproduced'
    beside it where present."""
    dense = long[long["pattern"] == DENSE]
    long = pd.concat([long[long["pattern"] != DENSE], *(dense.assign(pattern=p) for p in patterns)])
    return wide_table(long, ["model", "method"], list(product(models, methods)), "pattern", patterns)


def metrics_table(long: pd.DataFrame, models: list[str], methods: list[str], patterns: list[str]) -> pd.DataFrame:
    """Rows (model, method, pattern), a column per metric's mean (with paper and Δ where published) and measured
    sparsity."""
    metrics = sorted(long["metric"].unique(), key=lambda m: (not m.startswith("ppl"), m))
    return wide_table(long.drop(columns=["std", "n", "stderr", "reproduced"], errors="ignore"),
                      ["model", "method", "pattern"], list(product(models, methods, [DENSE, *patterns])),
                      "metric", metrics, carry=("measured_sparsity",))


def wide_table(long: pd.DataFrame, index: list[str], rows: list[tuple], column: str, labels: list[str],
               carry: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows of `rows` that `long` has, one column per `column` label in `labels` order that has a value (with
    'X std', 'X n', 'X se', 'X paper', 'X Δ', 'X reproduced' beside it where `long` has them), then the `carry`
    columns, one value per row."""
    if long.empty:
        return pd.DataFrame(columns=index)
    fields = [f for f in SUFFIX if f in long and long[f].notna().any()]
    wide = long.pivot_table(index=index, columns=column, values=fields, aggfunc="first", dropna=False)
    present = set(zip(*(long[k] for k in index)))
    cells = pd.MultiIndex.from_tuples([r for r in rows if r in present], names=index)
    cols = [(f, x) for x in labels for f in fields if (f, x) in wide.columns and wide[(f, x)].notna().any()]
    table = wide.reindex(index=cells, columns=cols)
    table.columns = [x if f == "value" else f"{x} {SUFFIX[f]}" for f, x in cols]
    carried = long.drop_duplicates(index).set_index(index)[list(carry)].reindex(cells)
    return table.join(carried).reset_index()


def write_report(suite: Suite, results: str | Path, baselines: str | Path | None = BASELINES_DIR) -> list[Path]:
    """Write report.md, perplexity.csv, sds_deltas.csv, cost.csv, sparsity.csv, metrics.csv and one plot (mean ±
    spread) per perplexity and average."""
    out = Path(results) / suite.name
    long, failed = long_results(suite, results)
    if long.empty and not failed:
        raise UserError(f"no results for suite {suite.name!r} in {out}; run `sds-bench run {suite.name}` first")
    summary = with_paper(seed_summary(long, KEYS), load_baselines(baselines), suite.tolerance)
    tables = build_tables(suite, long, summary)
    written = []
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        written.append(out / f"{name}.csv")
    models, methods, patterns = _axes(suite)
    for metric in [m for m in dict.fromkeys(summary["metric"]) if _headline(m)]:
        written.append(metric_plot(summary[summary["metric"] == metric], metric, models, methods, patterns,
                                   out / f"{metric.replace('/', '_').replace(':', '_')}.png"))
    (out / "report.md").write_text(_markdown(suite, tables, long, summary, failed))
    return [out / "report.md", *written]


def build_tables(suite: Suite, long: pd.DataFrame, summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The report's tables by file name, from the per-seed results and their summary with the paper's values."""
    models, methods, patterns = _axes(suite)
    pairs = refinement_pairs(suite)
    cells = summary.drop_duplicates(["model", "method", "pattern"])
    pruned = cells[cells["method"] != DENSE][["model", "method", "pattern", "measured_sparsity"]]
    return {
        "perplexity": _stack(summary, perplexity_metrics(summary), models, methods, patterns),
        "sds_deltas": differences(long, summary, pairs),
        "cost": cost_table(long, models, methods, pairs),
        "sparsity": layout(pruned.rename(columns={"measured_sparsity": "value"}), models, methods, patterns),
        "metrics": metrics_table(summary, models, methods, patterns),
    }


def perplexity_metrics(long: pd.DataFrame) -> list[str]:
    """The perplexity metrics among the results (ppl_wikitext2, ppl_embedded, ...), in order of appearance."""
    return [m for m in dict.fromkeys(long["metric"]) if is_perplexity(m)]


def _stack(long: pd.DataFrame, metrics: list[str], models: list[str], methods: list[str],
           patterns: list[str]) -> pd.DataFrame:
    """One `layout` per metric, stacked with a metric column."""
    parts = [layout(long[long["metric"] == m], models, methods, patterns).assign(metric=m) for m in metrics]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["model", "method", "metric"])


def _axes(suite: Suite) -> tuple[list[str], list[str], list[str]]:
    """Models, methods (dense first) and pattern labels in suite order."""
    return (list(suite.models), [DENSE, *(m.name for m in suite.methods)],
            [pattern_label(s) for s in suite.sparsities])


def _markdown(suite: Suite, tables: dict[str, pd.DataFrame], long: pd.DataFrame, summary: pd.DataFrame,
              failed: list[dict]) -> str:
    cal, run = suite.calibration, suite.run
    models, methods, patterns = _axes(suite)
    done = long.drop_duplicates(["model", "method", "pattern", "evaluator", "seed"]).shape[0]
    lines = [f"# Suite `{suite.name}`", "", suite.description, "",
             f"{len(expand(suite))} cells: {done} with results, {len(failed)} failed. "
             f"Calibration: {cal.source}, {cal.nsamples} x {cal.seqlen or 'model context'} tokens, "
             f"{_seeds_text(suite)}. Evaluators: {', '.join(f'{e.name} {e.options}' for e in suite.evaluators)}. "
             f"Device {run.device}, dtype {run.dtype}.", "",
             "Each number is the mean over the calibration seeds a cell ran at, ± their standard deviation, with n in "
             "parentheses (the dense model reads no calibration: one evaluation); `se` is lm-eval's standard error "
             "(of an average: from its tasks', taken as independent). Where a published value exists, `reproduced` "
             f"says whether ours is within {_tolerance_text(suite.tolerance, True)} or "
             f"{_tolerance_text(suite.tolerance, False)} of it.", ""]
    for metric in [m for m in dict.fromkeys(summary["metric"]) if _headline(m)]:
        part = layout(summary[summary["metric"] == metric], models, methods, patterns)
        better = "lower" if is_perplexity(metric) else "higher"
        verdicts = summary[summary["metric"] == metric].drop_duplicates(KEYS)["reproduced"].map({"yes": True,
                                                                                                "no": False})
        line = verdict_line(verdicts, _tolerance_text(suite.tolerance, is_perplexity(metric)))
        lines += [f"## {metric} ({better} is better)", "", *([line, ""] if line else [])]
        lines += _per_model(_collapse(part, patterns, _fmt(metric)), None)
    if not tables["cost"].empty:
        lines += ["## Cost of pruning", "",
                  "Median over each method's pruned models (patterns x seeds) of the prune's wall seconds and peak "
                  "memory (MB; which reading in the last column), and each median over its base method's.", ""]
        lines += _per_model(tables["cost"], ".2f")
    if not tables["sds_deltas"].empty:
        lines += ["## Refinement minus its base (for perplexity, negative means the refinement is better)", "",
                  "Paired over the seeds both ran: mean difference [95% interval] and how many seeds (n=…): Student t "
                  "over n seeds; one seed with lm-eval's standard errors: normal interval (se; the two se taken as "
                  "independent, an upper bound for the same items). `sig`: the interval excludes 0; `n.s.`: it does "
                  "not; `—`: no interval.", ""]
        for metric, part in tables["sds_deltas"].groupby("metric", sort=False):
            if _headline(metric):  # per-task differences: in sds_deltas.csv
                lines += [f"### {metric}", "", direction_line(part, is_perplexity(metric)), ""]
                lines += _per_model(_paired_cells(part, patterns, _fmt(metric)), None, "####")
    for title, name, fmt in (("Measured sparsity of the decoder Linears (mean over seeds)", "sparsity", ".4f"),
                             ("All metrics (mean over seeds)", "metrics", None)):
        if not tables[name].empty:
            lines += [f"## {title}", "", _md(tables[name], fmt), ""]
    sources = sorted(set(summary["source"].dropna()))
    if sources:
        lines += ["## Published numbers", "", *(f"- {s}" for s in sources), ""]
    if failed:
        lines += ["## Failed cells", "", _md(pd.DataFrame(failed), None), ""]
    return "\n".join(lines)


def _seeds_text(suite: Suite) -> str:
    """'seeds 0, 1, 2 (zeroshot: seed 0 only)': the calibration seeds, and each evaluator's where it has fewer."""
    fewer = [f"{e.name}: seed{'s' if len(e.seeds) > 1 else ''} {', '.join(map(str, e.seeds))} only"
             for e in suite.evaluators if e.seeds is not None and set(e.seeds) != set(suite.seeds)]
    seeds = f"seed{'s' if len(suite.seeds) > 1 else ''} {', '.join(map(str, suite.seeds))}"
    return seeds + (f" ({'; '.join(fewer)})" if fewer else "")


def _tolerance_text(tolerance: ToleranceSpec, perplexity: bool) -> str:
    return f"±{tolerance.perplexity:g} perplexity" if perplexity else f"±{tolerance.accuracy:g} accuracy point(s)"


def _headline(metric: str) -> bool:
    """Perplexities and averages: the metrics the Markdown shows (every metric is in the CSV files)."""
    name = metric.split("/")[-1]
    return name.startswith("ppl") or name.endswith("avg")


def _fmt(metric: str) -> str:
    return ".2f" if is_perplexity(metric) else ".4f"


def _collapse(table: pd.DataFrame, patterns: list[str], fmt: str) -> pd.DataFrame:
    """Each pattern's mean, std, n and se as one text cell 'mean ± std (n; se s)'; paper, Δ and verdict kept."""
    out = table[["model", "method"]].copy()
    for p in [p for p in patterns if p in table]:
        fields = (table.get(f"{p} {f}", pd.Series(math.nan, index=table.index)) for f in ("std", "n", "se"))
        out[p] = [_mean_text(*v, fmt) for v in zip(table[p], *fields)]
        for field in ("paper", "Δ", "reproduced"):
            if f"{p} {field}" in table:
                column = table[f"{p} {field}"]
                out[f"{p} {field}"] = column if field == "reproduced" else column.map(
                    lambda v: "" if pd.isna(v) else f"{v:{fmt}}")
    return out


def _mean_text(mean: float, std: float, n: float, se: float, fmt: str) -> str:
    if pd.isna(mean):
        return ""
    spread_text = f" ± {std:{fmt}}" if pd.notna(std) else ""
    detail = "; ".join([*([f"{int(n)}"] if pd.notna(n) else []), *([f"se {se:{fmt}}"] if pd.notna(se) else [])])
    return f"{mean:{fmt}}{spread_text}" + (f" ({detail})" if detail else "")


def _paired_cells(part: pd.DataFrame, patterns: list[str], fmt: str) -> pd.DataFrame:
    """Rows (model, pair), a text cell per pattern 'diff [low, high] n=3 sig', and the paper's difference."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for r in part.itertuples(index=False):
        cell = rows.setdefault((r.model, r.method), {"model": r.model, "method": r.method})
        basis = f"n={r.n}" if r.basis != "lm-eval stderr" else "se"
        sig = {True: "sig", False: "n.s.", None: "—"}[None if pd.isna(r.significant) else bool(r.significant)]
        interval = f" [{r.low:{fmt}}, {r.high:{fmt}}]" if pd.notna(r.low) else ""
        cell[r.pattern] = f"{r.value:{fmt}}{interval} {basis} {sig}"
        if pd.notna(r.paper):
            cell[f"{r.pattern} paper"] = f"{r.paper:{fmt}}"
    columns = ["model", "method", *(c for p in patterns for c in (p, f"{p} paper"))]
    table = pd.DataFrame(list(rows.values()))
    return table[[c for c in columns if c in table]]


def _per_model(table: pd.DataFrame, fmt: str | None, heading: str = "###") -> list[str]:
    lines = []
    for model, part in table.groupby("model", sort=False):
        lines += [f"{heading} {model}", "", _md(part.drop(columns="model").dropna(axis=1, how="all"), fmt), ""]
    return lines


def _md(table: pd.DataFrame, fmt: str | None) -> str:
    """Markdown with blanks for missing values; perplexity with 2 decimals, fractions with 4."""
    formats = [fmt or (".2f" if "ppl" in str(c) else ".4f") for c in table.columns]
    return table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=formats, missingval="")
