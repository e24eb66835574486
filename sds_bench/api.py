"""prune() and evaluate() as a user calls them: resolve names, run the engine or evaluator, record the protocol."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from sds_bench import checks, data
from sds_bench.allocation import UNIFORM
from sds_bench.engine import OFFLOAD, apply_pruner
from sds_bench.errors import UserError, at_least
from sds_bench.models import check_token_ids, resolve_device
from sds_bench.plugin import DENSE_MODEL, Allocator, EvalResult, Pruner, options_dict, parse_options
from sds_bench.record import environment, write_dir_atomic, write_json_atomic
from sds_bench.registry import origin_of, registry
from sds_bench.sparsity import Sparsity

log = logging.getLogger(__name__)


def check_prune_args(method: str, sparsity: str | float | Sparsity, options: dict[str, Any] | None = None,
                     nsamples: int = 128, batch_size: int = 1, offload: str = "cpu", allocation: str = UNIFORM,
                     allocation_options: dict[str, Any] | None = None) -> tuple[Pruner, Any, Sparsity, tuple]:
    """The checks of `prune`'s arguments that need no model, so that a caller can run them before loading one:
    the pruner (its base resolved), its parsed options, the sparsity and the allocator with its parsed options."""
    pruner, opts = resolve_method(method, options)
    sparsity = check_pattern(method, pruner, sparsity)
    allocator = check_allocation(pruner, sparsity, allocation, allocation_options)
    at_least("nsamples", nsamples)
    at_least("batch_size", batch_size)
    if offload not in OFFLOAD:
        raise UserError(f"offload must be one of {', '.join(OFFLOAD)}; got {offload!r}")
    return pruner, opts, sparsity, allocator


def check_allocation(pruner: Pruner, sparsity: Sparsity, allocation: str = UNIFORM,
                     options: dict[str, Any] | None = None) -> tuple[Allocator, Any]:
    """The registered allocator and its parsed options, refused for a pattern it does not allocate (N:M fixes the
    ratio of every group) or a whole-model pruner (which allocates itself)."""
    allocator = registry().allocator(allocation)
    parsed = parse_options(allocator, options)
    if sparsity.kind not in allocator.patterns:
        raise UserError(f"allocation {allocation!r} allocates {', '.join(allocator.patterns)} sparsity only, not "
                        f"{sparsity} (an N:M pattern fixes the ratio of every group)")
    if allocator.allocate is not None and pruner.prune is None:
        raise UserError(f"allocation {allocation!r} needs a per-layer pruner; {pruner.name!r} prunes the whole "
                        "model and allocates its own sparsity")
    for name in allocator.needs:
        registry().statistic(name, allocation)
    return allocator, parsed


def prune(model, tokenizer, method: str, sparsity: str | float | Sparsity, calibration: str | data.Calibration | None = None,
          nsamples: int = 128, seqlen: int | None = None, seed: int = 0, options: dict[str, Any] | None = None,
          device: str | None = None, offload: str = "cpu", batch_size: int = 1, quiet: bool = False,
          allocation: str = UNIFORM, allocation_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Prune `model` in place with a registered method (each Linear to the sparsity `allocation` gives it: by
    default the target); return the record written as pruning.json."""
    started = time.perf_counter()
    pruner, opts, sparsity, allocator = check_prune_args(method, sparsity, options, nsamples, batch_size, offload,
                                                         allocation, allocation_options)
    seqlen = data.resolve_seqlen(model, seqlen)
    dev = resolve_device(device)
    calib = None
    needs_calibration = pruner.needs_calibration(opts) or allocator[0].allocate is not None
    if not needs_calibration and calibration is not None:
        log.warning(f"sds-bench: warning: {method!r} needs no calibration data; the calibration given is ignored")
    elif needs_calibration:
        if calibration is None:
            raise UserError(f"{method!r} needs calibration data (--calibration)")
        calib = calibration if isinstance(calibration, data.Calibration) else data.calibration(
            calibration, tokenizer, nsamples, seqlen, seed)
        check_token_ids(model, calib.tokens, f"calibration {calib.source}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = apply_pruner(model, pruner, sparsity, calib.tokens if calib else None, opts, dev, offload, batch_size,
                              quiet, allocator)
    zeros = sum(layer["sparsity"] * math.prod(layer["shape"]) for layer in result["layers"].values())
    total = sum(math.prod(layer["shape"]) for layer in result["layers"].values())
    return {
        "method": method, "origin": origin_of("Pruner", method), "options": options_dict(opts),
        **({} if allocation == UNIFORM else {"allocation": {"name": allocation, "origin": origin_of(
            "Allocator", allocation), "options": options_dict(allocator[1])}}),
        "sparsity": str(sparsity), "measured_sparsity": zeros / total if total else 0.0,
        "calibration": calib.describe() if calib else None, "seed": seed,
        "wall_seconds": time.perf_counter() - started, "layers": result["layers"],
        **{k: v for k, v in result.items() if k not in ("layers", "seconds")},
        "environment": environment(dev),
    }


def resolve_method(method: str, options: dict[str, Any] | None) -> tuple[Pruner, Any]:
    """The registered pruner (its base resolved) and its parsed options, every statistic it needs registered."""
    pruner = registry().pruner(method)
    opts = parse_options(pruner, options)
    pruner = resolve_base(pruner, opts)
    for name in sorted(pruner.required_stats(opts)):
        registry().statistic(name, method)
    return pruner, opts


def check_pattern(method: str, pruner: Pruner, sparsity: str | float | Sparsity) -> Sparsity:
    """The parsed target, refused when the (resolved) pruner does not support its pattern."""
    sparsity = Sparsity.parse(sparsity)
    if sparsity.kind not in pruner.patterns:
        raise UserError(f"{method!r} does not support {sparsity.kind} sparsity ({sparsity}); it supports "
                        f"{', '.join(pruner.patterns)}")
    return sparsity


def resolve_base(pruner: Pruner, options: Any) -> Pruner:
    """`pruner`, or for one that wraps a base pruner, it with `prune` and `needs` given the registered base and the
    base's parsed options (looked up now, so a refreshed registry is always the one used)."""
    if pruner.wraps is None:
        return pruner
    name, raw = pruner.wraps(options)
    if not name:
        raise UserError(f"{pruner.name} needs a base pruner: --method {pruner.name} --base NAME (or -o base=NAME)")
    base = registry().pruner(name)
    if base.prune is None or base.wraps is not None:
        raise UserError(f"{pruner.name} needs a one-shot per-layer pruner as its base; {name!r} is not one")
    bound = (base, parse_options(base, raw))
    return replace(pruner, prune=partial(pruner.prune, base=bound), needs=partial(pruner.needs, base=bound),
                   patterns=tuple(p for p in pruner.patterns if p in base.patterns))


def evaluate(model, tokenizer, evaluator: str = "perplexity", options: dict[str, Any] | None = None,
             dense_model=None) -> EvalResult:
    """Run a registered evaluator on an in-memory model (`dense_model`: the model it was pruned from, for an
    evaluator that needs it, such as kl)."""
    plugin = registry().evaluator(evaluator)
    opts = parse_options(plugin, options)
    extra = {}
    if DENSE_MODEL in plugin.needs:
        if dense_model is None:
            raise UserError(f"evaluator {evaluator!r} compares with the dense model: pass dense_model= "
                            "(sds-bench eval: --dense MODEL)")
        extra["dense"] = dense_model
    started = time.perf_counter()
    result = checks.metrics(evaluator, plugin.evaluate(model, tokenizer, opts, **extra))
    result.protocol.setdefault("evaluator", evaluator)
    result.protocol.setdefault("seconds", time.perf_counter() - started)
    return result


def check_output(output: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output directory that cannot be written or would merge into another's files."""
    output = Path(output)
    if output.is_file():
        raise UserError(f"output {str(output)!r} is a file; give a directory")
    if any(p.is_file() for p in output.parents):
        raise UserError(f"output {str(output)!r} is under a file; give a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UserError(f"output {str(output)!r} is a non-empty directory; pass --overwrite (from Python: pass "
                        "overwrite=True) to replace it")
    parent = next((p for p in (output, *output.parents) if p.exists()), Path("."))
    try:
        tempfile.TemporaryDirectory(dir=parent).cleanup()
    except OSError as e:
        raise UserError(f"cannot write output {str(output)!r}: {e.strerror or e}") from None
    return output


def save_pruned(model, tokenizer, record: dict[str, Any], output: str | Path, overwrite: bool = False) -> Path:
    """Write the pruned model (safetensors), its tokenizer and pruning.json into `output`, all at once: the directory
    appears (or replaces the old one, with `overwrite`) only when complete."""
    output = check_output(output, overwrite)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "pruning.json", record)

    write_dir_atomic(output, write)
    return output
