"""The hooks a plugin may implement. The built-ins use exactly these hooks too."""

import pluggy

hookspec = pluggy.HookspecMarker("sds_bench")
hookimpl = pluggy.HookimplMarker("sds_bench")


@hookspec
def register_pruners(register):
    """Call ``register(Pruner(...))`` once for each pruner this plugin provides."""


@hookspec
def register_evaluators(register):
    """Call ``register(Evaluator(...))`` once for each evaluator this plugin provides."""


@hookspec
def register_statistics(register):
    """Call ``register(Statistic(...))`` once for each input statistic this plugin provides (pruners name it in needs)."""


@hookspec
def register_refinements(register):
    """Call ``register(Refinement(...))`` once for each refinement this plugin provides (it yields NAME-P for every
    per-layer pruner P)."""


@hookspec
def register_allocators(register):
    """Call ``register(Allocator(...))`` once for each per-layer sparsity allocation this plugin provides."""
