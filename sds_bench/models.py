"""Model loading and adapters: where the decoder blocks, embeddings and prunable Linears of a causal LM are."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sds_bench.errors import UserError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Adapter:
    """Paths (dotted attribute names) of one architecture's parts."""

    family: str
    blocks: str
    pre_blocks: tuple[str, ...]

    def decoder_blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks)

    def embedding_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules that run before block 0 (embeddings, rotary, projections): moved to the device for capture."""
        return [model.get_submodule(p) for p in self.pre_blocks if _has(model, p)]


ADAPTERS = {
    "opt": Adapter("opt", "model.decoder.layers",
                   ("model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.project_in")),
    **{t: Adapter("llama", "model.layers", ("model.embed_tokens", "model.rotary_emb"))
       for t in ("llama", "mistral", "qwen2", "qwen3")},
}


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of the model's architecture, or a clear error listing the supported ones."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise UserError(f"unsupported architecture {model_type!r}; supported: {', '.join(ADAPTERS)}")
    return ADAPTERS[model_type]


def prunable_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside a decoder block, by its name relative to the block."""
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """Distinct (out_features, in_features) of the prunable Linears, in first-seen order."""
    blocks = adapter_for(model).decoder_blocks(model)
    return list(dict.fromkeys((m.out_features, m.in_features) for b in blocks for m in prunable_linears(b).values()))


def resolve_device(device: str | None) -> torch.device:
    """'cpu', 'cuda', 'cuda:1' or None (CUDA if present); a clear error when CUDA is asked for and absent."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but CUDA is not available on this machine")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"bad device {device!r}; use cpu, cuda or cuda:N") from None


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"bad dtype {dtype!r}; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_model_path(name: str) -> str:
    """A local directory, an embedded model ('embedded:opt-tiny'), or a hub id (returned as is)."""
    if name.startswith("embedded:"):
        from sds_bench import embedded

        return str(embedded.model_dir(name.removeprefix("embedded:")))
    if os.path.exists(name) and not os.path.isdir(name):
        raise UserError(f"model path {name!r} is a file; give a model directory or a hub id")
    if not os.path.isdir(name) and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise UserError(f"model directory {name!r} does not exist")
    return name


def load_model(name: str, dtype: str | torch.dtype | None = None, device: str | None = "cpu",
               attn_implementation: str | None = None):
    """Load a causal LM and its tokenizer from a local directory, an embedded name or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name)
    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": ships_own_code(path)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise UserError(f"cannot load model {name!r}: {_first_line(e)}") from e
    try:  # a local directory without tokenizer files has none (transformers would build an empty one from config)
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer(path) else None
    except (OSError, ValueError, TypeError):
        tokenizer = None
    model.config.use_cache = False
    model.eval()
    adapter_for(model)
    return model.to(resolve_device(device)), tokenizer


def check_token_ids(model, ids: torch.Tensor, what: str) -> None:
    """Refuse token ids the model has no embedding for (a tokenizer or token file made for another model)."""
    vocab = model.get_input_embeddings().num_embeddings
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise UserError(f"{what}: token ids span {int(ids.min())}..{int(ids.max())}, but the model's vocabulary has "
                        f"{vocab} tokens; was it tokenized for another model?")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


def has_tokenizer(path: str) -> bool:
    """Whether `path` may hold a tokenizer: any hub id, or a local directory with a tokenizer file."""
    local = Path(path)
    return not local.is_dir() or any((local / f).is_file() for f in TOKENIZER_FILES)


def ships_own_code(path: str) -> bool:
    """True for a local directory whose config maps to modeling code inside it (e.g. a physically shrunk Týr model):
    that code was written by this suite, so it is trusted; hub repositories' code never is."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    modules = [ref.split(".")[0] for ref in json.loads(config.read_text()).get("auto_map", {}).values()]
    return bool(modules) and all((Path(path) / f"{m}.py").is_file() for m in modules)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _has(model: nn.Module, path: str) -> bool:
    try:
        return model.get_submodule(path) is not None
    except AttributeError:
        return False
