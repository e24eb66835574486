"""prune() and evaluate() as a user calls them: resolve names, run the engine or evaluator, record the protocol."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from sds_bench import data
from sds_bench.engine import prune_model
from sds_bench.errors import UserError
from sds_bench.models import check_token_ids, resolve_device
from sds_bench.plugin import EvalResult, options_dict, parse_options
from sds_bench.record import environment, write_json_atomic
from sds_bench.registry import origin_of, registry
from sds_bench.sparsity import Sparsity


def prune(model, tokenizer, method: str, sparsity: str | float | Sparsity, calibration: str | data.Calibration | None = None,
          nsamples: int = 128, seqlen: int | None = None, seed: int = 0, options: dict[str, Any] | None = None,
          device: str | None = None, offload: str = "cpu", batch_size: int = 1, quiet: bool = False) -> dict[str, Any]:
    """Prune `model` in place with a registered method; return the record written as pruning.json."""
    started = time.perf_counter()
    pruner = registry().pruner(method)
    sparsity = Sparsity.parse(sparsity)
    if sparsity.kind not in pruner.patterns:
        raise UserError(f"{method!r} does not support {sparsity.kind} sparsity ({sparsity}); it supports {', '.join(pruner.patterns)}")
    opts = parse_options(pruner, options)
    dev = resolve_device(device)
    calib = None
    if pruner.prune_model is not None or pruner.required_stats(opts):
        if calibration is None:
            raise UserError(f"{method!r} needs calibration data (--calibration)")
        calib = calibration if isinstance(calibration, data.Calibration) else data.calibration(
            calibration, tokenizer, nsamples, seqlen or data.default_seqlen(model), seed)
        check_token_ids(model, calib.tokens, f"calibration {calib.source}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = prune_model(model, pruner, sparsity, calib.tokens if calib else None, opts, dev, offload, batch_size, quiet)
    zeros = sum(layer["sparsity"] * math.prod(layer["shape"]) for layer in result["layers"].values())
    total = sum(math.prod(layer["shape"]) for layer in result["layers"].values())
    return {
        "method": method, "origin": origin_of("Pruner", method), "options": options_dict(opts),
        "sparsity": str(sparsity), "measured_sparsity": zeros / total if total else 0.0,
        "calibration": calib.describe() if calib else None, "seed": seed,
        "wall_seconds": time.perf_counter() - started, "layers": result["layers"],
        **{k: v for k, v in result.items() if k not in ("layers", "seconds")},
        "environment": environment(dev),
    }


def evaluate(model, tokenizer, evaluator: str = "perplexity", options: dict[str, Any] | None = None) -> EvalResult:
    """Run a registered evaluator on an in-memory model."""
    plugin = registry().evaluator(evaluator)
    started = time.perf_counter()
    result = plugin.evaluate(model, tokenizer, parse_options(plugin, options))
    result.protocol.setdefault("evaluator", evaluator)
    result.protocol.setdefault("seconds", time.perf_counter() - started)
    return result


def save_pruned(model, tokenizer, record: dict[str, Any], output: str | Path) -> Path:
    """Write the pruned model (safetensors), its tokenizer and pruning.json into `output`."""
    output = Path(output)
    model.save_pretrained(output)
    if tokenizer is not None:
        tokenizer.save_pretrained(output)
    write_json_atomic(output / "pruning.json", record)
    return output

