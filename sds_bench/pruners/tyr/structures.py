"""The structures Týr prunes, the exact parameter budget, and how a kept set is written into a model.

A structure is an attention KV group (the query heads that share one key/value head, with that key and value
head; one head in multi-head attention) or an FFN channel. It owns rows of the projections that feed it
(q/k/v; fc1 or gate/up, with their bias entries) and input columns of the projection that reads it (the
attention output projection; fc2 or down_proj). Embeddings, lm_head, norms, output biases, hidden size and depth
are untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sds_bench.errors import UserError
from sds_bench.models import adapter_for
from sds_bench.sparsity import Sparsity


@dataclass(frozen=True)
class Kind:
    """One kind of structure ("attn" or "ffn") in a given architecture."""

    name: str
    rows: tuple[str, ...]
    """Linears (relative to a decoder block) whose output rows feed the structure."""
    cols: str
    """The Linear whose input columns read it."""
    count: int
    """Structures per layer."""
    width: int
    """Input columns of `cols` per structure (KV group heads x head_dim; 1 for a channel)."""
    params: int
    """Parameters per structure: its rows with their bias entries, and its columns."""


def kinds(model: nn.Module) -> list[Kind]:
    """The structure kinds of a supported model, with per-structure sizes read from its first block."""
    from sds_bench.pruners.tyr import modeling_tyr  # on use: it imports five transformers model classes

    blocks = adapter_for(model).decoder_blocks(model)
    block = blocks[0]
    out = []
    for name, count in modeling_tyr.structure_counts(model.config).items():
        rows, cols = modeling_tyr.LAYOUTS[modeling_tyr.family(model.config)][name]
        if len({b.get_submodule(cols).in_features for b in blocks}) > 1:
            raise UserError(f"structural pruning needs layers of equal width; {cols} differs across layers "
                            "(is this model already shrunk?)")
        row_params = sum((lin.out_features // count) * (lin.in_features + (lin.bias is not None))
                         for lin in (block.get_submodule(r) for r in rows))
        reader = block.get_submodule(cols)
        out.append(Kind(name, rows, cols, count, reader.in_features // count,
                        row_params + reader.out_features * (reader.in_features // count)))
    return out


def budget(kind: Kind, layers: int, sparsity: Sparsity) -> int:
    """Structures of this kind kept over the whole model: all of them minus round(s * all), halves rounded up."""
    if sparsity.is_nm:
        raise UserError(f"structural pruning takes a fraction such as 0.5, not the N:M pattern {sparsity}")
    total = kind.count * layers
    return total - math.floor(sparsity.ratio * total + 0.5)


def uniform(kept: int, layers: int) -> list[int]:
    """The most even per-layer split of `kept` structures; the remainder goes one each to evenly spaced layers."""
    base, extra = divmod(kept, layers)
    bumped = {(j * layers) // extra for j in range(extra)} if extra else set()
    return [base + (i in bumped) for i in range(layers)]


def expand(keep: torch.Tensor, width: int) -> torch.Tensor:
    """Per-structure flags to per-index flags along a projection dimension."""
    return keep.repeat_interleave(width)


@torch.no_grad()
def zero_pruned(block: nn.Module, kind: Kind, keep: torch.Tensor) -> None:
    """Zero, in place, the rows (weights and bias entries) and columns owned by the structures not kept."""
    for name in kind.rows:
        lin = block.get_submodule(name)
        rows = ~expand(keep, lin.out_features // kind.count).to(lin.weight.device)
        lin.weight.data[rows] = 0
        if lin.bias is not None:
            lin.bias.data[rows] = 0
    reader = block.get_submodule(kind.cols)
    reader.weight.data[:, ~expand(keep, kind.width).to(reader.weight.device)] = 0


def layer_records(block: nn.Module, prefix: str, kind: Kind, keep: torch.Tensor) -> dict[str, dict]:
    """pruning.json entries of the Linears a kind touches: original shape, fraction of weights removed, kept count."""
    kept = int(keep.sum())
    return {f"{prefix}.{name}": {"shape": [lin.out_features, lin.in_features], "sparsity": 1 - kept / kind.count,
                                 "kept": kept, "of": kind.count}
            for name in (*kind.rows, kind.cols) for lin in [block.get_submodule(name)]}


def shrink(model: nn.Module, keep: dict[str, list[torch.Tensor]]) -> None:
    """Physically remove the pruned structures: the model becomes its Tyr* class (see modeling_tyr), which
    save_pretrained writes with its code so that the directory loads with from_pretrained(trust_remote_code=True)."""
    from sds_bench.pruners.tyr import modeling_tyr

    cls = modeling_tyr.NARROWED.get(type(model))
    if cls is None:
        raise UserError(f"shrink supports {', '.join(c.__name__ for c in modeling_tyr.NARROWED)}, "
                        f"not {type(model).__name__}")
    modeling_tyr.narrow(model, keep)
    model.__class__ = cls
    model.config.tyr_widths = {kind: [int(k.sum()) for k in masks] for kind, masks in keep.items()}
    cls.register_for_auto_class("AutoModelForCausalLM")
