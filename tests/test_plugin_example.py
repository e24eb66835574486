"""The example plugin in plugins/ and the guide's minimal example, installed for real and used like built-ins."""

import re
from pathlib import Path

import pytest

from sds_bench.cli import main
from sds_bench.testing import check_pruner

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ria_plugin_installs_lists_prunes_and_keeps_the_contract(pip_install, opt_dir, tmp_path, capsys):
    pip_install(ROOT / "plugins" / "sds-bench-ria")
    assert main(["plugins"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if " ria " in row)
    assert "sds-bench-ria 0.1.0" in line
    calib = tmp_path / "calib.pt"
    import torch

    torch.save(torch.randint(0, 320, (4, 32), generator=torch.Generator().manual_seed(0)), calib)
    for extra in ([], ["--method", "sds", "--base", "ria", "-o", "iterations=5"]):
        argv = ["prune", str(opt_dir), "--method", "ria", "--sparsity", "2:4", "--calibration", str(calib),
                "--output", str(tmp_path / "out"), "--quiet", *extra]
        assert main(argv) == 0, capsys.readouterr().err
    check_pruner("ria")


def guide_blocks() -> tuple[str, str]:
    text = (ROOT / "docs" / "plugins.md").read_text()
    toml = next(b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "entry-points" in b)
    module = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "register_pruners" in b)
    return toml, module


def test_guide_example_is_short():
    toml, module = guide_blocks()
    assert len(toml.splitlines()) + len(module.splitlines()) < 40


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
