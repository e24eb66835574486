"""Running a suite: each pending cell group is loaded, pruned once and evaluated, and each cell appends one row.

Cells that share a pruned model (same model, method and sparsity; different evaluators) form a group that prunes
once. Groups run in this process (``local``) or as submitit jobs (``submitit``: SLURM, or submitit's own local
executor), and only the driver writes the store. A failing cell becomes a failed row and the sweep goes on;
an interrupt stops the sweep and loses only the cells in flight.
"""

from __future__ import annotations

import dataclasses
import functools
import resource
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from sds_bench import api, data
from sds_bench.errors import UserError
from sds_bench.models import check_reachable, hub_revision, load_model, resolve_device
from sds_bench.plugin import DENSE_MODEL
from sds_bench.record import environment
from sds_bench.registry import registry
from sds_bench.runner.cells import Cell, expand, model_label, model_sha256, prune_groups, select
from sds_bench.runner.store import FAILED, OK, Store
from sds_bench.runner.suite import Suite
from sds_bench.sparsity import Sparsity

EXECUTORS = ("local", "submitit")


@dataclass
class Summary:
    """What a run did: cells in the (filtered) grid, already done before, run now and succeeded, run now and failed."""

    cells: int
    skipped: int
    ok: int = 0
    failed: int = 0


def plan(suite: Suite, results: str | Path, only: list[str] | None = None,
         exclude: list[str] | None = None) -> list[tuple[Cell, str]]:
    """The (filtered) grid with each cell's state in the store: 'done', 'failed' or 'pending'."""
    latest = Store(Path(results) / suite.name).latest()
    return [(c, {OK: "done", FAILED: "failed"}.get(latest.get(c.key, {}).get("status"), "pending"))
            for c in select(expand(suite), only, exclude)]


def run_suite(suite: Suite, results: str | Path, only: list[str] | None = None, exclude: list[str] | None = None,
              executor: str = "local", cluster: str | None = None, params: dict[str, Any] | None = None,
              fail_fast: bool = False, save_models: bool = False, quiet: bool = False,
              on_row: Callable[[dict[str, Any]], None] | None = None, fresh: bool = False) -> Summary:
    """Run every cell of the suite that has no successful row yet, appending one row per cell to the store, whose
    lock this run holds throughout; `fresh` first archives the store's rows, so every cell runs again."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if fresh and (only or exclude):
        raise UserError("--fresh re-runs a whole suite; it cannot be combined with --only or --exclude")
    if Path(results).exists() and not Path(results).is_dir():
        raise UserError(f"--results {results} is a file; give a directory (the rows go to RESULTS/{suite.name}/)")
    store = Store(Path(results) / suite.name)
    with store.lock():
        if fresh:
            store.archive()
        cells = select(expand(suite), only, exclude)
        done = store.completed()
        pending = [c for c in cells if c.key not in done]
        summary = Summary(len(cells), len(cells) - len(pending))
        if not pending:
            return summary
        preflight(pending)
        groups = prune_groups(pending)
        save_dir = store.dir / "models" if save_models else None
        rows = (_local_rows(groups, save_dir) if executor == "local" else
                _submitit_rows(groups, store.dir / "submitit", cluster, {"name": f"sds-bench-{suite.name}",
                                                                         **suite.submitit, **(params or {})}, save_dir))
        with closing(rows), tqdm(total=len(pending), desc=f"suite {suite.name}", unit="cell", disable=quiet) as bar:
            for row in rows:  # closing: stopping early cancels what is still queued
                store.append(row)
                summary.ok += row["status"] == OK
                summary.failed += row["status"] == FAILED
                bar.update()
                if on_row:
                    on_row(row)
                if fail_fast and row["status"] == FAILED:
                    raise UserError(f"cell {row['cell']['name']} failed (--fail-fast): {row['error']}")
        return summary


def preflight(cells: list[Cell]) -> None:
    """Fail in one line before any work when a model cannot be found or the device is absent."""
    for model in dict.fromkeys(c.model for c in cells):
        check_reachable(model)
    for device in dict.fromkeys(c.run.device for c in cells):
        resolve_device(device)


def run_group(cells: list[Cell], save_dir: Path | None = None,
              calibrations: dict[str, data.Calibration] | None = None) -> Iterator[dict[str, Any]]:
    """Load the group's model, prune it once (unless dense), then evaluate it once per cell: one row per cell."""
    first, times, memory = cells[0], {}, {}
    calibrations = {} if calibrations is None else calibrations
    device = resolve_device(first.run.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _reset_peak_rss()
    try:
        pruner = None if first.dense else registry().pruner(first.pruner)
        started = time.perf_counter()
        model, tokenizer = load_model(first.model, first.run.dtype,
                                      "cpu" if pruner and first.run.offload == "cpu" else str(device),
                                      trust_remote_code=first.run.trust_remote_code)
        times["load"] = time.perf_counter() - started
        if model_sha256(first.model) != first.model_sha256:
            raise UserError(f"the files of model {first.model!r} changed since this sweep started; run it again")
        info = {"id": first.model, "revision": hub_revision(first.model), "sha256": first.model_sha256}
        record = None
        if pruner is not None:
            calib = _calibration(first, model, tokenizer, calibrations, times) if _needs_calibration(first) else None
            record = api.prune(model, tokenizer, first.pruner, first.sparsity, calib, seed=first.calibration.seed,
                               options=first.options, device=str(device), offload=first.run.offload,
                               batch_size=first.run.batch_size, quiet=True, allocation=first.allocation,
                               allocation_options=first.allocation_options)
            times["prune"] = record["wall_seconds"]
            memory = {f"prune_{k}": v for k, v in _peak_memory(device).items()}
            model.to(device)
            if save_dir is not None:
                slug = f"{model_label(first.model)}-{first.method}-{Sparsity.parse(first.sparsity).slug}"
                api.save_pruned(model, tokenizer, {**record, "model": first.model}, save_dir / slug, overwrite=True)
    except Exception as e:
        for cell in cells:
            yield _row(cell, FAILED, times, device, memory, error=e)
        return
    pruning = {**record, "layers": len(record["layers"])} if record else None  # per-layer detail: --save-models
    dense = functools.cache(lambda: model if first.dense else load_model(
        first.model, first.run.dtype, str(device), trust_remote_code=first.run.trust_remote_code)[0])
    for cell in cells:
        try:
            started = time.perf_counter()
            plugin = registry().evaluator(cell.evaluator_plugin)
            result = api.evaluate(model, tokenizer, cell.evaluator_plugin, _eval_options(cell),
                                  dense() if DENSE_MODEL in plugin.needs else None)
            yield _row(cell, OK, {**times, "eval": time.perf_counter() - started}, device, memory, model=info,
                       pruning=pruning, evaluation=dataclasses.asdict(result))
        except Exception as e:
            yield _row(cell, FAILED, times, device, memory, model=info, pruning=pruning, error=e)


def group_rows(cells: list[Cell], save_dir: Path | None = None) -> list[dict[str, Any]]:
    """One group's rows, as a submitit job returns them to the driver."""
    return list(run_group(cells, save_dir))


def _local_rows(groups: list[list[Cell]], save_dir: Path | None) -> Iterator[dict[str, Any]]:
    calibrations: dict[str, data.Calibration] = {}
    for group in groups:
        yield from run_group(group, save_dir, calibrations)


def _submitit_rows(groups: list[list[Cell]], folder: Path, cluster: str | None, params: dict[str, Any],
                   save_dir: Path | None) -> Iterator[dict[str, Any]]:
    """Submit one job per group (a job array on SLURM), yield rows as jobs finish; cancel the rest if stopped."""
    try:
        import submitit
    except ImportError:
        raise UserError("--executor submitit needs submitit: pip install 'sds-bench[cluster]'") from None
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    try:
        executor.update_parameters(**params)
    except (AssertionError, NameError, TypeError, ValueError) as e:
        raise UserError(f"bad submitit parameters: {str(e).splitlines()[0]}") from None
    with executor.batch():
        jobs = [executor.submit(group_rows, group, save_dir) for group in groups]
    group_of = {id(job): group for job, group in zip(jobs, groups)}
    try:
        for job in submitit.helpers.as_completed(jobs):
            try:
                yield from job.result()
            except Exception as e:  # the job itself died (killed, out of memory, timed out)
                for cell in group_of[id(job)]:
                    yield _row(cell, FAILED, {}, None, {}, error=e)
    finally:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)


def _needs_calibration(cell: Cell) -> bool:
    """Whether the cell's pruner or allocator gathers statistics (magnitude with uniform allocation does not)."""
    pruner, options = api.resolve_method(cell.pruner, cell.options)
    return pruner.needs_calibration(options) or registry().allocator(cell.allocation).allocate is not None


def _calibration(cell: Cell, model, tokenizer, cache: dict[str, data.Calibration],
                 times: dict[str, float]) -> data.Calibration:
    """The cell's calibration windows, built once per model and calibration setting in this process."""
    spec = cell.calibration
    key = f"{cell.model}|{spec}"
    if key not in cache:
        started = time.perf_counter()
        cache[key] = data.calibration(spec.source, tokenizer, spec.nsamples, data.resolve_seqlen(model, spec.seqlen),
                                      spec.seed)
        times["calibration"] = time.perf_counter() - started
    return cache[key]


def _eval_options(cell: Cell) -> dict[str, Any]:
    """The cell's evaluator options, with progress bars off where the evaluator has that option."""
    plugin = registry().evaluator(cell.evaluator_plugin)
    fields = {f.name for f in dataclasses.fields(plugin.options)} if plugin.options else set()
    return {**({"quiet": True} if "quiet" in fields else {}), **cell.eval_options}


def _row(cell: Cell, status: str, times: dict[str, float], device: torch.device | None, memory: dict[str, float],
         model: dict | None = None, pruning: dict | None = None, evaluation: dict | None = None,
         error: BaseException | None = None) -> dict:
    """A store row: the cell's definition and labels, what was measured (`memory`: the peaks at the end of the
    prune), and where and when."""
    return {
        "key": cell.key, "status": status,
        "cell": {"name": cell.name, "model": cell.model, "method": cell.method, "pattern": cell.pattern,
                 "evaluator": cell.evaluator, "definition": cell.definition()},
        "model": model, "pruning": pruning,
        "measured_sparsity": pruning["measured_sparsity"] if pruning else None,
        "evaluation": evaluation, "metrics": evaluation["metrics"] if evaluation else {},
        "times": times, "memory": {**_peak_memory(device), **memory},
        "error": f"{type(error).__name__}: {error}" if error else None,
        "traceback": "".join(traceback.format_exception(error)) if error else None,
        "environment": environment(device), "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _reset_peak_rss() -> None:
    """Start this process's peak resident memory afresh (Linux: /proc/self/clear_refs), so that the peak a row records
    is its group's, from the model's load on; elsewhere the peak stays the whole process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory(device: torch.device | None) -> dict[str, float]:
    """Peak resident memory of this process since the group started (on Linux; else since the process started), and
    the peak CUDA allocation since the group started."""
    out = {"process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device is not None and device.type == "cuda":
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out

