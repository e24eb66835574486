"""The public plugin API: what a pruner, statistic, refinement or evaluator declares, receives and returns.

A pruner is a pure function ``prune(weight, stats, sparsity, options) -> weight`` of one Linear's weight
([out, in]), the statistics it names in ``needs`` (`LayerStats`), the target `Sparsity` and its typed options
(an instance of its ``options`` dataclass, whose fields may declare bounds with `option`). A whole-model pruner
(structural pruning) gives ``prune_model(model, calibration, sparsity, options, *, device, batch_size, quiet) ->
dict`` instead. A statistic is accumulated by the engine over one Linear's calibration inputs, one sequence at a
time. A refinement improves what a per-layer pruner P gives (SDS, DSnoT): ``refine(weight, stats, sparsity,
options, base) -> weight`` with ``base(W)`` P's result on W for this layer; registered once, it yields the pruner
``NAME-P`` for every per-layer P (plugins included) and ``NAME --base P``. An evaluator is
``evaluate(model, tokenizer, options) -> EvalResult`` (plus ``dense=`` the dense model if it needs DENSE_MODEL).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sds_bench.errors import UserError

API_VERSION = 1
"""Bumped when a plugin written against the previous version would break; the registry refuses a mismatch."""

PATTERNS = ("unstructured", "nm")
BOUNDS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}
"""The bounds an option may declare, with how they read in an error and how they are tested."""


def option(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None) -> Any:
    """A field of an options dataclass with declared bounds, checked by `parse_options` (None always passes):
    ``blocksize: int = option(128, ge=1)``."""
    bounds = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if v is not None}
    return field(default=default, metadata={"bounds": bounds})


def needed(needs: Iterable[str] | Callable[[Any], Iterable[str]], options: Any) -> set[str]:
    """The statistic names a `needs` declaration gives for these options (a fixed tuple, or a function of them)."""
    return set(needs(options) if callable(needs) else needs)


@dataclass(frozen=True)
class Pruner:
    """A registered pruning method."""

    name: str
    description: str
    prune: Callable[..., Any] | None = None
    needs: tuple[str, ...] | Callable[[Any], Iterable[str]] = ()
    options: type | None = None
    patterns: tuple[str, ...] = PATTERNS
    prune_model: Callable[..., dict] | None = None
    wraps: Callable[[Any], tuple[str, dict[str, str]]] | None = None
    """A refinement around another per-layer pruner (SDS): from its options, the base's name and raw options. The
    caller (`api.resolve_base`) looks the base up and hands it to `prune` and `needs` as ``base=(Pruner, options)``."""
    refines: str | None = None
    """The name of the `Refinement` this pruner was derived from (`Refinement.pruner`)."""
    api_version: int = API_VERSION

    def required_stats(self, options: Any) -> set[str]:
        """The statistics the engine must gather for this pruner with these options."""
        return needed(self.needs, options)

    def needs_calibration(self, options: Any) -> bool:
        """Whether this pruner reads calibration data: every whole-model pruner, and any that asks for statistics."""
        return self.prune_model is not None or bool(self.required_stats(options))


@dataclass(frozen=True)
class Statistic:
    """A statistic of a Linear's calibration inputs, gathered by the engine in its one pass per block.

    ``start(in_features, device)`` gives the empty state (a tensor); ``add(state, x, n)`` takes the n-th calibration
    sequence's inputs x ([tokens, in_features], float32; n counts from 1) and returns the new state (it may update
    `state` in place). With ``dense=True`` the inputs are those the same Linear sees in the dense model."""

    name: str
    description: str
    start: Callable[[int, Any], Any]
    add: Callable[[Any, Any, int], Any]
    dense: bool = False
    api_version: int = API_VERSION


@dataclass(frozen=True)
class Refinement:
    """A method that refines a per-layer pruner P's result without training (SDS, DSnoT); the registry derives from
    it the pruner ``NAME-P`` for every per-layer pruner P whose patterns it shares, and ``NAME`` with option base.

    ``refine(weight, stats, sparsity, options, base)``: `base` is P bound to this layer (``base(W)`` prunes W as P
    would); `stats` holds what the refinement and P need; the result must meet `sparsity` like any pruner's."""

    name: str
    description: str
    refine: Callable[..., Any]
    needs: tuple[str, ...] | Callable[[Any], Iterable[str]] = ()
    options: type | None = None
    patterns: tuple[str, ...] = PATTERNS
    api_version: int = API_VERSION

    def required_stats(self, options: Any) -> set[str]:
        """The statistics this refinement reads itself (its base's come on top)."""
        return needed(self.needs, options)

    def pruner(self, base: Pruner | None = None) -> Pruner:
        """The pruner NAME-P around `base` P (its patterns those both support), or with no base NAME, whose option
        `base` names P; either takes P's options as option base_options='key=value,...'."""
        name, describe = (f"{self.name}-{base.name}", f"{self.description}, around {base.name}") if base else (
            self.name, f"{self.description}, around any per-layer pruner: --base NAME")
        patterns = tuple(p for p in self.patterns if base is None or p in base.patterns)
        return Pruner(name, describe, prune=functools.partial(_refined, self.refine),
                      needs=functools.partial(_refined_needs, self), options=with_base(self.options, base is None),
                      patterns=patterns, wraps=functools.partial(base_of, name=base.name if base else ""),
                      refines=self.name, api_version=self.api_version)


def _refined(refine: Callable[..., Any], weight: Any, stats: Any, sparsity: Any, options: Any, *,
             base: tuple[Pruner, Any]) -> Any:
    """A refinement's `refine` with its base pruner bound to this layer's statistics, target and options."""
    pruner, base_options = base
    return refine(weight, stats, sparsity, options,
                  functools.partial(pruner.prune, stats=stats, sparsity=sparsity, options=base_options))


def _refined_needs(refinement: Refinement, options: Any, *, base: tuple[Pruner, Any]) -> set[str]:
    """The refinement's own statistics and its base's."""
    pruner, base_options = base
    return refinement.required_stats(options) | pruner.required_stats(base_options)


@functools.cache
def with_base(options: type | None, choose: bool) -> type:
    """The refinement's options dataclass plus `base_options` (P's options) and, when `choose`, `base` (P's name)."""
    fields = [("base_options", str, field(default=""))] + ([("base", str, field(default=""))] if choose else [])
    name = f"{options.__name__ if options else 'Refinement'}{'AnyBase' if choose else 'WithBase'}"
    return dataclasses.make_dataclass(name, fields, bases=(options,) if options else ())


def base_of(options: Any, name: str = "") -> tuple[str, dict[str, str]]:
    """The base pruner P that a refinement wraps (`name`, or its option base) and P's raw options (base_options)."""
    pairs = [p.partition("=") for p in options.base_options.split(",") if p.strip()]
    if any(not sep for _, sep, _ in pairs):
        raise UserError(f"bad base_options {options.base_options!r}; use 'key=value,key=value'")
    return name or options.base, {k.strip(): v.strip() for k, _, v in pairs}


@dataclass(frozen=True)
class Allocator:
    """Turns the model's target sparsity into one per Linear before pruning (OWL), from statistics of the dense
    model's inputs; the default `uniform` (no `allocate`) gives every Linear the target.

    ``allocate(blocks, sparsity, options) -> {layer name: sparsity}``: `blocks` holds, per decoder block, each prunable
    Linear's full name -> (weight, `LayerStats` with the statistics in `needs`, gathered block by block on the dense
    model). Every Linear needs a value in [0, 1); the pruner then prunes it to that ratio (unstructured)."""

    name: str
    description: str
    allocate: Callable[..., dict[str, float]] | None = None
    needs: tuple[str, ...] = ()
    options: type | None = None
    patterns: tuple[str, ...] = ("unstructured",)
    api_version: int = API_VERSION


@dataclass
class EvalResult:
    """Metric values by name, and the protocol that produced them (dataset, split, seqlen, metric, ...)."""

    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)


DENSE_MODEL = "dense_model"
"""An evaluator need: `evaluate` also receives ``dense=`` the dense model (same id, dtype and device; for a dense
cell, the model itself), for metrics against its outputs (KL divergence, top-1 agreement)."""


@dataclass(frozen=True)
class Evaluator:
    """A registered evaluator; `needs` may hold DENSE_MODEL."""

    name: str
    description: str
    evaluate: Callable[..., EvalResult]
    options: type | None = None
    needs: tuple[str, ...] = ()
    api_version: int = API_VERSION


def parse_options(plugin: Pruner | Evaluator | Refinement | Allocator, values: Mapping[str, Any] | None) -> Any:
    """Build the plugin's options dataclass from strings or values, naming plugin and option on any error."""
    values = dict(values or {})
    if plugin.options is None:
        if values:
            raise UserError(f"{plugin.name!r} takes no options (got {', '.join(values)})")
        return None
    fields = {f.name: f for f in dataclasses.fields(plugin.options)}
    hints = typing.get_type_hints(plugin.options)
    for key in values:
        if key not in fields:
            raise UserError(f"{plugin.name!r} has no option {key!r}; its options: {', '.join(fields) or 'none'}")
    converted = {}
    for key, value in values.items():
        try:
            converted[key] = _coerce(value, hints[key])
        except (TypeError, ValueError) as e:
            raise UserError(f"{plugin.name!r}: bad value for option {key!r}: {e}") from None
    options = plugin.options(**converted)
    for f in fields.values():
        _check_bounds(plugin.name, f, getattr(options, f.name))
    return options


def _check_bounds(plugin: str, f: dataclasses.Field, value: Any) -> None:
    """Raise naming plugin, option and bound when `value` breaks a bound the field declares (NaN breaks all)."""
    for kind, bound in f.metadata.get("bounds", {}).items():
        sign, holds = BOUNDS[kind]
        if value is not None and not holds(value, bound):
            raise UserError(f"{plugin!r}: option {f.name!r} must be {sign} {bound:g}; got {value!r}")


def options_dict(options: Any) -> dict[str, Any]:
    """The options as a plain dict, for records."""
    return dataclasses.asdict(options) if options is not None else {}


def _coerce(value: Any, hint: Any) -> Any:
    """Convert a string (from the CLI or a TOML suite) to the annotated type; values already typed pass through."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0])
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if hint in (int, float, str):
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        try:
            return hint(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a {hint.__name__}") from None
    return value
