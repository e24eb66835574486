"""The Linear shapes a 2:4 benchmark times: read from a model's config alone (meta device, no weights downloaded).

The paper's models have built-in configs, so ``--model facebook/opt-125m`` works offline; any other hub id needs its
config in the Hugging Face cache or a network, and a local directory or ``embedded:NAME`` is read from disk.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from sds_bench.errors import UserError
from sds_bench.models import linear_shapes, resolve_model_path

# The architecture fields of the official configs: what fixes every Linear shape and the forward pass's cost.
_OPT = {"vocab_size": 50272, "max_position_embeddings": 2048}
_LLAMA = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32}
KNOWN_CONFIGS: dict[str, tuple[str, dict]] = {
    "opt-125m": ("opt", {**_OPT, "hidden_size": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
                         "num_attention_heads": 12, "word_embed_proj_dim": 768}),
    "opt-350m": ("opt", {**_OPT, "hidden_size": 1024, "ffn_dim": 4096, "num_hidden_layers": 24,
                         "num_attention_heads": 16, "word_embed_proj_dim": 512, "do_layer_norm_before": False}),
    "opt-1.3b": ("opt", {**_OPT, "hidden_size": 2048, "ffn_dim": 8192, "num_hidden_layers": 24,
                         "num_attention_heads": 32, "word_embed_proj_dim": 2048}),
    "opt-2.7b": ("opt", {**_OPT, "hidden_size": 2560, "ffn_dim": 10240, "num_hidden_layers": 32,
                         "num_attention_heads": 32, "word_embed_proj_dim": 2560}),
    "llama-7b": ("llama", {**_LLAMA, "intermediate_size": 11008, "vocab_size": 32000, "max_position_embeddings": 2048,
                           "rms_norm_eps": 1e-6}),
    "llama-2-7b": ("llama", {**_LLAMA, "intermediate_size": 11008, "vocab_size": 32000,
                             "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}),
    "llama-3-8b": ("llama", {**_LLAMA, "intermediate_size": 14336, "num_key_value_heads": 8, "vocab_size": 128256,
                             "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0}),
}


@dataclass(frozen=True)
class LinearShape:
    """One weight shape (out_features x in_features) and the models whose decoder blocks contain it."""

    out_features: int
    in_features: int
    models: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.out_features}x{self.in_features}"


def known_key(name: str) -> str:
    """The built-in config key of a hub id: 'facebook/opt-125m' -> 'opt-125m', 'meta-llama/Llama-2-7b-hf' -> 'llama-2-7b'."""
    return name.rsplit("/", 1)[-1].lower().removesuffix("-hf").removeprefix("meta-")


def model_label(name: str) -> str:
    """A short name for tables: the hub id's or directory's last part."""
    return name.rstrip("/").rsplit("/", 1)[-1]


def model_config(name: str):
    """The config of a local directory or embedded model, a built-in paper model, or (cache/network) a hub id."""
    from transformers import AutoConfig

    path = resolve_model_path(name)
    if os.path.isdir(path):
        return AutoConfig.from_pretrained(path)
    if known_key(name) in KNOWN_CONFIGS:
        model_type, fields = KNOWN_CONFIGS[known_key(name)]
        return AutoConfig.for_model(model_type, **fields)
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the config of {name!r} ({type(e).__name__}; offline?); built-in configs: "
                        f"{', '.join(KNOWN_CONFIGS)}, or give a local model directory") from None


def model_shapes(name: str) -> list[tuple[int, int]]:
    """Distinct (out, in) of the prunable Linears, from the architecture built on the meta device (no memory)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config(name))
    return linear_shapes(model)


def collect_shapes(models: list[str]) -> list[LinearShape]:
    """The distinct shapes of several models, in first-seen order, each naming the models it comes from."""
    owners: dict[tuple[int, int], list[str]] = {}
    for name in models:
        for shape in model_shapes(name):
            owners.setdefault(shape, []).append(model_label(name))
    return [LinearShape(out, inp, tuple(dict.fromkeys(names))) for (out, inp), names in owners.items()]


def parse_pairs(text: str, what: str, example: str) -> list[tuple[int, int]]:
    """'4096x4096,11008x4096' -> [(4096, 4096), (11008, 4096)], distinct; a one-line error on anything else."""
    pairs = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        if (match := re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)", item)) is None or 0 in (int(match[1]), int(match[2])):
            raise UserError(f"bad {what} {item!r}; use positive sizes such as {example}")
        pairs.append((int(match[1]), int(match[2])))
    if not pairs:
        raise UserError(f"no {what} given; use e.g. {example}")
    return list(dict.fromkeys(pairs))


def parse_shapes(text: str) -> list[LinearShape]:
    """'4096x4096,11008x4096' (out x in, as a Linear's weight) -> shapes."""
    return [LinearShape(out, inp) for out, inp in parse_pairs(text, "shape", "11008x4096 (OUTxIN)")]
