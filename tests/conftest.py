"""Tiny randomly initialised OPT and Llama models, a tiny tokenizer and calibration tokens, built in-process."""

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

from sds_bench import testing
from sds_bench.embedded.build import train_bpe
from sds_bench.testing import VOCAB

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE = SHARED / "fixtures" / "reference-pruning"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No network, and no third-party entry points unless a test asks for them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("SDS_BENCH_PLUGINS", "none")
    from sds_bench import registry

    registry._REGISTRY = None
    yield
    registry._REGISTRY = None


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE of VOCAB tokens trained on Python's own documentation text."""
    import pydoc_data.topics

    return train_bpe(list(pydoc_data.topics.topics.values())[:50], VOCAB, ["</s>"], bos_token="</s>", eos_token="</s>")


@pytest.fixture
def tiny_opt():
    return testing.tiny_opt()


@pytest.fixture
def tiny_llama():
    return testing.tiny_llama()


@pytest.fixture(params=["opt", "llama"])
def tiny_model(request):
    return testing.tiny_opt() if request.param == "opt" else testing.tiny_llama()


def wide_model(arch: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A 2-block OPT or Llama (hidden 64) whose FFN input is 256 wide, so SparseGPT crosses a 128-column block."""
    torch.manual_seed(seed)
    if arch == "opt":
        config = OPTConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=256, num_attention_heads=4,
                           max_position_embeddings=64, word_embed_proj_dim=64, attn_implementation="eager")
        model = OPTForCausalLM(config)
    else:
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             attn_implementation="eager")
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


@pytest.fixture(params=["opt", "llama"])
def build_wide(request):
    """Builds a fresh `wide_model` of one architecture (each test gets both), in the dtype asked for."""
    return lambda dtype=torch.float32: wide_model(request.param, dtype)


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
    testing.tiny_opt().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def fixture_dir() -> Path:
    if not FIXTURE.is_dir():
        pytest.skip(f"reference fixtures not found at {FIXTURE} (../shared is absent in a bare clone)")
    return FIXTURE


@pytest.fixture
def pip_install(tmp_path, monkeypatch):
    """Really install a package directory (pip, no deps) into a fresh target and load its entry points."""
    import subprocess
    import sys

    def install(source: Path) -> Path:
        target = tmp_path / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(source)], check=True)
        monkeypatch.syspath_prepend(str(target))
        monkeypatch.delenv("SDS_BENCH_PLUGINS")
        from sds_bench import registry

        registry._REGISTRY = None
        return target

    return install
