"""Causal LMs whose decoder layers keep different numbers of attention heads and FFN channels.

Written next to a physically shrunk model by sds-bench's Týr pruner, so that the directory loads with
``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``: each class is the standard Hugging Face
model with every layer's projections narrowed to the widths in ``config.tyr_widths`` (kept KV groups of heads
under "attn", kept FFN channels under "ffn", one number per layer). Depends on torch and transformers only.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from transformers import (
    LlamaForCausalLM,
    MistralForCausalLM,
    OPTForCausalLM,
    Qwen2ForCausalLM,
    Qwen3ForCausalLM,
)

LAYOUTS = {
    "opt": {"attn": (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.out_proj"),
            "ffn": (("fc1",), "fc2")},
    "llama": {"attn": (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.o_proj"),
              "ffn": (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj")},
}
"""Per family and structure kind: the Linears whose output rows feed a structure, and the one whose input columns
read it. Attention structures are KV groups (one head each in multi-head attention)."""


def family(config) -> str:
    return "opt" if config.model_type == "opt" else "llama"


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.model.decoder.layers if family(model.config) == "opt" else model.model.layers


def structure_counts(config) -> dict[str, int]:
    """Structures per layer of the unpruned architecture: KV groups and FFN channels."""
    if family(config) == "opt":
        return {"attn": config.num_attention_heads, "ffn": config.ffn_dim}
    return {"attn": getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            "ffn": config.intermediate_size}


def narrowed_linear(linear: nn.Linear, dim: int, keep: torch.Tensor) -> nn.Linear:
    """A copy of `linear` with only the output rows (dim 0) or input columns (dim 1) where `keep` is True."""
    index = keep.nonzero().squeeze(1).to(linear.weight.device)
    weight = linear.weight.data.index_select(dim, index)
    new = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    new.weight = nn.Parameter(weight)
    new.out_features, new.in_features = weight.shape
    if linear.bias is not None:
        new.bias = nn.Parameter(linear.bias.data.index_select(0, index) if dim == 0 else linear.bias.data)
    return new


def narrow(model: nn.Module, keep: dict[str, list[torch.Tensor]]) -> None:
    """Drop, in every layer, the rows and columns of the structures whose `keep` entry is False (one bool per
    structure); an attention block with no head left outputs its output projection's bias."""
    counts = structure_counts(model.config)
    for i, layer in enumerate(decoder_layers(model)):
        for kind, (rows, cols) in LAYOUTS[family(model.config)].items():
            mask = keep[kind][i]
            for name in rows:
                linear = layer.get_submodule(name)
                _replace(layer, name, narrowed_linear(linear, 0, mask.repeat_interleave(linear.out_features // counts[kind])))
            linear = layer.get_submodule(cols)
            _replace(layer, cols, narrowed_linear(linear, 1, mask.repeat_interleave(linear.in_features // counts[kind])))
        if hasattr(layer.self_attn, "num_heads"):
            layer.self_attn.num_heads = int(keep["attn"][i].sum())
        if not keep["attn"][i].any():
            layer.self_attn.forward = functools.partial(_no_heads, layer.get_submodule(LAYOUTS[family(model.config)]["attn"][1]))


def _no_heads(out_proj: nn.Linear, hidden_states: torch.Tensor, *args, **kwargs):
    return out_proj(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), None


def _replace(parent: nn.Module, name: str, module: nn.Module) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(parent.get_submodule(owner) if owner else parent, attr, module)


def _narrowed_class(base: type) -> type:
    class Narrowed(base):
        def __init__(self, config):
            super().__init__(config)
            narrow(self, {kind: [torch.arange(structure_counts(config)[kind], device="cpu") < w for w in widths]
                          for kind, widths in config.tyr_widths.items()})

    Narrowed.__name__ = Narrowed.__qualname__ = f"Tyr{base.__name__}"
    Narrowed.__doc__ = f"{base.__name__} with per-layer widths from config.tyr_widths."
    return Narrowed


TyrOPTForCausalLM = _narrowed_class(OPTForCausalLM)
TyrLlamaForCausalLM = _narrowed_class(LlamaForCausalLM)
TyrMistralForCausalLM = _narrowed_class(MistralForCausalLM)
TyrQwen2ForCausalLM = _narrowed_class(Qwen2ForCausalLM)
TyrQwen3ForCausalLM = _narrowed_class(Qwen3ForCausalLM)
NARROWED = {cls.__mro__[1]: cls for cls in (TyrOPTForCausalLM, TyrLlamaForCausalLM, TyrMistralForCausalLM,
                                              TyrQwen2ForCausalLM, TyrQwen3ForCausalLM)}
"""The narrowed class of each supported Hugging Face class."""
