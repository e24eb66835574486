"""The plugin contract kit holds for every built-in per-layer pruner."""

import pytest

from sds_bench.testing import check_in_sweep, check_pruner

BUILTINS = ["magnitude", "wanda", "sparsegpt", "sds-magnitude", "sds-wanda", "sds-sparsegpt"]


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_keeps_the_contract(name):
    check_pruner(name, sweep=False)


@pytest.mark.slow
def test_builtin_runs_in_a_sweep():
    check_in_sweep("sds-wanda")


def test_contract_catches_a_pruner_that_prunes_too_much():
    from dataclasses import replace

    from sds_bench.registry import registry

    reg = registry()
    reg.pruners["greedy"] = replace(reg.pruners["magnitude"], name="greedy", prune=lambda w, s, sp, o: w * 0)
    reg.origins["Pruner:greedy"] = "test"
    with pytest.raises(AssertionError, match="prunes more than"):
        check_pruner("greedy", patterns=("2:4",), refinements=False, sweep=False)


def test_contract_checks_only_the_patterns_a_pruner_declares():
    from dataclasses import replace

    from sds_bench.registry import registry

    reg = registry()
    reg.pruners["unstructured-only"] = replace(reg.pruners["magnitude"], name="unstructured-only",
                                               patterns=("unstructured",))
    reg.origins["Pruner:unstructured-only"] = "test"
    check_pruner("unstructured-only", refinements=False)  # 2:4 and 4:8 skipped; the sweep runs at 50%
