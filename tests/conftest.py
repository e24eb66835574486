"""Tiny randomly initialised OPT and Llama models, a tiny tokenizer and calibration tokens, built in-process."""

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE = SHARED / "fixtures" / "reference-pruning"
VOCAB = 320


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No network, no third-party entry points unless a test asks for them, two threads as on CI."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("SDS_BENCH_PLUGINS", "none")
    from sds_bench import registry

    registry._REGISTRY = None
    yield
    registry._REGISTRY = None


def make_opt(seed: int = 0, layers: int = 2) -> OPTForCausalLM:
    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, ffn_dim=64, num_attention_heads=4,
                       max_position_embeddings=64, word_embed_proj_dim=32, attn_implementation="eager")
    return OPTForCausalLM(config).eval()


def make_llama(seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attn_implementation="eager")
    return LlamaForCausalLM(config).eval()


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE of VOCAB tokens trained on Python's own documentation text."""
    import pydoc_data.topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(pydoc_data.topics.topics.values())[:50], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>")


@pytest.fixture
def tiny_opt() -> OPTForCausalLM:
    return make_opt()


@pytest.fixture
def tiny_llama() -> LlamaForCausalLM:
    return make_llama()


@pytest.fixture(params=["opt", "llama"])
def tiny_model(request):
    return make_opt() if request.param == "opt" else make_llama()


@pytest.fixture
def calib_tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (8, 32), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def opt_dir(tmp_path, tokenizer) -> Path:
    """A saved tiny OPT with its tokenizer: what `sds-bench prune` reads from disk."""
    path = tmp_path / "opt"
    make_opt().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def fixture_dir() -> Path:
    if not FIXTURE.is_dir():
        pytest.skip(f"reference fixtures not found at {FIXTURE} (../shared is absent in a bare clone)")
    return FIXTURE
