"""Suites: TOML files naming the models, methods, sparsity patterns and evaluators of a sweep, and how to run it.

A suite is a shipped name (``sds_bench/suites/NAME.toml``) or a path to a TOML file. Layout::

    name = "embedded"                     # results go to results/<name>/ (default: the file's stem)
    description = "..."
    models = ["embedded:opt-tiny"]        # hub ids, local directories, embedded:NAME
    methods = ["magnitude", "wanda",      # pruner names, or tables {name, pruner, options}
               {name = "sparsegpt-b64", pruner = "sparsegpt", options = {blocksize = 64}}]
    sparsities = ["50%", "2:4", "4:8"]
    dense = true                          # also evaluate each unpruned model (one "dense" cell per model)
    seeds = [0, 1, 2]                     # calibration draws, each its own cell (default: [calibration] seed)
    tolerance = {perplexity = 1.0, accuracy = 1.0}  # reproduced when |ours - paper| <= this (accuracy in points)

    [calibration]                         # source, nsamples, seqlen (default: model context, max 2048), seed
    source = "embedded"

    [[evaluators]]                        # name, evaluator (default: name), options, seeds and methods (subsets)
    name = "perplexity"
    options = {dataset = "embedded", seqlen = 128}

    [run]                                 # device, dtype, batch_size, offload, trust_remote_code
    device = "cpu"

    [submitit]                            # parameters of submitit.AutoExecutor for --executor submitit
    timeout_min = 240

Overrides (``sds-bench run SUITE --set KEY=VALUE``) change one dotted key before validation: ``calibration.nsamples=8``,
``run.device=cpu``, ``sparsities=["2:4"]``; a method or evaluator entry is addressed by its name,
``evaluators.perplexity.options.max_windows=4``, ``methods.sds-wanda.options.iterations=20``. Values are TOML
(``8``, ``true``, ``["2:4"]``); a bare word that is not TOML is a string (``cpu``).
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from sds_bench.allocation import UNIFORM
from sds_bench.api import check_allocation, check_pattern, resolve_method
from sds_bench.engine import OFFLOAD
from sds_bench.errors import UserError, at_least
from sds_bench.models import DTYPES
from sds_bench.plugin import parse_options
from sds_bench.registry import registry
from sds_bench.sparsity import Sparsity

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
TOP_LEVEL = {"name", "description", "models", "methods", "sparsities", "dense", "calibration", "evaluators", "run",
             "submitit", "seeds", "tolerance"}


@dataclass(frozen=True)
class MethodSpec:
    """A row of the tables: a label, the registered pruner it runs, and that pruner's options."""

    name: str
    pruner: str
    options: dict[str, Any] = field(default_factory=dict)
    allocation: str = UNIFORM
    """The registered allocator giving each Linear its sparsity (uniform: the target)."""
    allocation_options: dict[str, Any] = field(default_factory=dict)
    sparsities: tuple[str, ...] | None = None
    """The suite's sparsities this method runs at (None: all of them), e.g. only '50%' for an unstructured method."""


@dataclass(frozen=True)
class EvaluatorSpec:
    """A label, the registered evaluator it runs, that evaluator's options (the evaluation protocol), and the
    calibration seeds and methods it evaluates (None: all of the suite's)."""

    name: str
    evaluator: str
    options: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    methods: tuple[str, ...] | None = None
    """The method labels it evaluates (None: every method); the dense model is always evaluated."""


@dataclass(frozen=True)
class CalibrationSpec:
    """Where the calibration windows come from and how many: the SparseGPT/Wanda setting is C4, 128 x 2048."""

    source: str = "c4"
    nsamples: int = 128
    seqlen: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class ToleranceSpec:
    """How far our value may be from the published one and still count as reproduced: perplexity in perplexity, any
    other metric (accuracies, reported as fractions) in percentage points."""

    perplexity: float = 1.0
    accuracy: float = 1.0


@dataclass(frozen=True)
class RunSpec:
    """Where and how the models run."""

    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 1
    offload: str = "cpu"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Suite:
    """A validated suite: the grid's axes and the settings shared by every cell."""

    name: str
    path: Path
    models: tuple[str, ...]
    methods: tuple[MethodSpec, ...]
    sparsities: tuple[str, ...]
    evaluators: tuple[EvaluatorSpec, ...]
    calibration: CalibrationSpec
    run: RunSpec
    dense: bool = True
    description: str = ""
    submitit: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    tolerance: ToleranceSpec = ToleranceSpec()


def available_suites() -> list[str]:
    """Names of the suites shipped with sds-bench."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def suite_path(name: str) -> Path:
    """A shipped suite's file, or the TOML file `name` points to."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"suite file {name!r} does not exist")
        return path
    if not (SUITES_DIR / f"{name}.toml").is_file():
        raise UserError(f"unknown suite {name!r}; shipped suites: {', '.join(available_suites())}, or give a .toml path")
    return SUITES_DIR / f"{name}.toml"


def load_suite(name: str, overrides: Sequence[str] = ()) -> Suite:
    """Read a suite, apply the KEY=VALUE overrides, and validate the result whole, naming the file and the offending
    key on any error."""
    path = suite_path(name)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    for setting in overrides:
        raw = with_override(raw, setting)
    return suite_from_dict(raw, path)


def with_override(raw: dict[str, Any], setting: str) -> dict[str, Any]:
    """A copy of the suite dict `raw` with one dotted KEY=VALUE set (see the module docstring for the syntax)."""
    key, sep, text = setting.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise UserError(f"bad --set {setting!r}: use KEY=VALUE with a dotted KEY, e.g. calibration.nsamples=8")
    if parts[0] not in TOP_LEVEL:
        raise UserError(f"bad --set {setting!r}: unknown key {parts[0]!r}; known: {', '.join(sorted(TOP_LEVEL))}")
    out = copy.deepcopy(raw)
    node: Any = out
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part.strip(), ".".join(parts[: depth + 1]), setting)
    if not isinstance(node, dict):
        raise UserError(f"bad --set {setting!r}: {'.'.join(parts[:-1])} is not a table")
    node[parts[-1].strip()] = toml_value(text.strip())
    return out


def toml_value(text: str) -> Any:
    """A value as TOML reads it (8 -> int, true -> bool, ["2:4"] -> list), else the text itself as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _child(node: Any, part: str, where: str, setting: str) -> Any:
    """The table at `part` below `node`, created when absent; in a list of methods or evaluators, the entry named
    `part` (a bare name becomes a table {name = ...} so that its options can be set)."""
    if isinstance(node, dict):
        if not isinstance(node.setdefault(part, {}), (dict, list)):
            raise UserError(f"bad --set {setting!r}: {where} is a {type(node[part]).__name__}, not a table")
        return node[part]
    if isinstance(node, list):
        names = [item if isinstance(item, str) else item.get("name") if isinstance(item, dict) else None
                 for item in node]
        if part not in names:
            raise UserError(f"bad --set {setting!r}: no entry named {part!r} in {where.rsplit('.', 1)[0]}; "
                            f"entries: {', '.join(map(str, names))}")
        i = names.index(part)
        if isinstance(node[i], str):
            node[i] = {"name": part}
        return node[i]
    raise UserError(f"bad --set {setting!r}: {where.rsplit('.', 1)[0]} is not a table")


def suite_from_dict(raw: dict[str, Any], path: Path) -> Suite:
    """Validate a suite given as the dict its TOML parses to (`path` names it in errors and sets its default name):
    the whole of it, registered plugins and their options included, before any cell runs; no model is loaded."""
    try:
        return _validated(_parse(raw, path))
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _validated(suite: Suite) -> Suite:
    """The suite, once its name, settings, methods and evaluators are each checked."""
    _check_name(suite.name)
    _check_settings(suite.calibration, suite.run)
    for method in suite.methods:
        try:
            pruner, _ = resolve_method(method.pruner, method.options)  # a wrapper's base and its options too
            if stray := sorted(set(method.sparsities or ()) - set(suite.sparsities)):
                raise UserError(f"sparsities {stray} are not among the suite's sparsities {list(suite.sparsities)}")
            for sparsity in method.sparsities or suite.sparsities:
                check_allocation(pruner, check_pattern(method.pruner, pruner, sparsity), method.allocation,
                                 method.allocation_options)
        except UserError as e:
            raise UserError(f"methods entry {method.name!r}: {e}") from None
    for ev in suite.evaluators:
        try:
            if ev.seeds is not None and (stray := sorted(set(ev.seeds) - set(suite.seeds))):
                raise UserError(f"seeds {stray} are not among the suite's seeds {list(suite.seeds)}")
            if ev.methods is not None and (stray := sorted(set(ev.methods) - {m.name for m in suite.methods})):
                raise UserError(f"methods {stray} are not among the suite's methods")
            parse_options(registry().evaluator(ev.evaluator), ev.options)
        except UserError as e:
            raise UserError(f"evaluators entry {ev.name!r}: {e}") from None
    return suite


def _check_name(name: str) -> None:
    """The suite's name is its results folder: one plain path component."""
    parts = {PurePosixPath(name).parts, PureWindowsPath(name).parts}
    if not name.strip() or name in (".", "..") or parts != {(name,)} or "\0" in name:
        raise UserError(f"'name' {name!r} must be one plain folder name (no '/', '\\', '..' or absolute path), as "
                        "the results go to RESULTS/<name>/")


def _check_settings(calibration: CalibrationSpec, run: RunSpec) -> None:
    """The numbers and names of [calibration] and [run] that TOML's types alone do not check."""
    at_least("[calibration] nsamples", calibration.nsamples)
    if calibration.seqlen is not None:
        at_least("[calibration] seqlen", calibration.seqlen)
    at_least("[run] batch_size", run.batch_size)
    if run.offload not in OFFLOAD:
        raise UserError(f"[run] offload must be one of {', '.join(OFFLOAD)}; got {run.offload!r}")
    if run.dtype != "auto" and run.dtype not in DTYPES:
        raise UserError(f"[run] dtype {run.dtype!r} is not supported; use one of auto, {', '.join(DTYPES)}")
    if run.device != "auto":
        try:
            torch.device(run.device)
        except RuntimeError:
            raise UserError(f"[run] device {run.device!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def _parse(raw: dict[str, Any], path: Path) -> Suite:
    if unknown := set(raw) - TOP_LEVEL:
        raise UserError(f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(TOP_LEVEL))}")
    for key in ("models", "methods", "sparsities", "evaluators"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise UserError(f"{key!r} must be a non-empty list")
    sparsities = _sparsity_list(raw["sparsities"], "'sparsities'")
    calibration = _section(raw, "calibration", CalibrationSpec)
    return Suite(
        name=_typed(raw, "name", str, path.stem), path=path,
        models=_unique(tuple(_string(m, "models") for m in raw["models"]), "models"),
        methods=_unique(tuple(_plugin_spec(m, "methods", "pruner", MethodSpec) for m in raw["methods"]), "methods"),
        sparsities=_unique(sparsities, "sparsities"),
        evaluators=_unique(tuple(_plugin_spec(e, "evaluators", "evaluator", EvaluatorSpec) for e in raw["evaluators"]),
                           "evaluators"),
        calibration=calibration, run=_section(raw, "run", RunSpec),
        dense=_typed(raw, "dense", bool, True), description=_typed(raw, "description", str, ""),
        submitit=_typed(raw, "submitit", dict, {}),
        seeds=_seeds(raw.get("seeds", [calibration.seed]), "'seeds'"), tolerance=_tolerance(raw),
    )


def _plugin_spec(item: Any, key: str, plugin_key: str, spec: type) -> Any:
    """A method or evaluator entry: a registered name, or a table {name, <plugin_key>, options}."""
    if isinstance(item, str):
        return spec(item, item, {})
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise UserError(f"each entry of {key!r} must be a name or a table with a 'name'; got {item!r}")
    own = ["seeds", "methods"] if spec is EvaluatorSpec else ["allocation", "allocation_options", "sparsities"]
    if unknown := set(item) - {"name", plugin_key, "options", *own}:
        raise UserError(f"{key} entry {item['name']!r}: unknown key(s) {', '.join(sorted(unknown))}")
    extra: dict[str, Any] = {}
    if "seeds" in item:
        extra["seeds"] = _seeds(item["seeds"], f"{key} entry {item['name']!r}: seeds")
    if "methods" in item:
        names = item["methods"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{key} entry {item['name']!r}: methods must be a non-empty list of method names; "
                            f"got {names!r}")
        extra["methods"] = tuple(names)
    if "allocation" in item:
        extra["allocation"] = _typed(item, "allocation", str, UNIFORM)
    if "allocation_options" in item:
        extra["allocation_options"] = _typed(item, "allocation_options", dict, {})
    if "sparsities" in item:
        extra["sparsities"] = _sparsity_list(item["sparsities"], f"{key} entry {item['name']!r}: sparsities")
    return spec(item["name"], _typed(item, plugin_key, str, item["name"]), _typed(item, "options", dict, {}), **extra)


def _sparsity_list(value: Any, where: str) -> tuple[str, ...]:
    """A non-empty list of sparsity specs, each in its canonical form ('50%' -> '0.5')."""
    if not isinstance(value, list) or not value:
        raise UserError(f"{where} must be a non-empty list; got {value!r}")
    return tuple(str(Sparsity.parse(s)) for s in value)


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    """A non-empty list of distinct calibration seeds, integers >= 0 (`seeds` replaces [calibration] seed)."""
    if (not isinstance(value, list) or not value or len(set(value)) != len(value)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise UserError(f"{where} must be a non-empty list of distinct integers >= 0; got {value!r}")
    return tuple(value)


def _tolerance(raw: dict[str, Any]) -> ToleranceSpec:
    """The `tolerance` table: a number >= 0 for perplexity and for accuracy (points)."""
    values = _typed(raw, "tolerance", dict, {})
    for k, v in values.items():
        if k not in ToleranceSpec.__dataclass_fields__:
            raise UserError(f"'tolerance' has no key {k!r}; known: {', '.join(ToleranceSpec.__dataclass_fields__)}")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
            raise UserError(f"'tolerance' {k} must be a number >= 0; got {v!r}")
    return ToleranceSpec(**{k: float(v) for k, v in values.items()})


def _section(raw: dict[str, Any], key: str, spec: type) -> Any:
    """A table whose keys are the fields of `spec`, type-checked against the defaults."""
    values = _typed(raw, key, dict, {})
    defaults = spec()
    for k, v in values.items():
        if k not in spec.__dataclass_fields__:
            raise UserError(f"[{key}] has no key {k!r}; known: {', '.join(spec.__dataclass_fields__)}")
        expected = type(getattr(defaults, k)) if getattr(defaults, k) is not None else int
        if not isinstance(v, expected) or isinstance(v, bool) != (expected is bool):
            raise UserError(f"[{key}] {k} must be a {expected.__name__}; got {v!r}")
    return spec(**values)


def _typed(raw: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = raw.get(key, default)
    if not isinstance(value, kind):
        raise UserError(f"{key!r} must be a {kind.__name__}; got {value!r}")
    return value


def _string(item: Any, key: str) -> str:
    if not isinstance(item, str) or not item:
        raise UserError(f"each entry of {key!r} must be a non-empty string; got {item!r}")
    return item


def _unique(items: tuple, key: str) -> tuple:
    names = [getattr(i, "name", i) for i in items]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise UserError(f"{key!r} lists {', '.join(map(str, dupes))} more than once")
    return items
