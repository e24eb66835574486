"""The embedded models' architectures: one transformers config factory per name, and the context they train at.

Kept apart from the training code (`build.py`) so that loading a model or the corpus imports no training or
evaluation code.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import LlamaConfig, OPTConfig, PretrainedConfig

from sds_bench.errors import UserError

CONTEXT = 256
"""max_position_embeddings, hence the default calibration and evaluation window of `data.default_seqlen`."""


def opt_tiny(vocab_size: int) -> OPTConfig:
    """OPT layout (pre-LayerNorm, ReLU MLP, learned positions, tied embeddings) at 128 wide, 4 deep."""
    return OPTConfig(vocab_size=vocab_size, hidden_size=128, word_embed_proj_dim=128, num_hidden_layers=4,
                     ffn_dim=512, num_attention_heads=4, max_position_embeddings=CONTEXT, dropout=0.0,
                     attention_dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2)


def llama_tiny(vocab_size: int) -> LlamaConfig:
    """LLaMA layout (RMSNorm, SwiGLU MLP, rotary positions, grouped-query attention) at 128 wide, 4 deep."""
    return LlamaConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=4, intermediate_size=352,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                       tie_word_embeddings=True, pad_token_id=1, bos_token_id=0, eos_token_id=2)


ARCHITECTURES: dict[str, Callable[[int], PretrainedConfig]] = {"opt-tiny": opt_tiny, "llama-tiny": llama_tiny}


def config_factory(name: str) -> Callable[[int], PretrainedConfig]:
    """The config factory (vocab size -> config) of embedded model `name`, or an error listing the known names."""
    if name not in ARCHITECTURES:
        raise UserError(f"unknown embedded model {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
