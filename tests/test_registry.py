"""The pluggy registry: built-ins, entry-point plugins, duplicates, broken plugins, API version, option validation."""

import logging
import re
import sys
import textwrap

import pytest

from sds_bench import cli
from sds_bench.errors import UserError
from sds_bench.plugin import parse_options
from sds_bench.registry import PluginError, registry


def install_fake_distribution(tmp_path, monkeypatch, dist: str, module: str, source: str, ep_name: str | None = None):
    """A real installed distribution (dist-info on sys.path) declaring an `sds_bench` entry point."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{dist}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[sds_bench]\n{ep_name or module} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("SDS_BENCH_PLUGINS", raising=False)
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


def skipped_with_one_warning(caplog, plugin: str, why: str) -> None:
    """The registry loads with the built-ins, and one warning line names the plugin, its distribution, why, and
    SDS_BENCH_PLUGINS."""
    with caplog.at_level(logging.WARNING, logger="sds_bench.registry"):
        reg = registry(refresh=True)
    assert "wanda" in reg.pruners and reg.origins["Pruner:wanda"] == "builtin" and "perplexity" in reg.evaluators
    [message] = [r.getMessage() for r in caplog.records]
    assert "\n" not in message and re.search(plugin, message) and "SDS_BENCH_PLUGINS" in message
    assert re.search(why, message), message
    assert any(re.search(plugin, source) and re.search(why, reason) for source, reason in reg.broken.items())


def test_duplicate_name_names_both_plugins_and_skips_the_second(tmp_path, monkeypatch, caplog):
    install_fake_distribution(tmp_path, monkeypatch, "evil-dist", "evil_plugin", PLUGIN.format(name="wanda", extra=""))
    skipped_with_one_warning(caplog, r"evil_plugin \(evil-dist 1.2.3\)",
                             r"'wanda' registered twice: by builtin and by evil_plugin \(evil-dist 1.2.3\)")
    assert registry().pruners["wanda"].description.startswith("Wanda")


def test_plugin_that_fails_to_import_is_skipped_and_named(tmp_path, monkeypatch, caplog):
    install_fake_distribution(tmp_path, monkeypatch, "broken-dist", "broken_plugin", "import not_a_module_anywhere\n")
    skipped_with_one_warning(caplog, r"broken_plugin \(broken-dist 1.2.3\)", "failed to import: ModuleNotFoundError")


def test_plugin_whose_hook_raises_is_skipped_and_the_others_keep_working(tmp_path, monkeypatch, caplog):
    install_fake_distribution(tmp_path / "a", monkeypatch, "good-dist", "good_plugin", PLUGIN.format(name="good", extra=""))
    raising = PLUGIN.format(name="half", extra="") + "    raise RuntimeError('no GPU here\\nsecond line')\n"
    install_fake_distribution(tmp_path / "b", monkeypatch, "raising-dist", "raising_plugin", raising)
    skipped_with_one_warning(caplog, r"raising_plugin \(raising-dist 1.2.3\)", "RuntimeError: no GPU here")
    reg = registry()
    assert "second line" not in caplog.text
    assert "good" in reg.pruners and "half" not in reg.pruners  # nothing of the broken plugin stays


def test_unknown_hook_is_rejected_by_check_pending(tmp_path, monkeypatch, caplog):
    source = "from sds_bench.hookspecs import hookimpl\n\n@hookimpl\ndef register_prunerz(register):\n    pass\n"
    install_fake_distribution(tmp_path, monkeypatch, "typo-dist", "typo_plugin", source)
    skipped_with_one_warning(caplog, r"typo_plugin \(typo-dist 1.2.3\)", "register_prunerz")


def test_other_api_version_is_refused(tmp_path, monkeypatch, caplog):
    install_fake_distribution(tmp_path, monkeypatch, "old-dist", "old_plugin",
                              PLUGIN.format(name="old", extra="").replace('"a test pruner",', '"a test pruner", api_version=0,'))
    skipped_with_one_warning(caplog, r"old_plugin \(old-dist 1.2.3\)", "targets sds-bench plugin API 0, this is API 1")
    assert "old" not in registry().pruners


def test_plugins_command_shows_a_broken_plugin(tmp_path, monkeypatch, capsys):
    install_fake_distribution(tmp_path, monkeypatch, "broken-dist", "broken_plugin", "raise ValueError('bad')\n")
    assert cli.main(["plugins"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"broken_plugin \(broken-dist 1.2.3\)\s+BROKEN, skipped: failed to import: ValueError: bad", listing)
    assert re.search(r"pruner\s+wanda\s+builtin", listing)


def test_env_variable_naming_no_installed_plugin_lists_the_installed(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, monkeypatch, "zeroer-dist", "zeroer_plugin", PLUGIN.format(name="zeroer", extra=""))
    monkeypatch.setenv("SDS_BENCH_PLUGINS", "zeroer-dsit")
    with pytest.raises(PluginError, match=r"SDS_BENCH_PLUGINS names zeroer-dsit, which matches no installed plugin; "
                                          r"installed: .*zeroer_plugin \(zeroer-dist\)"):
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
