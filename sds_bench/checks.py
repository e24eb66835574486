"""What the engine checks in a plugin's output before it is used: a pruned weight, a whole-model prune, an
allocation, a metric.

A pruned Linear must keep its shape, come back as a floating-point tensor (cast to the layer's dtype, as the
engine stores it), be finite after that cast, keep every N:M group, and reach the unstructured target less the
reference codes' rounding: one weight per row (Wanda prunes int(cols*s) per row), one per column block (SparseGPT
prunes int(block numel*s)(+1) per block, blocks at least one column wide) or 0.1% of the matrix (Wanda's
cumulative variant, bisected to within 0.001), whichever is largest.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sds_bench.errors import UserError
from sds_bench.plugin import EvalResult
from sds_bench.sparsity import Sparsity, satisfies


class PluginOutputError(UserError):
    """A pruner or evaluator returned something the engine refuses to write back or record."""


def pruned_weight(pruner: str, layer: str, weight: torch.Tensor, new: Any, sparsity: Sparsity) -> torch.Tensor:
    """`new` cast to the weight's dtype, once it is a finite weight of the same shape that meets the target."""
    def fault(what: str) -> PluginOutputError:
        return PluginOutputError(f"pruner {pruner!r} returned {what} for {layer}")

    if not isinstance(new, torch.Tensor) or not new.is_floating_point():
        raise fault(f"a {getattr(new, 'dtype', type(new).__name__)} instead of a floating-point weight")
    if new.shape != weight.shape:
        raise fault(f"shape {list(new.shape)} instead of {list(weight.shape)}")
    new = new.to(weight.dtype)
    if not torch.isfinite(new).all():
        raise fault(f"{int((~torch.isfinite(new)).sum())} non-finite weights (NaN or infinite, in {weight.dtype})")
    if sparsity.is_nm and not satisfies(new, sparsity):
        raise fault(f"a weight breaking the {sparsity} pattern (a group of {sparsity.m} with fewer than "
                    f"{sparsity.n} zeros)")
    zeros, least = int((new == 0).sum()), least_zeros(weight.shape, sparsity)
    if zeros < least:
        raise fault(f"{zeros / new.numel():.2%} zeros, short of {sparsity} (at least {least} of {new.numel()} "
                    "weights zero, allowing the reference codes' rounding)")
    return new


def least_zeros(shape: torch.Size, sparsity: Sparsity) -> int:
    """Zeros a pruned [rows, cols] weight needs: n per m-group, else int(numel*s) less the rounding allowance."""
    rows, cols = shape
    if sparsity.is_nm:
        return rows * cols // sparsity.m * sparsity.n
    return max(0, int(rows * cols * sparsity.ratio) - max(rows, cols, rows * cols // 1000))


def pruned_model(pruner: str, model: nn.Module, record: Any, sparsity: Sparsity) -> dict[str, Any]:
    """The record of a whole-model prune, once each Linear it reports exists with the shape and the zeros it reports,
    every parameter is finite, and the parameters left in those Linears fit the budget it reports, which must meet
    the target."""
    def fault(what: str) -> PluginOutputError:
        return PluginOutputError(f"whole-model pruner {pruner!r} {what}")

    if not isinstance(record, dict) or not isinstance(record.get("layers"), dict):
        raise fault("returned no record of its layers (a dict with 'layers')")
    kept = 0
    for name, entry in record["layers"].items():
        kept += _reported_layer(model, name, entry, bool(record.get("shrunk")), fault)
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise fault(f"left non-finite values in {name}")
    if (budget := record.get("parameters")) is not None:
        _check_budget(budget, kept, sparsity, fault)
    return record


def _reported_layer(model: nn.Module, name: str, entry: dict, shrunk: bool,
                    fault: Callable[[str], PluginOutputError]) -> int:
    """Check one reported Linear against the model; its nonzero weights."""
    try:
        lin = model.get_submodule(name)
    except AttributeError:
        raise fault(f"reports a layer {name} that the model does not have") from None
    shape, removed = list(entry.get("shape", [])), float(entry.get("sparsity", 0.0))
    weight = lin.weight if isinstance(lin, nn.Linear) else None
    if weight is None or len(shape) != 2:
        raise fault(f"reports {name} as a Linear of shape {shape}, but it is {type(lin).__name__}")
    if shrunk:
        if weight.numel() != round(math.prod(shape) * (1 - removed)):
            raise fault(f"shrank {name} to {list(weight.shape)}, not {1 - removed:.2%} of its reported {shape}")
    elif list(weight.shape) != shape:
        raise fault(f"left {name} with shape {list(weight.shape)}, not its reported {shape}")
    elif float((weight == 0).float().mean()) < removed - 1e-6:
        raise fault(f"reports {removed:.2%} of {name} removed, but only {float((weight == 0).float().mean()):.2%} "
                    "of its weights are zero")
    return int((weight != 0).sum())


def _check_budget(budget: dict, kept: int, sparsity: Sparsity, fault: Callable[[str], PluginOutputError]) -> None:
    """The reported Linears hold at most the kept parameters, which are the target's share less half a structure
    per kind (the budget rounds halves)."""
    prunable, promised = budget.get("prunable"), budget.get("kept")
    if not isinstance(prunable, int) or not isinstance(promised, int) or prunable <= 0:
        raise fault(f"reports a parameter budget without integer 'prunable' and 'kept': {budget}")
    if kept > promised:
        raise fault(f"left {kept} nonzero weights in its layers, over the {promised} parameters it reports kept")
    rounding = sum(budget.get("per_structure", {}).values()) / 2
    if promised > prunable * (1 - sparsity.ratio) * (1 + 1e-9) + rounding:
        raise fault(f"kept {promised} of {prunable} prunable parameters, short of the target {sparsity}")


def allocation(allocator: str, result: Any, blocks: list[dict[str, Any]]) -> dict[str, float]:
    """An allocator's result, once it gives every prunable Linear (and nothing else) a sparsity in [0, 1)."""
    def fault(what: str) -> PluginOutputError:
        return PluginOutputError(f"allocator {allocator!r} returned {what}")

    if not isinstance(result, dict):
        raise fault(f"a {type(result).__name__} instead of a dict of sparsities by layer name")
    layers = [name for block in blocks for name in block]
    if missing := [n for n in layers if n not in result]:
        raise fault(f"no sparsity for {len(missing)} layers (first {missing[0]})")
    if extra := sorted(set(result) - set(layers)):
        raise fault(f"sparsities for {len(extra)} layers that are not prunable Linears (first {extra[0]})")
    for name in layers:
        value = result[name]
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
            raise fault(f"sparsity {value!r} for {name}; each must be a number in [0, 1) (lower the target or the "
                        "allocator's spread)")
    return {name: float(result[name]) for name in layers}


def metrics(evaluator: str, result: Any) -> EvalResult:
    """The evaluator's result, once it is an EvalResult whose every metric is a finite number."""
    if not isinstance(result, EvalResult):
        raise PluginOutputError(f"evaluator {evaluator!r} returned {type(result).__name__}, not an EvalResult")
    for name, value in result.metrics.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise PluginOutputError(f"evaluator {evaluator!r} gave metric {name!r} = {value!r}, not a finite number")
    return result
