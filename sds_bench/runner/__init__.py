"""Sweeps: suites (TOML) expand into cells, cells run locally or through submitit, rows land in an atomic store."""

from sds_bench.runner.cells import Cell, expand, prune_groups, select
from sds_bench.runner.execute import Summary, plan, run_suite
from sds_bench.runner.store import Store
from sds_bench.runner.suite import Suite, available_suites, load_suite, suite_from_dict, toml_value

__all__ = ["Cell", "Store", "Suite", "Summary", "available_suites", "expand", "load_suite", "plan", "prune_groups",
           "run_suite", "select", "suite_from_dict", "toml_value"]
