"""The plugin manager: built-in plugins and entry points of the group ``sds_bench``, looked up by name.

``SDS_BENCH_PLUGINS`` controls which entry points load: unset loads all, ``none`` (or empty) loads none,
and a comma-separated list loads only those entry-point or distribution names (a name matching none is an error).
A plugin that fails to import, to validate or to register is skipped with one warning naming it and its
distribution; the built-ins and the other plugins load, and `Registry.broken` keeps why.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from sds_bench import hookspecs
from sds_bench.errors import UserError
from sds_bench.plugin import API_VERSION, Allocator, Evaluator, Pruner, Refinement, Statistic

BUILTINS = (
    "sds_bench.pruners.magnitude",
    "sds_bench.pruners.wanda",
    "sds_bench.pruners.sparsegpt",
    "sds_bench.pruners.sds",
    "sds_bench.pruners.tyr",
    "sds_bench.pruners.dsnot",
    "sds_bench.stats",
    "sds_bench.allocation",
    "sds_bench.pruners.owl",
    "sds_bench.eval.perplexity",
    "sds_bench.eval.zeroshot",
    "sds_bench.eval.kl",
)
ENV = "SDS_BENCH_PLUGINS"
log = logging.getLogger(__name__)


class PluginError(UserError):
    """A plugin that fails to load or to register (duplicate name, another API version), or an SDS_BENCH_PLUGINS
    entry that names no installed plugin."""


KINDS = {Pruner: "pruners", Evaluator: "evaluators", Statistic: "statistics", Refinement: "refinements",
         Allocator: "allocators"}
"""Each kind a plugin registers, and the Registry field holding it by name (its hook: register_FIELD)."""


@dataclass
class Registry:
    """Every pruner, evaluator, statistic, refinement and allocator by name, where each came from ('builtin' or 'plugin (dist
    version)', keyed 'Kind:name'), and the plugins skipped as broken, by 'plugin (dist version)', with why. The
    pruners include NAME-P for every refinement NAME and per-layer pruner P (`derive_refined`)."""

    pruners: dict[str, Pruner] = field(default_factory=dict)
    evaluators: dict[str, Evaluator] = field(default_factory=dict)
    statistics: dict[str, Statistic] = field(default_factory=dict)
    refinements: dict[str, Refinement] = field(default_factory=dict)
    allocators: dict[str, Allocator] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)

    def pruner(self, name: str) -> Pruner:
        if name not in self.pruners:
            raise UserError(f"unknown method {name!r}; known: {', '.join(sorted(self.pruners))}")
        return self.pruners[name]

    def evaluator(self, name: str) -> Evaluator:
        if name not in self.evaluators:
            raise UserError(f"unknown evaluator {name!r}; known: {', '.join(sorted(self.evaluators))}")
        return self.evaluators[name]

    def allocator(self, name: str) -> Allocator:
        if name not in self.allocators:
            raise UserError(f"unknown allocation {name!r}; known: {', '.join(sorted(self.allocators))}")
        return self.allocators[name]

    def statistic(self, name: str, needed_by: str) -> Statistic:
        if name not in self.statistics:
            raise UserError(f"{needed_by!r} needs statistic {name!r}, which no installed plugin registers; "
                            f"registered: {', '.join(sorted(self.statistics))}")
        return self.statistics[name]


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, str], dict[str, str]]:
    """A PluginManager with the built-ins and the allowed entry points that load and validate, each plugin's
    origin, and the plugins skipped as broken."""
    pm = pluggy.PluginManager("sds_bench")
    pm.add_hookspecs(hookspecs)
    origin, broken = {}, {}
    for name in BUILTINS:
        pm.register(importlib.import_module(name), name=name)
        origin[name] = "builtin"
    for ep in selected_entry_points():
        origin[ep.name] = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        try:
            module = ep.load()
        except Exception as e:
            broken[_label(ep.name, origin)] = skipped(_label(ep.name, origin), f"failed to import: {_one_line(e)}")
            continue
        if pm.is_registered(module):
            continue
        try:
            pm.register(module, name=ep.name)
            pm.check_pending()
        except pluggy.PluginValidationError as e:
            pm.unregister(module)
            broken[_label(ep.name, origin)] = skipped(_label(ep.name, origin), _one_line(e))
    return pm, origin, broken


def selected_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The installed ``sds_bench`` entry points that SDS_BENCH_PLUGINS allows; a name it gives that matches no
    entry point or distribution is an error listing the installed ones."""
    installed = list(importlib.metadata.entry_points(group="sds_bench"))
    allowed = os.environ.get(ENV)
    if allowed is None:
        return installed
    wanted = {a.strip() for a in allowed.split(",") if a.strip()} - {"none"}
    names = {ep.name: {ep.name, ep.dist.name if ep.dist else ep.name} for ep in installed}
    if unknown := wanted - set().union(*names.values()):
        listing = ", ".join(f"{ep.name} ({ep.dist.name if ep.dist else '?'})" for ep in installed) or "none"
        raise PluginError(f"{ENV} names {', '.join(sorted(unknown))}, which matches no installed plugin; "
                          f"installed: {listing}")
    return [ep for ep in installed if names[ep.name] & wanted]


def collect(pm: pluggy.PluginManager, origin: dict[str, str], broken: dict[str, str] | None = None) -> Registry:
    """Call each plugin's register hooks; a plugin whose hook raises or registers something refused is skipped
    whole (a built-in's failure is a bug, and raises). Then derive the refined pruners."""
    reg = Registry(broken=dict(broken or {}))
    hooks: dict[str, list] = {}
    for kind, field_name in KINDS.items():
        for impl in getattr(pm.hook, f"register_{field_name}").get_hookimpls():
            hooks.setdefault(impl.plugin_name, []).append((impl, kind))
    for plugin, impls in hooks.items():
        source = _label(plugin, origin)
        staged: dict[str, Any] = {}
        try:
            for impl, kind in impls:
                impl.function(register=functools.partial(_stage, reg, staged, kind, source))
        except Exception as e:
            if source == "builtin":
                raise
            reg.broken[source] = skipped(source, _one_line(e))
            continue
        for key, item in staged.items():
            getattr(reg, KINDS[type(item)])[item.name] = item
            reg.origins[key] = source
    derive_refined(reg)
    return reg


def derive_refined(reg: Registry) -> None:
    """Add NAME (with --base) and NAME-P for every refinement NAME and every per-layer pruner P that shares a pattern
    with it; a pruner registered under that name itself wins. Origin: the refinement's, and P's when they differ."""
    bases = [p for p in reg.pruners.values() if p.prune is not None and p.wraps is None]
    for refinement in reg.refinements.values():
        source = reg.origins[f"Refinement:{refinement.name}"]
        for base in (None, *bases):
            pruner = refinement.pruner(base)
            if pruner.name in reg.pruners or not pruner.patterns:
                continue
            reg.pruners[pruner.name] = pruner
            base_source = reg.origins[f"Pruner:{base.name}"] if base else source
            reg.origins[f"Pruner:{pruner.name}"] = source if base_source == source else f"{source}, base {base_source}"


def _stage(reg: Registry, staged: dict[str, Any], kind: type, source: str, item: Any) -> None:
    """The `register` callback a plugin's hook calls: check the item, and keep it until the whole hook succeeds."""
    if not isinstance(item, kind):
        raise PluginError(f"registered {item!r}, not a {kind.__name__}")
    if item.api_version != API_VERSION:
        raise PluginError(f"targets sds-bench plugin API {item.api_version}, this is API {API_VERSION}")
    key = f"{kind.__name__}:{item.name}"
    if key in reg.origins or key in staged:
        raise PluginError(f"{kind.__name__.lower()} name {item.name!r} registered twice: "
                          f"by {reg.origins.get(key, source)} and by {source}")
    staged[key] = item


def skipped(source: str, why: str) -> str:
    """Warn, in one line, that a broken plugin is skipped and how to choose plugins; return why."""
    log.warning(f"sds-bench: warning: plugin {source} is broken and skipped: {why} "
                f"(choose the plugins that load with {ENV}=NAME,... or {ENV}=none)")
    return why


def _label(plugin: str, origin: dict[str, str]) -> str:
    source = origin.get(plugin, plugin)
    return source if source == "builtin" else f"{plugin} ({source})"


def _one_line(error: BaseException) -> str:
    """The error's first line, after its type unless it is ours."""
    text = (str(error).strip().splitlines() or [""])[0]
    return text if isinstance(error, PluginError) else f"{type(error).__name__}: {text}".rstrip(": ")


_REGISTRY: Registry | None = None


def registry(refresh: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = collect(*plugin_manager())
    return _REGISTRY


def origin_of(kind: str, name: str) -> str:
    """Where a pruner ('Pruner'), evaluator ('Evaluator'), statistic or refinement came from."""
    return registry().origins[f"{kind}:{name}"]
