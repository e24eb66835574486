"""The public plugin API: what a pruner or evaluator declares, receives and returns.

A pruner is a pure function ``prune(weight, stats, sparsity, options) -> weight`` of one Linear's weight
([out, in]), the statistics it asked for (`LayerStats`), the target `Sparsity` and its typed options
(an instance of its ``options`` dataclass, whose fields may declare bounds with `option`). A whole-model pruner
(structural pruning) gives ``prune_model(model, calibration, sparsity, options, *, device, batch_size, quiet) ->
dict`` instead. An evaluator is ``evaluate(model, tokenizer, options) -> EvalResult``.
"""

from __future__ import annotations

import dataclasses
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
    api_version: int = API_VERSION

    def required_stats(self, options: Any) -> set[str]:
        """The statistics the engine must gather for this pruner with these options."""
        return set(self.needs(options) if callable(self.needs) else self.needs)

    def needs_calibration(self, options: Any) -> bool:
        """Whether this pruner reads calibration data: every whole-model pruner, and any that asks for statistics."""
        return self.prune_model is not None or bool(self.required_stats(options))


@dataclass
class EvalResult:
    """Metric values by name, and the protocol that produced them (dataset, split, seqlen, metric, ...)."""

    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluator:
    """A registered evaluator."""

    name: str
    description: str
    evaluate: Callable[..., EvalResult]
    options: type | None = None
    api_version: int = API_VERSION


def parse_options(plugin: Pruner | Evaluator, values: Mapping[str, Any] | None) -> Any:
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
