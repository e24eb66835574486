"""The hooks a plugin may implement. Built-in pruners and evaluators use exactly these hooks too."""

import pluggy

hookspec = pluggy.HookspecMarker("sds_bench")
hookimpl = pluggy.HookimplMarker("sds_bench")


@hookspec
def register_pruners(register):
    """Call ``register(Pruner(...))`` once for each pruner this plugin provides."""


@hookspec
def register_evaluators(register):
    """Call ``register(Evaluator(...))`` once for each evaluator this plugin provides."""
