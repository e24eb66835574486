"""The example plugin in plugins/ and the guide's minimal example, installed for real and used like built-ins."""

import re
import sys
import types
from pathlib import Path

import pytest
import torch

import sds_bench
from sds_bench import LayerStats, Pruner, Sparsity
from sds_bench.cli import main
from sds_bench.pruners.wanda import WandaOptions, wanda
from sds_bench.testing import check_pruner

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ria_plugin_installs_lists_prunes_and_keeps_the_contract(pip_install, opt_dir, tmp_path, capsys):
    pip_install(ROOT / "plugins" / "sds-bench-ria")
    assert main(["plugins"]) == 0
    listing = {row.split()[1]: row for row in capsys.readouterr().out.splitlines()[2:]}
    assert "sds-bench-ria 0.1.0" in listing["ria"]
    for refined in ("sds-ria", "dsnot-ria"):  # derived from the plugin's one pruner, no code of its own
        assert "base ria (sds-bench-ria 0.1.0)" in listing[refined]
    calib = tmp_path / "calib.pt"
    torch.save(torch.randint(0, 320, (4, 32), generator=torch.Generator().manual_seed(0)), calib)
    for extra in ([], ["--method", "sds", "--base", "ria"], ["--method", "dsnot-ria"]):
        argv = ["prune", str(opt_dir), "--method", "ria", "--sparsity", "2:4", "--calibration", str(calib),
                "--output", str(tmp_path / "out"), "--overwrite", "--quiet", *extra]
        assert main(argv) == 0, capsys.readouterr().err
    check_pruner("ria")


def guide_blocks() -> tuple[str, str]:
    text = (ROOT / "docs" / "plugins.md").read_text()
    toml = next(b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "entry-points" in b)
    module = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "register_pruners" in b)
    return toml, module


def guide_pruner(monkeypatch) -> Pruner:
    """The pruner the guide's module registers, run from the guide's text as a module of its own."""
    _, code = guide_blocks()
    module = types.ModuleType("sds_bench_halfmag")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    registered = []
    module.register_pruners(registered.append)
    (pruner,) = registered
    return pruner


@pytest.mark.parametrize("spec", ["0.5", "2:4"])
def test_guide_example_is_wanda_at_power_one_and_row_magnitude_at_zero(monkeypatch, spec):
    """What the guide says of its example: p = 1 is Wanda; p = 0 ignores the activations."""
    pruner = guide_pruner(monkeypatch)
    g = torch.Generator().manual_seed(0)
    weight, col_sq = torch.randn(8, 16, generator=g), torch.rand(16, generator=g) * 10
    sparsity = Sparsity.parse(spec)
    wanda_out = wanda(weight, LayerStats("l", col_sq=col_sq), sparsity, WandaOptions())
    assert torch.equal(pruner.prune(weight, LayerStats("l", col_sq=col_sq), sparsity, pruner.options()), wanda_out)
    flat = LayerStats("l", col_sq=torch.ones(16))
    at_zero = pruner.prune(weight, LayerStats("l", col_sq=col_sq), sparsity, pruner.options(power=0.0))
    assert torch.equal(at_zero, wanda(weight, flat, sparsity, WandaOptions()))
    assert not torch.equal(at_zero, wanda_out)


@pytest.mark.slow
def test_guide_example_works_as_written(pip_install, tmp_path, capsys):
    toml, module = guide_blocks()
    package = tmp_path / "halfmag"
    package.mkdir()
    (package / "pyproject.toml").write_text(toml)
    (package / "sds_bench_halfmag.py").write_text(module)
    pip_install(package)
    assert main(["plugins"]) == 0
    assert "halfmag" in capsys.readouterr().out
    check_pruner("halfmag")


def guide_items() -> list:
    """What every Python block of the guide registers, each block run as a module of its own."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    items = []
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
        if "@hookimpl" not in code:
            continue
        namespace: dict = {"__name__": f"guide_block_{i}"}
        exec(compile(code, f"docs/plugins.md block {i}", "exec"), namespace)
        for hook in ("register_pruners", "register_statistics", "register_allocators", "register_refinements",
                     "register_evaluators"):
            if hook in namespace:
                namespace[hook](items.append)
    return items


def test_every_guide_example_registers_and_runs_end_to_end(tokenizer):
    """The guide's pruner, statistic, allocator, refinement and evaluator, registered as written, work together."""
    from sds_bench.registry import KINDS, derive_refined, registry
    from sds_bench.testing import tiny_calibration, tiny_opt

    reg = registry()
    items = guide_items()
    assert sorted(type(item).__name__ for item in items) == ["Allocator", "Evaluator", "Pruner", "Refinement",
                                                             "Statistic"]
    for item in items:
        getattr(reg, KINDS[type(item)])[item.name] = item
        reg.origins[f"{type(item).__name__}:{item.name}"] = "guide"
    derive_refined(reg)
    assert {"swap-halfmag", "swap-wanda", "sds-halfmag", "dsnot-halfmag"} <= set(reg.pruners)
    model = tiny_opt()
    record = sds_bench.prune(model, None, "swap-halfmag", "0.5", tiny_calibration(), allocation="ramp",
                             allocation_options={"delta": "0.2"}, quiet=True)
    assert sorted({layer["allocated"] for layer in record["layers"].values()}) == pytest.approx([0.3, 0.7])
    options = {"dataset": "file", "data_file": str(Path(__file__)), "seqlen": 32, "max_windows": 2}
    agree = sds_bench.evaluate(model, tokenizer, "agree", options, dense_model=tiny_opt()).metrics["agree_file"]
    assert 0 < agree < 1
