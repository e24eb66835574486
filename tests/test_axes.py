"""A third-party statistic, allocator and refinement (tests/axes_plugin), installed for real and used end to end
through the CLI and a sweep; and the built-in axes (OWL allocation, the kl evaluator) at their boundaries."""

import json
from pathlib import Path

import pytest
import torch

import sds_bench
from sds_bench.cli import main
from sds_bench.errors import UserError
from sds_bench.runner import Store
from sds_bench.stats import LayerStats
from sds_bench.testing import tiny_calibration, tiny_opt

PLUGIN = Path(__file__).resolve().parent / "axes_plugin"


@pytest.fixture
def calib_file(tmp_path):
    path = tmp_path / "calib.pt"
    torch.save(torch.randint(0, 320, (4, 32), generator=torch.Generator().manual_seed(0)), path)
    return path


@pytest.mark.slow
def test_third_party_statistic_allocator_and_refinement_end_to_end(pip_install, opt_dir, calib_file, tmp_path, capsys):
    pip_install(PLUGIN)
    assert main(["plugins"]) == 0
    listing = {tuple(line.split()[:2]) for line in capsys.readouterr().out.splitlines()}
    assert {("statistic", "col_absmax"), ("allocator", "ramp"), ("refinement", "swap"),
            ("pruner", "swap-wanda"), ("pruner", "swap-sparsegpt")} <= listing
    out = tmp_path / "out"
    argv = ["prune", str(opt_dir), "--method", "swap-wanda", "--sparsity", "0.5", "--allocation", "ramp",
            "-o", "allocation.delta=0.25", "--calibration", str(calib_file), "--output", str(out), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "pruning.json").read_text())
    assert record["allocation"]["name"] == "ramp" and record["allocation"]["options"] == {"delta": 0.25}
    allocated = [layer["allocated"] for layer in record["layers"].values()]
    assert sorted(set(allocated)) == pytest.approx([0.25, 0.75])  # two blocks: target -+ delta
    for layer in record["layers"].values():
        assert layer["swapped_rows"] == layer["shape"][0]
        assert layer["sparsity"] == pytest.approx(layer["allocated"], abs=1 / layer["shape"][1])
    assert record["measured_sparsity"] == pytest.approx(0.5, abs=0.02)

    suite = tmp_path / "axes.toml"
    suite.write_text('name = "axes"\nmodels = ["embedded:opt-tiny"]\nsparsities = ["50%", "2:4"]\n'
                     'methods = ["wanda", { name = "swap-wanda ramp", pruner = "swap-wanda", allocation = "ramp", '
                     'allocation_options = { delta = 0.1 }, sparsities = ["50%"] }]\n'
                     '[calibration]\nsource = "embedded"\nnsamples = 4\nseqlen = 64\n'
                     '[[evaluators]]\nname = "perplexity"\noptions = { dataset = "embedded", max_windows = 2, seqlen = 64 }\n')
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--quiet"]) == 0
    rows = Store(tmp_path / "results" / "axes").rows()
    assert sorted((r["cell"]["method"], r["cell"]["pattern"], r["status"]) for r in rows) == [
        ("dense", "dense", "ok"), ("swap-wanda ramp", "50%", "ok"), ("wanda", "2:4", "ok"), ("wanda", "50%", "ok")]
    ramped = next(r for r in rows if r["cell"]["method"] == "swap-wanda ramp")
    assert ramped["pruning"]["allocation"]["name"] == "ramp"

    capsys.readouterr()
    bad = [*argv[:argv.index("-o")], "-o", "allocation.delta=0.45", "--calibration", str(calib_file),
           "--output", str(tmp_path / "bad"), "--quiet", "--sparsity", "0.7"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "allocator 'ramp' returned sparsity" in err and "[0, 1)" in err
    assert not (tmp_path / "bad").exists()


def test_owl_allocation_records_each_layer_and_keeps_the_target():
    model = tiny_opt(layers=4)
    record = sds_bench.prune(model, None, "wanda", "0.5", tiny_calibration(), allocation="owl",
                             allocation_options={"lam": "0.1"}, quiet=True)
    blocks = {}
    for name, layer in record["layers"].items():
        blocks.setdefault(name.split(".")[3], set()).add(layer["allocated"])
    assert all(len(values) == 1 for values in blocks.values())  # one sparsity per block
    per_block = [values.pop() for values in blocks.values()]
    assert len(set(per_block)) == 4 and max(per_block) - min(per_block) == pytest.approx(0.2)
    assert sum(per_block) / 4 == pytest.approx(0.5)
    assert record["allocation"] == {"name": "owl", "origin": "builtin", "options": {"m": 5.0, "lam": 0.1}}


@pytest.mark.parametrize("method, sparsity, allocation, message", [
    ("wanda", "2:4", "owl", "allocates unstructured sparsity only"),
    ("tyr", "0.5", "owl", "needs a per-layer pruner"),
    ("wanda", "0.5", "nosuch", "unknown allocation 'nosuch'"),
])
def test_allocation_refused_before_any_work(method, sparsity, allocation, message):
    with pytest.raises(UserError, match=message):
        sds_bench.api.check_prune_args(method, sparsity, allocation=allocation)


def test_kl_is_zero_against_itself_and_grows_with_pruning(tokenizer):
    dense = tiny_opt()
    options = {"dataset": "file", "data_file": str(Path(__file__)), "seqlen": 32, "max_windows": 4, "quiet": True}
    same = sds_bench.evaluate(tiny_opt(), tokenizer, "kl", options, dense_model=dense).metrics
    assert same["kl_file"] == pytest.approx(0, abs=1e-6) and same["top1_file"] == 1
    pruned = tiny_opt()
    sds_bench.prune(pruned, None, "magnitude", "0.5", quiet=True)
    half = sds_bench.evaluate(pruned, tokenizer, "kl", options, dense_model=dense).metrics
    sds_bench.prune(pruned, None, "magnitude", "0.9", quiet=True)
    most = sds_bench.evaluate(pruned, tokenizer, "kl", options, dense_model=dense).metrics
    assert 0 < half["kl_file"] < most["kl_file"] and most["top1_file"] < 1
    with pytest.raises(UserError, match="compares with the dense model"):
        sds_bench.evaluate(pruned, tokenizer, "kl", options)


def test_layer_stats_gives_a_built_in_statistic_as_field_and_by_name_however_it_was_built():
    """The engine and the allocation pass build LayerStats from `values`, older plugins and tests from fields: a pruner
    or allocator reading either spelling gets the same tensor, and a statistic never gathered is named."""
    col_sq, extra = torch.rand(8), torch.rand(8)
    from_values = LayerStats("l", values={"col_sq": col_sq, "col_absmax": extra})
    assert from_values.col_sq is col_sq and from_values["col_sq"] is col_sq and from_values["col_absmax"] is extra
    from_field = LayerStats("l", col_sq=col_sq)
    assert from_field["col_sq"] is col_sq and from_field.values["col_sq"] is col_sq
    from_field.gram = gram = torch.eye(8)
    assert from_field["gram"] is gram
    with pytest.raises(KeyError, match="'col_var' was not gathered for l"):
        from_field["col_var"]
