"""The guards on plugin output, option bounds and the results store: each fault made by a real registered plugin
(or a real second process) and refused in one line, in a prune, in `sds-bench prune` and in a sweep."""

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import sds_bench
from sds_bench import cli
from sds_bench.checks import PluginOutputError, pruned_weight
from sds_bench.errors import UserError
from sds_bench.plugin import EvalResult, Evaluator, Pruner, option, parse_options
from sds_bench.pruners.magnitude import MagnitudeOptions, magnitude
from sds_bench.pruners.sparsegpt import SparseGPTOptions, sparsegpt
from sds_bench.pruners.tyr import WandaSpOptions, wanda_sp
from sds_bench.pruners.wanda import WandaOptions, wanda
from sds_bench.registry import registry
from sds_bench.runner import Store, run_suite, suite_from_dict
from sds_bench.runner.store import FAILED, OK
from sds_bench.sparsity import Sparsity
from sds_bench.stats import LayerStats
from sds_bench.testing import tiny_calibration, tiny_opt


def short_column(weight, stats, sparsity, options):
    return magnitude(weight, stats, sparsity, options)[:, :-1]


def unpruned(weight, stats, sparsity, options):
    return weight


def with_nan(weight, stats, sparsity, options):
    out = magnitude(weight, stats, sparsity, options)
    out[0, 1] = math.nan
    return out


def ignores_groups(weight, stats, sparsity, options):
    """Half the weights by one threshold per matrix: the right count, not the N:M pattern."""
    return magnitude(weight, stats, Sparsity(sparsity.ratio), options)


def integer(weight, stats, sparsity, options):
    return magnitude(weight, stats, sparsity, options).round().to(torch.int32)


BAD_PRUNERS = {  # name: (function, sparsity, the fault as the error says it)
    "short-column": (short_column, "2:4", r"returned shape \[\d+, 31\] instead of \[\d+, 32\]"),
    "unpruned": (unpruned, "50%", r"returned 0.00% zeros, short of 0.5 \(at least \d+ of \d+ weights zero, allowing "
                                  r"the reference codes' rounding\)"),
    "with-nan": (with_nan, "2:4", r"returned 1 non-finite weights \(NaN or infinite, in torch.float32\)"),
    "ignores-groups": (ignores_groups, "2:4", r"returned a weight breaking the 2:4 pattern \(a group of 4 with fewer "
                                              r"than 2 zeros\)"),
    "integer": (integer, "2:4", r"returned a torch.int32 instead of a floating-point weight"),
}


@pytest.fixture
def bad_pruners(monkeypatch):
    """Register every pruner of BAD_PRUNERS (and `upcast`, which returns float64) as a plugin would."""
    reg = registry()
    pruners = {name: fn for name, (fn, _, _) in BAD_PRUNERS.items()}
    pruners["upcast"] = lambda w, s, sp, o: magnitude(w, s, sp, o).double()
    pruners["overflow"] = lambda w, s, sp, o: magnitude(w, s, sp, o).float() * 1e6
    for name, fn in pruners.items():
        monkeypatch.setitem(reg.pruners, name, Pruner(name, "a faulty test pruner", prune=fn, options=MagnitudeOptions))
        monkeypatch.setitem(reg.origins, f"Pruner:{name}", "test")


def sweep(methods, evaluators=({"name": "perplexity", "options": {"dataset": "embedded", "max_windows": 2,
                                                                 "seqlen": 32}},), name="guards", sparsities=("2:4",)):
    """A suite on the embedded model, as a dict validated like a TOML file."""
    return suite_from_dict({"name": name, "models": ["embedded:opt-tiny"], "methods": list(methods),
                            "sparsities": list(sparsities), "evaluators": list(evaluators),
                            "calibration": {"source": "embedded", "nsamples": 2, "seqlen": 32},
                            "run": {"device": "cpu", "dtype": "float32"}}, Path(f"{name}.toml"))


# --- per-layer pruner output ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BAD_PRUNERS)
def test_bad_pruner_output_fails_the_prune_naming_pruner_layer_and_fault(bad_pruners, name):
    model = tiny_opt()
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    _, sparsity, fault = BAD_PRUNERS[name]
    with pytest.raises(PluginOutputError, match=rf"^pruner '{name}' {fault} for "
                                                r"model\.decoder\.layers\.0\.self_attn\.\w+_proj$"):
        sds_bench.prune(model, None, name, sparsity, quiet=True)
    assert all(torch.equal(v, dense[k]) for k, v in model.state_dict().items())  # nothing was written back


@pytest.mark.parametrize("name", BAD_PRUNERS)
def test_bad_pruner_output_is_one_line_exit_2_in_the_cli_and_saves_nothing(bad_pruners, name, opt_dir, tmp_path,
                                                                           capsys):
    out = tmp_path / "pruned"
    code = cli.main(["prune", str(opt_dir), "--method", name, "--sparsity", BAD_PRUNERS[name][1], "--device", "cpu",
                     "--quiet", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"pruner '{name}'" in err and "Traceback" not in err
    assert not out.exists()


def test_bad_pruner_output_fails_its_cells_and_the_others_succeed(bad_pruners, tmp_path):
    summary = run_suite(sweep(["magnitude", *BAD_PRUNERS]), tmp_path, quiet=True)
    rows = {r["cell"]["method"]: r for r in Store(tmp_path / "guards").rows()}
    assert (summary.ok, summary.failed) == (2, len(BAD_PRUNERS))
    assert rows["dense"]["status"] == rows["magnitude"]["status"] == OK
    for name in BAD_PRUNERS:
        assert rows[name]["status"] == FAILED and rows[name]["error"].startswith(f"PluginOutputError: pruner '{name}'")


def test_another_float_dtype_is_cast_to_the_layer_dtype_and_checked_after_the_cast(bad_pruners):
    model = tiny_opt()
    sds_bench.prune(model, None, "upcast", "2:4", quiet=True)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(PluginOutputError, match=r"'overflow' returned \d+ non-finite weights .*in torch.float16"):
        sds_bench.prune(tiny_opt().half(), None, "overflow", "2:4", quiet=True)


@pytest.mark.parametrize("shape", [(7, 9), (5, 13), (3, 130), (16, 64)])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_the_reference_codes_rounding_passes_the_target_check(shape, ratio):
    """Wanda's int(cols*s) per row, SparseGPT's per-block counts (blocks of 1 and 128 columns, threshold or exact),
    magnitude's threshold and Wanda's cumulative variant all reach the target as the engine checks it."""
    torch.manual_seed(0)
    weight, x = torch.randn(shape), torch.randn(64, shape[1])
    stats = LayerStats("layer", nsamples=1, gram=2 * x.T @ x / 64, col_sq=(x**2).sum(0))
    sparsity = Sparsity(ratio)
    outputs = [wanda(weight, stats, sparsity, WandaOptions()), wanda(weight, stats, sparsity, WandaOptions(True)),
               magnitude(weight, stats, sparsity, MagnitudeOptions()),
               magnitude(weight, stats, sparsity, MagnitudeOptions(exact=True))]
    outputs += [sparsegpt(weight, stats, sparsity, SparseGPTOptions(blocksize=b, exact=e)) for b in (1, 128)
                for e in (False, True)]
    for out in outputs:
        pruned_weight("reference", "layer", weight, out, sparsity)


def test_a_pruner_short_of_the_target_by_more_than_the_rounding_fails():
    """The allowance is one weight per row or column (32 of a 32x32 layer's 512 at 50%): 40% is refused."""
    weight = torch.randn(32, 32)
    pruned_weight("exact", "layer", weight, magnitude(weight, None, Sparsity(0.5), MagnitudeOptions(exact=True)),
                  Sparsity(0.5))
    with pytest.raises(PluginOutputError, match=r"'short' returned 40.04% zeros, short of 0.5 \(at least 480 of 1024"):
        pruned_weight("short", "layer", weight, magnitude(weight, None, Sparsity(0.4), MagnitudeOptions()),
                      Sparsity(0.5))


# --- whole-model pruners ----------------------------------------------------------------------------------------

def corrupt(fault):
    """Wanda-sp, then one fault in the model or in what it reports."""
    def prune_model(model, calibration, sparsity, options, **run):
        dense = {k: v.clone() for k, v in model.state_dict().items()}
        record = wanda_sp(model, calibration, sparsity, options, **run)
        if fault == "nan":
            model.model.decoder.layers[1].fc2.bias.data[0] = math.nan
        elif fault == "unpruned":
            model.load_state_dict(dense)
        elif fault == "over-budget":
            record["parameters"]["kept"] = record["parameters"]["prunable"]
        elif fault == "shape":
            next(iter(record["layers"].values()))["shape"] = [3, 3]
        elif fault == "no-such-layer":
            record["layers"]["model.decoder.layers.9.fc1"] = {"shape": [1, 1], "sparsity": 0.5}
        return record
    return prune_model


@pytest.mark.parametrize("fault, message", [
    ("nan", r"left non-finite values in model\.decoder\.layers\.1\.fc2\.bias$"),
    ("unpruned", r"reports 50.00% of model\.decoder\.layers\.0\.\S+ removed, but only 0.00% of its weights are zero"),
    ("over-budget", r"kept \d+ of \d+ prunable parameters, short of the target 0.5"),
    ("shape", r"left model\.decoder\.layers\.0\.\S+ with shape \[\d+, \d+\], not its reported \[3, 3\]"),
    ("no-such-layer", r"reports a layer model\.decoder\.layers\.9\.fc1 that the model does not have"),
])
def test_whole_model_pruner_output_is_checked(monkeypatch, fault, message):
    name = f"sp-{fault}"
    monkeypatch.setitem(registry().pruners, name, Pruner(name, "faulty", prune_model=corrupt(fault),
                                                         options=WandaSpOptions, patterns=("unstructured",)))
    monkeypatch.setitem(registry().origins, f"Pruner:{name}", "test")
    with pytest.raises(PluginOutputError, match=rf"^whole-model pruner '{name}' {message}"):
        sds_bench.prune(tiny_opt(), None, name, 0.5, tiny_calibration(), quiet=True)


@pytest.mark.parametrize("options", [{}, {"shrink": "true"}])
def test_the_builtin_whole_model_pruners_pass_their_checks(options):
    for method in ("wanda-sp", "tyr"):
        opts = {**options, **({"iterations": "1", "generations": "1", "offspring": "2"} if method == "tyr" else {})}
        record = sds_bench.prune(tiny_opt(), None, method, 0.5, tiny_calibration(), options=opts, quiet=True)
        assert record["parameters"]["structural_sparsity"] == pytest.approx(0.5, abs=0.1)


# --- evaluator output --------------------------------------------------------------------------------------------

@pytest.fixture
def flaky_evaluator(monkeypatch):
    """An evaluator whose metric is NaN while state['value'] says so (a diverged model, say)."""
    state = {"value": math.nan}
    monkeypatch.setitem(registry().evaluators, "flaky", Evaluator(
        "flaky", "a metric that may be NaN", evaluate=lambda model, tok, opts: EvalResult({"score": state["value"]})))
    monkeypatch.setitem(registry().origins, "Evaluator:flaky", "test")
    return state


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "high", None])
def test_a_metric_that_is_not_a_finite_number_fails_the_evaluation(flaky_evaluator, value):
    flaky_evaluator["value"] = value
    with pytest.raises(PluginOutputError, match=r"^evaluator 'flaky' gave metric 'score' = .*, not a finite number$"):
        sds_bench.evaluate(tiny_opt(), None, "flaky")


def test_a_nan_metric_is_a_failed_cell_retried_on_the_next_run(flaky_evaluator, tmp_path):
    suite = sweep(["magnitude"], evaluators=["flaky"])
    first = run_suite(suite, tmp_path, quiet=True)
    assert (first.ok, first.failed) == (0, 2)
    assert all("not a finite number" in r["error"] for r in Store(tmp_path / "guards").rows())
    flaky_evaluator["value"] = 0.75
    again = run_suite(suite, tmp_path, quiet=True)
    assert (again.skipped, again.ok, again.failed) == (0, 2, 0)


def test_a_stored_ok_row_with_a_nan_metric_counts_as_failed(tmp_path):
    store = Store(tmp_path)
    store.append({"key": "a", "status": OK, "metrics": {"ppl": math.nan}})
    store.append({"key": "b", "status": OK, "metrics": {"ppl": 12.5}})
    assert store.completed() == {"b"}


# --- option bounds -----------------------------------------------------------------------------------------------

@dataclass
class StepOptions:
    steps: int = option(10, ge=1)
    rate: float = option(0.5, gt=0, lt=1)
    cap: int | None = option(None, le=100)


def test_a_plugin_declares_bounds_that_parse_options_checks(monkeypatch):
    plugin = Pruner("stepper", "bounded options", prune=magnitude, options=StepOptions)
    assert parse_options(plugin, {"steps": "1", "rate": "0.25", "cap": "none"}) == StepOptions(1, 0.25, None)
    for values, message in [({"steps": "0"}, "'steps' must be >= 1; got 0"),
                            ({"rate": "1"}, "'rate' must be < 1; got 1.0"),
                            ({"rate": "0"}, "'rate' must be > 0; got 0.0"),
                            ({"rate": "nan"}, "'rate' must be > 0; got nan"),
                            ({"cap": "101"}, "'cap' must be <= 100; got 101")]:
        with pytest.raises(UserError, match=rf"^'stepper': option {message}$"):
            parse_options(plugin, values)


# --- one writer per results directory, and --results ------------------------------------------------------------

HOLDER = """
import sys, time
from sds_bench.runner import Store
with Store(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_on_the_same_results_is_refused_naming_the_holder(tmp_path, capsys):
    suite_file = tmp_path / "guards.toml"
    suite_file.write_text('name = "guards"\nmodels = ["embedded:opt-tiny"]\nmethods = ["magnitude"]\n'
                          'sparsities = ["2:4"]\nevaluators = ["perplexity"]\n')
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "results" / "guards")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        code = cli.main(["run", str(suite_file), "--results", str(tmp_path / "results"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert f"is in use by another sds-bench run (pid {holder.pid} on " in err
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "results" / "guards" / "rows.jsonl").exists()


def test_the_lock_is_released_and_cleared_when_a_run_ends(tmp_path):
    store = Store(tmp_path / "r")
    with store.lock():
        assert f"pid {os.getpid()} on " in (store.dir / "run.lock").read_text()
        with pytest.raises(UserError, match="is in use by another sds-bench run"):
            with Store(tmp_path / "r").lock():
                pass
    with store.lock():
        pass
    assert (store.dir / "run.lock").read_text() == ""


def test_results_that_is_a_file_is_refused_before_any_cell(tmp_path):
    results = tmp_path / "results.txt"
    results.write_text("not a directory")
    with pytest.raises(UserError, match=r"--results .*results.txt is a file; give a directory"):
        run_suite(sweep(["magnitude"]), results, quiet=True)
    assert results.read_text() == "not a directory"


@pytest.mark.parametrize("through", ["api", "cli"])
def test_calibration_for_a_method_that_needs_none_is_one_warning_and_never_read(through, opt_dir, tmp_path, caplog):
    """Magnitude reads no data: a calibration file given anyway (garbage here) is not opened; one warning says so."""
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a token file")
    if through == "api":
        record = sds_bench.prune(tiny_opt(), None, "magnitude", "2:4", str(garbage))
        assert record["calibration"] is None
    else:
        assert cli.main(["prune", str(opt_dir), "--method", "magnitude", "--sparsity", "2:4", "--calibration",
                         str(garbage), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["sds-bench: warning: 'magnitude' needs no calibration data; the calibration given is ignored"]
