"""The pluggy registry: built-ins, entry-point plugins, duplicates, broken plugins, API version, option validation."""

import sys
import textwrap

import pytest

from sds_bench.errors import UserError
from sds_bench.plugin import parse_options
from sds_bench.registry import PluginError, registry


def install_fake_distribution(tmp_path, monkeypatch, dist: str, module: str, source: str, ep_name: str | None = None):
    """A real installed distribution (dist-info on sys.path) declaring an `sds_bench` entry point."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{dist}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[sds_bench]\n{ep_name or module} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("SDS_BENCH_PLUGINS")
    sys.modules.pop(module, None)


PLUGIN = """
from sds_bench.hookspecs import hookimpl
from sds_bench.plugin import Pruner

@hookimpl
def register_pruners(register):
    register(Pruner("{name}", "a test pruner", prune=lambda w, s, sp, o: w * 0{extra}))
"""


def test_builtins_registered_with_origin():
    reg = registry()
    assert {"magnitude", "wanda", "sparsegpt"} <= set(reg.pruners) and "perplexity" in reg.evaluators
    assert reg.origins["Pruner:wanda"] == "builtin"


def test_entry_point_plugin_is_discovered_with_its_distribution(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, monkeypatch, "zeroer-dist", "zeroer_plugin", PLUGIN.format(name="zeroer", extra=""))
    reg = registry(refresh=True)
    assert "zeroer" in reg.pruners
    assert reg.origins["Pruner:zeroer"] == "zeroer_plugin (zeroer-dist 1.2.3)"


def test_env_variable_restricts_entry_points(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, monkeypatch, "zeroer-dist", "zeroer_plugin", PLUGIN.format(name="zeroer", extra=""))
    monkeypatch.setenv("SDS_BENCH_PLUGINS", "none")
    assert "zeroer" not in registry(refresh=True).pruners
    monkeypatch.setenv("SDS_BENCH_PLUGINS", "zeroer-dist")
    assert "zeroer" in registry(refresh=True).pruners


def test_duplicate_name_names_both_plugins(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, monkeypatch, "evil-dist", "evil_plugin", PLUGIN.format(name="wanda", extra=""))
    with pytest.raises(PluginError, match=r"'wanda' registered twice: by builtin and by evil_plugin \(evil-dist 1.2.3\)"):
        registry(refresh=True)


def test_broken_plugin_names_its_distribution(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, monkeypatch, "broken-dist", "broken_plugin", "import not_a_module_anywhere\n")
    with pytest.raises(PluginError, match="'broken_plugin' from distribution 'broken-dist' failed to import: ModuleNotFoundError"):
        registry(refresh=True)


def test_unknown_hook_is_rejected_by_check_pending(tmp_path, monkeypatch):
    source = "from sds_bench.hookspecs import hookimpl\n\n@hookimpl\ndef register_prunerz(register):\n    pass\n"
    install_fake_distribution(tmp_path, monkeypatch, "typo-dist", "typo_plugin", source)
    with pytest.raises(PluginError, match="typo_plugin"):
        registry(refresh=True)


def test_other_api_version_is_refused(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, monkeypatch, "old-dist", "old_plugin",
                              PLUGIN.format(name="old", extra="").replace('"a test pruner",', '"a test pruner", api_version=0,'))
    with pytest.raises(PluginError, match="old_plugin \\(old-dist 1.2.3\\) targets sds-bench plugin API 0"):
        registry(refresh=True)


def test_unknown_method_lists_known():
    with pytest.raises(UserError, match="unknown method 'nope'; known: .*magnitude.*wanda"):
        registry().pruner("nope")


def test_options_are_typed_and_validated():
    sparsegpt = registry().pruner("sparsegpt")
    opts = parse_options(sparsegpt, {"blocksize": "64", "percdamp": "0.1", "exact": "yes"})
    assert (opts.blocksize, opts.percdamp, opts.exact) == (64, 0.1, True)
    with pytest.raises(UserError, match="'sparsegpt' has no option 'blocksz'; its options: blocksize"):
        parse_options(sparsegpt, {"blocksz": "64"})
    with pytest.raises(UserError, match="'sparsegpt': bad value for option 'blocksize': 'big' is not a int"):
        parse_options(sparsegpt, {"blocksize": "big"})
