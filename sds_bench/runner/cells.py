"""The grid of a suite: a cell per (model, method, sparsity, calibration seed, evaluator) and a dense cell per
(model, evaluator), evaluated once (it reads no calibration).

A cell's key hashes everything that defines its result (model, and for a local or embedded model the sha256 of its
files; dtype, device, batch size, pruner and options, sparsity, calibration, evaluator and options) and nothing
that only names it (the method and evaluator labels), so renaming a row of a table keeps its results, and changing
any setting, or rebuilding a local model, makes a new cell. A suite of one seed has the cells (and keys) it had
before seeds existed.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sds_bench.allocation import UNIFORM
from sds_bench.errors import UserError
from sds_bench.models import resolve_model_path
from sds_bench.runner.suite import CalibrationSpec, EvaluatorSpec, RunSpec, Suite
from sds_bench.sparsity import Sparsity

DENSE = "dense"
FILTER_FIELDS = ("model", "method", "sparsity", "evaluator", "seed")


@dataclass(frozen=True)
class Cell:
    """One result row to produce: prune `model` with `pruner` to `sparsity` (unless dense), then run one evaluator."""

    model: str
    model_sha256: str | None
    method: str
    pruner: str | None
    options: dict[str, Any]
    sparsity: str | None
    calibration: CalibrationSpec | None
    evaluator: str
    evaluator_plugin: str
    eval_options: dict[str, Any]
    run: RunSpec
    allocation: str = UNIFORM
    allocation_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    show_seed: bool = False
    """Whether the name ends in the seed (in a suite of several seeds); a label, not part of the key."""

    @property
    def dense(self) -> bool:
        return self.pruner is None

    @property
    def seed(self) -> int | None:
        """The calibration seed of a pruned cell; None for a dense one."""
        return self.calibration.seed if self.calibration else None

    @property
    def pattern(self) -> str:
        """Column label of the tables: 'dense', '50%', '2:4'."""
        return DENSE if self.sparsity is None else pattern_label(self.sparsity)

    @property
    def name(self) -> str:
        seed = f"/seed={self.seed}" if self.show_seed and self.seed is not None else ""
        return f"{self.model}/{self.method}/{self.pattern}/{self.evaluator}{seed}"

    def prune_definition(self) -> dict[str, Any]:
        """What defines the pruned model: shared by the cells that differ only in their evaluator."""
        run = dataclasses.asdict(self.run)
        run.pop("offload")  # where activations wait changes memory, not results
        run.pop("trust_remote_code")  # a permission, not a setting of the result
        allocation = {} if self.allocation == UNIFORM else {
            "allocation": self.allocation, "allocation_options": self.allocation_options}  # uniform: older keys hold
        return {"model": self.model, "model_sha256": self.model_sha256, **run, "pruner": self.pruner,
                "options": self.options, **allocation,
                "sparsity": self.sparsity,
                "calibration": dataclasses.asdict(self.calibration) if self.calibration else None}

    def definition(self) -> dict[str, Any]:
        return {**self.prune_definition(), "evaluator": self.evaluator_plugin, "eval_options": self.eval_options}

    @property
    def key(self) -> str:
        return _digest(self.definition())

    @property
    def prune_key(self) -> str:
        return _digest(self.prune_definition())


def pattern_label(sparsity: str) -> str:
    """'0.5' -> '50%', '2:4' -> '2:4'."""
    s = Sparsity.parse(sparsity)
    return str(s) if s.is_nm else f"{s.ratio * 100:g}%"


def model_label(model: str) -> str:
    """Short name of a model for tables and plots: 'facebook/opt-125m' -> 'opt-125m'."""
    return model.removeprefix("embedded:").rstrip("/").rsplit("/", 1)[-1]


def expand(suite: Suite) -> list[Cell]:
    """Every cell of the suite, model by model: the dense cells first, then seed x method x sparsity x evaluator
    (each evaluator at its own seeds), so that an interrupted sweep has whole seeds."""
    cells = []
    for model in suite.models:
        sha = model_sha256(model)
        if suite.dense:
            cells += [_cell(suite, model, sha, None, None, ev, None) for ev in suite.evaluators]
        for seed in suite.seeds:
            evaluators = [ev for ev in suite.evaluators if ev.seeds is None or seed in ev.seeds]
            for method in suite.methods:
                for sparsity in method.sparsities or suite.sparsities:
                    cells += [_cell(suite, model, sha, method, sparsity, ev, seed) for ev in evaluators
                              if ev.methods is None or method.name in ev.methods]
    seen: dict[str, Cell] = {}
    for cell in cells:
        if (other := seen.setdefault(cell.key, cell)) is not cell:
            raise UserError(f"suite {suite.name!r}: cells {other.name} and {cell.name} have the same definition")
    return cells


def _cell(suite: Suite, model: str, sha: str | None, method, sparsity: str | None, ev: EvaluatorSpec,
          seed: int | None) -> Cell:
    return Cell(model, sha, method.name if method else DENSE, method.pruner if method else None,
                method.options if method else {}, sparsity,
                dataclasses.replace(suite.calibration, seed=seed) if method else None,
                ev.name, ev.evaluator, ev.options, suite.run, method.allocation if method else UNIFORM,
                method.allocation_options if method else {}, show_seed=len(suite.seeds) > 1)


def model_sha256(model: str) -> str | None:
    """sha256 of a local (or embedded) model directory's config and weight files; None for a hub id, whose revision
    the row records instead. Cached per file state, so a sweep hashes each model once."""
    try:
        path = Path(resolve_model_path(model))
    except UserError:  # an embedded model not built yet: the run says so
        return None
    if not path.is_dir():
        return None
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name == "config.json")
    return _sha256_files(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=64)
def _sha256_files(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).name.encode())
        with open(name, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def prune_groups(cells: list[Cell]) -> list[list[Cell]]:
    """Cells that share a pruned model (they differ only in the evaluator), in grid order: each group prunes once."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.prune_key, []).append(cell)
    return list(groups.values())


def select(cells: list[Cell], only: list[str] | None = None, exclude: list[str] | None = None) -> list[Cell]:
    """Cells matching any --only glob (all if none) and no --exclude glob."""
    return [c for c in cells if (not only or any(matches(c, g) for g in only))
            and not any(matches(c, g) for g in exclude or [])]


def matches(cell: Cell, glob: str) -> bool:
    """A glob on the method, model, sparsity or evaluator ('sds-*', 'opt-*', '2:4', '50%'), or on one field
    ('method=wanda*', 'seed=1'), or on the cell's name 'model/method/pattern/evaluator[/seed=S]'."""
    field, sep, pattern = glob.partition("=")
    values = {"model": [cell.model, model_label(cell.model)], "method": [cell.method],
              "sparsity": [cell.pattern, cell.sparsity or DENSE], "evaluator": [cell.evaluator],
              "seed": [] if cell.seed is None else [str(cell.seed)]}
    if sep:
        if field not in values:
            raise UserError(f"bad filter {glob!r}: the field must be one of {', '.join(FILTER_FIELDS)}")
        candidates = values[field]
    else:
        pattern, candidates = glob, [v for vs in values.values() for v in vs] + [cell.name]
    return any(fnmatch.fnmatchcase(v, pattern) for v in candidates)


def _digest(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:16]
