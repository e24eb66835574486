"""The plugin manager: built-in plugins and entry points of the group ``sds_bench``, looked up by name.

``SDS_BENCH_PLUGINS`` controls which entry points load: unset loads all, ``none`` (or empty) loads none,
and a comma-separated list loads only those entry-point or distribution names.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass

import pluggy

from sds_bench import hookspecs
from sds_bench.errors import UserError
from sds_bench.plugin import API_VERSION, Evaluator, Pruner

BUILTINS = (
    "sds_bench.pruners.magnitude",
    "sds_bench.pruners.wanda",
    "sds_bench.pruners.sparsegpt",
    "sds_bench.pruners.sds",
    "sds_bench.pruners.tyr",
    "sds_bench.eval.perplexity",
    "sds_bench.eval.zeroshot",
)
ENV = "SDS_BENCH_PLUGINS"


class PluginError(UserError):
    """A plugin that fails to load, registers a duplicate name, or targets another API version."""


@dataclass
class Registry:
    """Every pruner and evaluator by name, and where each came from ('builtin' or 'dist version')."""

    pruners: dict[str, Pruner]
    evaluators: dict[str, Evaluator]
    origins: dict[str, str]

    def pruner(self, name: str) -> Pruner:
        if name not in self.pruners:
            raise UserError(f"unknown method {name!r}; known: {', '.join(sorted(self.pruners))}")
        return self.pruners[name]

    def evaluator(self, name: str) -> Evaluator:
        if name not in self.evaluators:
            raise UserError(f"unknown evaluator {name!r}; known: {', '.join(sorted(self.evaluators))}")
        return self.evaluators[name]


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, str]]:
    """A PluginManager with the built-ins and the allowed entry points registered, and each plugin's origin."""
    pm = pluggy.PluginManager("sds_bench")
    pm.add_hookspecs(hookspecs)
    origin = {}
    for name in BUILTINS:
        pm.register(importlib.import_module(name), name=name)
        origin[name] = "builtin"
    allowed = os.environ.get(ENV)
    wanted = None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()} - {"none"}
    for ep in importlib.metadata.entry_points(group="sds_bench"):
        dist = ep.dist.name if ep.dist else "?"
        if wanted is not None and ep.name not in wanted and dist not in wanted:
            continue
        try:
            module = ep.load()
        except Exception as e:
            raise PluginError(f"plugin {ep.name!r} from distribution {dist!r} failed to import: {type(e).__name__}: {e}") from e
        if pm.is_registered(module):
            continue
        pm.register(module, name=ep.name)
        origin[ep.name] = f"{dist} {ep.dist.version if ep.dist else ''}".strip()
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        name = pm.get_name(e.plugin)
        raise PluginError(f"plugin {name!r} ({origin.get(name)}): {e}") from e
    return pm, origin


def collect(pm: pluggy.PluginManager, origin: dict[str, str]) -> Registry:
    """Call every plugin's register hooks with a callback that remembers which plugin registered what."""
    reg = Registry({}, {}, {})
    for hook, table, kind in (
        (pm.hook.register_pruners, reg.pruners, Pruner),
        (pm.hook.register_evaluators, reg.evaluators, Evaluator),
    ):
        for impl in hook.get_hookimpls():
            source = origin.get(impl.plugin_name, impl.plugin_name)
            source = source if source == "builtin" else f"{impl.plugin_name} ({source})"

            def register(item, _source=source, _table=table, _kind=kind):
                key = f"{_kind.__name__}:{getattr(item, 'name', None)}"
                if not isinstance(item, _kind):
                    raise PluginError(f"{_source} registered {item!r}, not a {_kind.__name__}")
                if item.api_version != API_VERSION:
                    raise PluginError(f"{_source} targets sds-bench plugin API {item.api_version}, this is API {API_VERSION}")
                if item.name in _table:
                    raise PluginError(f"{_kind.__name__.lower()} name {item.name!r} registered twice: "
                                      f"by {reg.origins[key]} and by {_source}")
                _table[item.name] = item
                reg.origins[key] = _source

            impl.function(register=register)
    return reg


_REGISTRY: Registry | None = None


def registry(refresh: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = collect(*plugin_manager())
    return _REGISTRY


def origin_of(kind: str, name: str) -> str:
    """Where a pruner ('Pruner') or evaluator ('Evaluator') came from."""
    return registry().origins[f"{kind}:{name}"]
