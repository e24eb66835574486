"""Sweeps end to end on a saved tiny OPT: suites, grid and keys, the atomic store, resuming, failures, reports."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from sds_bench import cli
from sds_bench.errors import UserError
from sds_bench.plugin import EvalResult, Evaluator, Pruner, parse_options
from sds_bench.pruners.magnitude import MagnitudeOptions, magnitude
from sds_bench.registry import registry
from sds_bench.report.tables import write_report
from sds_bench.runner import Store, execute, expand, load_suite, plan, run_suite, select
from sds_bench.runner.store import FAILED, OK
from sds_bench.testing import tiny_opt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """The models are tiny: one thread is fastest, and leaves the other core to the rest of the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, Path]:
    """Calibration and evaluation text files (Python's own documentation, as the embedded corpus)."""
    import pydoc_data.topics

    texts = [t for _, t in sorted(pydoc_data.topics.topics.items())]
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text("\n\n".join(texts[:20]))
    test.write_text("\n\n".join(texts[40:42])[:2500])
    return train, test


@pytest.fixture
def make_suite(tmp_path, opt_dir, corpus):
    """Write a suite TOML over the tiny OPT and return its path."""

    def write(methods=("magnitude", "wanda"), sparsities=("50%", "2:4"), more_evaluators=(), name="tiny", extra="",
              nsamples=4):
        train, test = corpus
        evaluators = [f'{{name = "perplexity", options = {{dataset = "file", data_file = "{test}", seqlen = 32}}}}',
                      *more_evaluators]
        path = tmp_path / f"{name}.toml"
        path.write_text(f"""name = "{name}"
models = ["{opt_dir}"]
methods = [{", ".join(m if m.startswith("{") else json.dumps(m) for m in methods)}]
sparsities = {json.dumps(list(sparsities))}
evaluators = [{", ".join(evaluators)}]
{extra}
[calibration]
source = "{train}"
nsamples = {nsamples}
seqlen = 32
[run]
device = "cpu"
dtype = "float32"
""")
        return path

    return write


@pytest.fixture
def results(tmp_path) -> Path:
    return tmp_path / "results"


def register_pruner(monkeypatch, name, prune):
    reg = registry()
    monkeypatch.setitem(reg.pruners, name, Pruner(name, "test pruner", prune=prune, options=MagnitudeOptions))
    monkeypatch.setitem(reg.origins, f"Pruner:{name}", "test")


def rows_of(results, suite="tiny"):
    return Store(results / suite).rows()


# --- suites and the grid ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    ('models = ["m"]\nmethods = ["wanda"]\nsparsities = ["50%"]\nevaluators = ["perplexity"]\ncolour = 1', "colour"),
    ('models = []\nmethods = ["wanda"]\nsparsities = ["50%"]\nevaluators = ["perplexity"]', "'models' must be"),
    ('models = ["m"]\nmethods = ["wanda"]\nsparsities = ["60:4"]\nevaluators = ["perplexity"]', "60:4"),
    ('models = ["m"]\nmethods = ["wanda", "wanda"]\nsparsities = ["2:4"]\nevaluators = ["perplexity"]', "more than once"),
    ('models = ["m"]\nmethods = ["wanda"]\nsparsities = ["2:4"]\nevaluators = ["perplexity"]\n[calibration]\nnsamples = "x"',
     "nsamples must be a int"),
    ('models = ["m"]\nmethods = [{pruner = "wanda"}]\nsparsities = ["2:4"]\nevaluators = ["perplexity"]', "'name'"),
    ('models = ["m"\n', "not valid TOML"),
    ('models = ["m"]\nmethods = ["wanda"]\nsparsities = ["2:4"]\nevaluators = ["perplexity"]\nseeds = [0, 0]',
     "'seeds' must be a non-empty list of distinct integers"),
    ('models = ["m"]\nmethods = ["wanda"]\nsparsities = ["2:4"]\nevaluators = ["perplexity"]\nseeds = []', "'seeds'"),
    ('models = ["m"]\nmethods = ["wanda"]\nsparsities = ["2:4"]\nseeds = [0, 1]\n'
     'evaluators = [{name = "perplexity", seeds = [2]}]', r"evaluators entry 'perplexity': seeds \[2\] are not among"),
    ('models = ["m"]\nmethods = ["wanda"]\nsparsities = ["2:4"]\nevaluators = ["perplexity"]\ntolerance = {ppl = 1}',
     "'tolerance' has no key 'ppl'"),
])
def test_bad_suites_name_the_file_and_the_key(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(UserError, match=message) as e:
        load_suite(str(path))
    assert str(path) in str(e.value)


def test_unknown_suite_lists_the_shipped_ones():
    with pytest.raises(UserError, match="embedded.*paper-opt"):
        load_suite("no-such-suite")


def test_shipped_suites_expand_to_the_paper_grids():
    opt = load_suite("paper-opt")
    cells = expand(opt)
    # per model: a dense cell per evaluator, then 4 methods x 3 patterns x 2 evaluators
    assert len(cells) == 4 * (2 + 4 * 3 * 2)
    assert {c.evaluator for c in cells} == {"perplexity", "zeroshot"}
    assert cells[0].dense and cells[0].model == "facebook/opt-125m"
    assert {(c.calibration.source, c.calibration.nsamples, c.calibration.seqlen) for c in cells if not c.dense} == {
        ("c4", 128, 2048)}
    embedded = expand(load_suite("embedded"))
    # per model: dense x 2 evaluators, then (7 methods x 3 patterns + owl-wanda at 50% only) x perplexity at seeds
    # 0, 1, 2, and the paper's 5 methods x 3 patterns x zero-shot at seed 0
    assert len(embedded) == 2 * (2 + (7 * 3 + 1) * 3 + 5 * 3)
    assert {c.method for c in embedded if c.evaluator == "zeroshot"} == {
        "dense", "magnitude", "wanda", "sparsegpt", "sds-wanda", "sds-sparsegpt"}
    assert {c.pattern for c in embedded if c.method == "owl-wanda"} == {"50%"}
    assert {c.allocation for c in embedded if c.method == "owl-wanda"} == {"owl"}
    assert {c.seed for c in embedded if c.evaluator == "zeroshot"} == {None, 0}
    assert {c.seed for c in embedded} == {None, 0, 1, 2} and {c.seed for c in embedded if c.dense} == {None}
    assert {c.model for c in embedded} == {"embedded:opt-tiny", "embedded:llama-tiny"}
    assert {c.evaluator for c in embedded} == {"perplexity", "zeroshot"}
    assert len(expand(load_suite("paper-llama"))) == 3 * (2 + 4 * 3 * 2)
    ablation = [c for c in expand(load_suite("sds-ablation")) if not c.dense]
    arms = [c for c in expand(load_suite("tyr-arms")) if not c.dense]
    assert len(ablation) == 13 and {c.pattern for c in ablation} == {"2:4"}
    assert len(arms) == 6 and {c.pruner for c in arms} == {"tyr", "wanda-sp"}
    for cell in ablation + arms:  # every switch names a real option with a valid value
        parse_options(registry().pruner(cell.pruner), cell.options)


def test_the_committed_embedded_record_is_the_shipped_suites_grid():
    """Every committed row is a cell of today's embedded suite (same key), and every cell of seed 0 has one, so
    `sds-bench run embedded` resumes it and `sds-bench report embedded` rebuilds its tables; a key change (a field
    added to the cell definition) shows here. (A record from before seeds holds seed 0 only, named without it.)"""
    rows = [json.loads(line) for line in (ROOT / "results/embedded/rows.jsonl").read_text().splitlines()]
    cells = {c.key: c for c in expand(load_suite("embedded"))}
    assert {c.key for c in cells.values() if c.seed in (None, 0)} <= {r["key"] for r in rows} <= set(cells)
    assert all(cells[r["key"]].name in (r["cell"]["name"], f"{r['cell']['name']}/seed=0") for r in rows)


def test_cell_keys_follow_the_definition_not_the_labels(make_suite):
    base = {c.name: c.key for c in expand(load_suite(str(make_suite())))}
    assert len(set(base.values())) == len(base) == 5
    renamed = expand(load_suite(str(make_suite(methods=('{name = "mag", pruner = "magnitude"}', "wanda")))))
    assert {c.key for c in renamed} == set(base.values())
    changed = make_suite(methods=('{name = "magnitude", pruner = "magnitude", options = {exact = true}}', "wanda"))
    keys = {c.name: c.key for c in expand(load_suite(str(changed)))}
    assert [n for n in keys if keys[n] != base[n]] == [n for n in keys if "/magnitude/" in n] != []
    more = {c.name: c.key for c in expand(load_suite(str(make_suite(nsamples=8))))}
    assert [n for n in more if more[n] != base[n]] == [n for n in more if "/dense/" not in n]  # dense: no calibration


def test_seeds_make_a_cell_per_seed_and_one_seed_keeps_the_keys(make_suite, corpus):
    base = {c.key: c.name for c in expand(load_suite(str(make_suite())))}
    assert {c.key: c.name for c in expand(load_suite(str(make_suite(extra="seeds = [0]"))))} == base
    restricted = f'{{name = "short", evaluator = "perplexity", options = {{dataset = "file", data_file = "{corpus[1]}", ' \
                 'seqlen = 16}, seeds = [0]}'
    cells = expand(load_suite(str(make_suite(extra="seeds = [0, 1, 2]", more_evaluators=[restricted]))))
    assert {c.key for c in cells} >= set(base)  # seed 0 is the one-seed suite's cells
    pruned = [c for c in cells if not c.dense]
    assert len(pruned) == 2 * 2 * (3 + 1) and len(cells) - len(pruned) == 2  # dense once per evaluator
    assert {c.seed for c in pruned if c.evaluator == "short"} == {0}
    assert {c.name for c in pruned if c.method == "wanda" and c.pattern == "2:4" and c.evaluator == "perplexity"} == {
        f"{Path(c.model)}/wanda/2:4/perplexity/seed={s}" for c in cells[:1] for s in (0, 1, 2)}
    assert {c.seed for c in select(cells, only=["seed=1"])} == {1}


def test_rebuilding_a_local_model_makes_new_cells(make_suite, opt_dir):
    before = {c.key for c in expand(load_suite(str(make_suite())))}
    tiny_opt(seed=1).save_pretrained(opt_dir)
    after = {c.key for c in expand(load_suite(str(make_suite())))}
    assert len(after) == 5 and not before & after


def test_only_and_exclude_filters(make_suite):
    cells = expand(load_suite(str(make_suite())))
    assert {c.method for c in select(cells, only=["magnitude*"])} == {"magnitude"}
    assert {c.pattern for c in select(cells, only=["sparsity=2:4"])} == {"2:4"}
    assert {c.pattern for c in select(cells, only=["50%"])} == {"50%"}
    kept = select(cells, exclude=["wanda", "dense"])
    assert {c.method for c in kept} == {"magnitude"} and len(kept) == 2
    with pytest.raises(UserError, match="field must be one of"):
        select(cells, only=["colour=red"])


# --- running, the store, resuming --------------------------------------------------------------------------------


def test_run_writes_one_complete_row_per_cell_and_skips_them_next_time(make_suite, results):
    suite = load_suite(str(make_suite()))
    summary = run_suite(suite, results, quiet=True)
    rows = rows_of(results)
    assert (summary.cells, summary.ok, summary.failed) == (5, 5, 0)
    assert sorted(r["key"] for r in rows) == sorted(c.key for c in expand(suite))
    wanda = next(r for r in rows if r["cell"]["method"] == "wanda" and r["cell"]["pattern"] == "2:4")
    assert wanda["status"] == OK and wanda["measured_sparsity"] == pytest.approx(0.5)
    assert wanda["pruning"]["calibration"]["nsamples"] == 4 and len(wanda["pruning"]["calibration"]["sha256"]) == 64
    assert wanda["pruning"]["options"] == {"variant": False}
    assert wanda["evaluation"]["protocol"]["seqlen"] == 32 and wanda["evaluation"]["protocol"]["dataset"] == "file"
    assert set(wanda["times"]) >= {"load", "prune", "eval"} and wanda["memory"]["process_peak_rss_mb"] > 0
    assert wanda["environment"]["versions"]["torch"] and wanda["model"]["sha256"] == wanda["cell"]["definition"]["model_sha256"]
    assert not (results / "tiny" / "models").exists()  # nothing saved unless --save-models
    again = run_suite(suite, results, quiet=True)
    assert (again.skipped, again.ok, again.failed) == (5, 0, 0) and len(rows_of(results)) == 5


def test_interrupted_sweep_resumes_with_only_the_missing_cells(make_suite, results, monkeypatch):
    interrupt = {"on": True}

    def flaky(weight, stats, sparsity, options):
        if interrupt["on"]:
            raise KeyboardInterrupt
        return magnitude(weight, stats, sparsity, options)

    register_pruner(monkeypatch, "stopper", flaky)
    suite = load_suite(str(make_suite(methods=("magnitude", "stopper", "wanda"))))
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, results, quiet=True)
    assert [r["cell"]["method"] for r in rows_of(results)] == ["dense", "magnitude", "magnitude"]
    interrupt["on"] = False
    summary = run_suite(suite, results, quiet=True)
    assert (summary.skipped, summary.ok, summary.failed) == (3, 4, 0)
    keys = [r["key"] for r in rows_of(results)]
    assert sorted(keys) == sorted(c.key for c in expand(suite))  # exactly one row per cell


def test_interrupted_sweep_with_seeds_resumes_with_only_the_missing_seeds(make_suite, results, monkeypatch):
    interrupt, real_prune = {"on": False}, execute.api.prune

    def prune(*args, **kwargs):
        if interrupt["on"]:
            raise KeyboardInterrupt
        return real_prune(*args, **kwargs)

    monkeypatch.setattr(execute.api, "prune", prune)
    suite = load_suite(str(make_suite(methods=("wanda",), sparsities=("2:4",), extra="seeds = [0, 1, 2]")))

    def stop_after_seed_0(row):
        interrupt["on"] = row["cell"]["name"].endswith("seed=0")

    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, results, quiet=True, on_row=stop_after_seed_0)
    assert [r["cell"]["method"] for r in rows_of(results)] == ["dense", "wanda"]
    interrupt["on"] = False
    summary = run_suite(suite, results, quiet=True)
    assert (summary.cells, summary.skipped, summary.ok, summary.failed) == (4, 2, 2, 0)
    rows = rows_of(results)
    assert sorted(r["key"] for r in rows) == sorted(c.key for c in expand(suite))
    assert [r["pruning"]["calibration"]["seed"] for r in rows[1:]] == [0, 1, 2]
    assert len({r["pruning"]["calibration"]["sha256"] for r in rows[1:]}) == 3  # three calibration draws
    assert all(r["memory"]["prune_process_peak_rss_mb"] > 0 for r in rows[1:])
    write_report(suite, results, None)
    table = pd.read_csv(results / "tiny" / "perplexity.csv").set_index("method")
    ppl = [r["metrics"]["ppl_file"] for r in rows[1:]]
    assert table.loc["wanda", "2:4"] == pytest.approx(sum(ppl) / 3) and table.loc["wanda", "2:4 n"] == 3
    assert table.loc["wanda", "2:4 std"] == pytest.approx(pd.Series(ppl).std(ddof=1))
    assert table.loc["dense", "2:4 n"] == 1


def test_failed_cell_is_recorded_others_continue_and_a_rerun_retries_it(make_suite, results, monkeypatch):
    broken = {"on": True}

    def fragile(weight, stats, sparsity, options):
        if broken["on"] and sparsity.is_nm:
            raise RuntimeError("no 2:4 today")
        return magnitude(weight, stats, sparsity, options)

    register_pruner(monkeypatch, "fragile", fragile)
    suite = load_suite(str(make_suite(methods=("fragile", "wanda"))))
    summary = run_suite(suite, results, quiet=True)
    assert (summary.ok, summary.failed) == (4, 1)
    failed = [r for r in rows_of(results) if r["status"] == FAILED]
    assert [(r["cell"]["method"], r["cell"]["pattern"]) for r in failed] == [("fragile", "2:4")]
    assert failed[0]["error"] == "RuntimeError: no 2:4 today" and "fragile" in failed[0]["traceback"]
    assert [s for _, s in plan(suite, results)].count("failed") == 1
    broken["on"] = False
    retry = run_suite(suite, results, quiet=True)
    assert (retry.skipped, retry.ok, retry.failed) == (4, 1, 0)
    assert all(r["status"] == OK for r in Store(results / "tiny").latest().values())


def test_fail_fast_stops_at_the_first_failure(make_suite, results, monkeypatch):
    register_pruner(monkeypatch, "broken", lambda *a: 1 / 0)
    suite = load_suite(str(make_suite(methods=("broken", "wanda"))))
    with pytest.raises(UserError, match="broken/50%.*ZeroDivisionError"):
        run_suite(suite, results, fail_fast=True, quiet=True)
    assert [r["status"] for r in rows_of(results)] == [OK, FAILED]


def test_unknown_evaluator_and_method_fail_the_suite_before_any_cell(make_suite):
    for methods, evaluators, message in [(("wanda", "nonesuch"), (), r"methods entry 'nonesuch': unknown method"),
                                         (("wanda",), ('{name = "zs", evaluator = "nope"}',),
                                          r"evaluators entry 'zs': unknown evaluator 'nope'")]:
        path = make_suite(methods=methods, sparsities=("2:4",), more_evaluators=evaluators)
        with pytest.raises(UserError, match=rf"^{path}: {message}"):
            load_suite(str(path))


def test_store_sets_a_torn_last_line_aside_once_and_its_cell_runs_again(tmp_path, caplog):
    store = Store(tmp_path)
    store.append({"key": "a", "status": OK})
    with open(store.path, "ab") as f:
        f.write(b'{"key": "b", "sta')  # a writer killed in the middle of its line
    assert [r["key"] for r in store.rows()] == ["a"]  # a reader skips it, silently
    assert not caplog.records
    with caplog.at_level("WARNING"), store.lock():
        store.append({"key": "c", "status": OK})
    [warning] = caplog.records
    assert "rows.torn.jsonl" in warning.getMessage() and "\n" not in warning.getMessage()
    assert store.torn.read_bytes() == b'{"key": "b", "sta\n'
    assert store.path.read_bytes().count(b"\n") == 2 and store.completed() == {"a", "c"}
    caplog.clear()
    with caplog.at_level("WARNING"), store.lock():  # the next writer finds nothing to set aside
        pass
    assert not caplog.records and [r["key"] for r in store.rows()] == ["a", "c"]


def test_fresh_rerun_archives_the_rows_and_gives_identical_metrics(make_suite, results):
    suite = load_suite(str(make_suite(methods=("sparsegpt", "wanda"), sparsities=("2:4",))))
    run_suite(suite, results, quiet=True)
    first = {r["key"]: r["metrics"] for r in rows_of(results)}
    assert run_suite(suite, results, quiet=True).ok == 0  # resumed: nothing to do
    assert run_suite(suite, results, quiet=True, fresh=True).ok == 3  # every cell again
    (archived,) = (results / "tiny").glob("rows.*.jsonl")
    assert {json.loads(line)["key"] for line in archived.read_text().splitlines()} == set(first)
    assert {r["key"]: r["metrics"] for r in rows_of(results)} == first and len(first) == 3
    with pytest.raises(UserError, match="--fresh re-runs a whole suite"):
        run_suite(suite, results, only=["wanda"], fresh=True)


def test_save_models_writes_each_pruned_model_with_its_record(make_suite, results):
    suite = load_suite(str(make_suite(methods=("magnitude",), sparsities=("2:4",))))
    run_suite(suite, results, save_models=True, quiet=True)
    saved = results / "tiny" / "models" / "opt-magnitude-2of4"
    assert json.loads((saved / "pruning.json").read_text())["sparsity"] == "2:4"
    assert (saved / "config.json").is_file()


# --- reports -----------------------------------------------------------------------------------------------------


def test_report_has_the_paper_layout_deltas_sparsity_and_the_papers_numbers(make_suite, results, tmp_path,
                                                                            monkeypatch, opt_dir):
    monkeypatch.setitem(registry().evaluators, "fake", Evaluator(
        "fake", "two fixed metrics", evaluate=lambda m, t, o: EvalResult({"fake:a": 0.25, "fake:avg": 0.5})))
    monkeypatch.setitem(registry().origins, "Evaluator:fake", "test")
    suite = load_suite(str(make_suite(
        methods=("magnitude", '{name = "sds-magnitude", pruner = "magnitude", options = {exact = true}}', "wanda"),
        more_evaluators=['"fake"'])))
    run_suite(suite, results, quiet=True)
    latest = {(r["cell"]["method"], r["cell"]["pattern"], r["cell"]["evaluator"]): r for r in rows_of(results)}
    ppl = lambda m, p: latest[(m, p, "perplexity")]["metrics"]["ppl_file"]  # noqa: E731
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    published = [("wanda", "2:4", "ppl_file", ppl("wanda", "2:4") + 0.5, "", "Table 9"),  # within ±1: reproduced
                 ("magnitude", "2:4", "ppl_file", ppl("magnitude", "2:4") - 1.5, "", "Table 9"),  # not
                 ("magnitude", "0.5", "fake:avg", 40.0, "%", "Table 8"),  # ours 0.5: 10 points off
                 ("wanda", "0.5", "fake:avg", 50.5, "%", "Table 8")]  # 0.5 points off
    pd.DataFrame([{"model": str(opt_dir), "method": m, "sparsity": sp, "metric": metric, "value": value, "unit": unit,
                   "source": "A paper", "location": where, "version": "v2", "secondary": "no"}
                  for m, sp, metric, value, unit, where in published]).to_csv(baselines / "paper.csv", index=False)
    written = write_report(suite, results, baselines)
    out = results / "tiny"
    assert {p.name for p in written} >= {"report.md", "perplexity.csv", "sds_deltas.csv", "cost.csv", "sparsity.csv",
                                         "metrics.csv", "ppl_file.png", "fake_avg.png"}
    assert (out / "ppl_file.png").read_bytes()[:4] == b"\x89PNG"

    table = pd.read_csv(out / "perplexity.csv").set_index("method")
    assert list(table.index) == ["dense", "magnitude", "sds-magnitude", "wanda"]
    assert list(table.columns) == ["model", "50%", "50% n", "2:4", "2:4 n", "2:4 paper", "2:4 Δ", "2:4 reproduced",
                                   "metric"]  # one seed: no std
    assert table.loc["wanda", "2:4"] == pytest.approx(ppl("wanda", "2:4")) and table.loc["wanda", "2:4 n"] == 1
    assert table.loc["wanda", "2:4 Δ"] == pytest.approx(-0.5)
    assert table["2:4 reproduced"].fillna("").to_dict() == {"dense": "", "magnitude": "no", "sds-magnitude": "",
                                                            "wanda": "yes"}
    assert table.loc["dense", "50%"] == table.loc["dense", "2:4"] == pytest.approx(ppl("dense", "dense"))

    deltas = pd.read_csv(out / "sds_deltas.csv").set_index(["method", "pattern", "metric"])
    one = deltas.loc[("sds-magnitude − magnitude", "50%", "ppl_file")]
    assert one["value"] == pytest.approx(ppl("sds-magnitude", "50%") - ppl("magnitude", "50%")) and one["n"] == 1
    assert pd.isna(one["low"]) and pd.isna(one["significant"])  # one seed, no stderr: no interval
    assert {m for m, _, _ in deltas.index} == {"sds-magnitude − magnitude"}

    cost = pd.read_csv(out / "cost.csv").set_index("method")
    prune = {m: pd.Series([latest[(m, p, "perplexity")]["times"]["prune"] for p in ("50%", "2:4")]).median()
             for m in ("magnitude", "sds-magnitude")}
    assert cost.loc["sds-magnitude", "prune s"] == pytest.approx(prune["sds-magnitude"])
    assert cost.loc["sds-magnitude", "prune s × base"] == pytest.approx(prune["sds-magnitude"] / prune["magnitude"])
    assert pd.isna(cost.loc["wanda", "prune s × base"]) and cost.loc["wanda", "pruned"] == 2

    sparsity = pd.read_csv(out / "sparsity.csv").set_index("method")
    assert "dense" not in sparsity.index and sparsity.loc["wanda", "2:4"] == pytest.approx(0.5)

    metrics = pd.read_csv(out / "metrics.csv")
    assert {"ppl_file", "fake:a", "fake:avg", "fake:avg paper", "fake:avg Δ", "measured_sparsity"} <= set(metrics)
    row = metrics[(metrics["method"] == "magnitude") & (metrics["pattern"] == "50%")].iloc[0]
    assert row["fake:avg paper"] == pytest.approx(0.4) and row["fake:avg Δ"] == pytest.approx(0.1)
    report = (out / "report.md").read_text()
    assert "## ppl_file" in report and "A paper (v2), Table 9" in report and "Refinement minus its base" in report
    assert "1 of 2 published values reproduced (within ±1 perplexity)" in report
    assert "1 of 2 published values reproduced (within ±1 accuracy point(s))" in report and "## Cost" in report
    assert "## fake:avg (higher is better)" in report and "## fake:a " not in report  # averages, not every task


def test_report_without_results_says_so(make_suite, results):
    with pytest.raises(UserError, match="no results for suite 'tiny'"):
        write_report(load_suite(str(make_suite())), results)


# --- the command line --------------------------------------------------------------------------------------------


def test_cli_dry_run_prints_the_grid_with_states(make_suite, results, capsys):
    suite = make_suite()
    assert cli.main(["run", str(suite), "--results", str(results), "--only", "magnitude", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["run", str(suite), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "5 cells (3 pending, 2 done)" in out and out.count(" done\n") == 2 and out.count(" pending\n") == 3
    assert cli.main(["run", str(suite), "--results", str(results), "--dry-run", "--seeds", "0,1"]) == 0
    assert "9 cells (7 pending, 2 done)" in capsys.readouterr().out  # seed 0 is the cells run above
    assert cli.main(["run", str(suite), "--results", str(results), "--dry-run", "--seeds", "0,0"]) == 2
    assert "'seeds' must be a non-empty list of distinct integers" in capsys.readouterr().err
    assert cli.main(["run", "paper-opt", "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "104 cells" in out and "facebook/opt-2.7b" in out and "sds-sparsegpt" in out and "4:8" in out


def test_cli_run_and_report(make_suite, results, capsys):
    assert cli.main(["run", str(make_suite()), "--results", str(results), "--exclude", "wanda", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "ppl_file" in out and (results / "tiny" / "report.md").is_file()
    assert cli.main(["report", str(make_suite()), "--results", str(results)]) == 0
    assert "perplexity.csv" in capsys.readouterr().out


def test_paper_suite_without_the_hub_fails_in_one_line(results, capsys):
    assert cli.main(["run", "paper-opt", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "facebook/opt-125m" in err and "hub" in err
    assert not (results / "paper-opt" / "rows.jsonl").exists()


# --- interruption for real, and submitit ------------------------------------------------------------------------

SLEEPY = """
import sys, time
from sds_bench.plugin import Pruner
from sds_bench.pruners.magnitude import MagnitudeOptions, magnitude
from sds_bench.registry import registry
from sds_bench.runner import load_suite, run_suite

def sleepy(*args):
    time.sleep(float(sys.argv[3]))
    return magnitude(*args)

registry().pruners["sleepy"] = Pruner("sleepy", "magnitude, slowly", prune=sleepy, options=MagnitudeOptions)
registry().origins["Pruner:sleepy"] = "test"
run_suite(load_suite(sys.argv[1]), sys.argv[2], quiet=True)
"""


@pytest.mark.slow
def test_killed_sweep_loses_only_the_cell_in_flight(make_suite, results, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    suite_file = make_suite(methods=("magnitude", "sleepy"))
    proc = subprocess.Popen([sys.executable, "-c", SLEEPY, str(suite_file), str(results), "600"],
                            start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(rows_of(results)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(rows_of(results)) == 3  # dense, magnitude 50%, 2:4; sleepy 50% is in flight
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    register_pruner(monkeypatch, "sleepy", magnitude)  # the same definition here, to list the cells
    suite = load_suite(str(suite_file))
    summary = subprocess.run([sys.executable, "-c", SLEEPY, str(suite_file), str(results), "0"], check=True)
    assert summary.returncode == 0
    assert sorted(r["key"] for r in rows_of(results)) == sorted(c.key for c in expand(suite))


@pytest.mark.slow
def test_submitit_local_executor_gives_the_same_rows(make_suite, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs' threads, as this process's
    suite = load_suite(str(make_suite(methods=("wanda",), sparsities=("2:4",))))
    local = run_suite(suite, tmp_path / "local", quiet=True)
    jobs = run_suite(suite, tmp_path / "jobs", executor="submitit", cluster="local",
                     params={"timeout_min": 10, "slurm_partition": "ignored-here"}, quiet=True)
    assert (local.ok, jobs.ok, jobs.failed) == (2, 2, 0)
    one, two = ({r["key"]: r["metrics"]["ppl_file"] for r in rows_of(tmp_path / d)} for d in ("local", "jobs"))
    assert one.keys() == two.keys() and all(two[k] == pytest.approx(v, rel=1e-5) for k, v in one.items())
    assert list((tmp_path / "jobs" / "tiny" / "submitit").iterdir())
