"""Model loading and adapters: where the decoder blocks, embeddings and prunable Linears of a causal LM are."""

from __future__ import annotations

import os
import pickle
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from sds_bench import embedded, files
from sds_bench.errors import UserError, first_line

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
        return str(embedded.model_dir(name.removeprefix("embedded:")))
    if os.path.exists(name) and not os.path.isdir(name):
        raise UserError(f"model path {name!r} is a file; give a model directory or a hub id")
    if not os.path.isdir(name) and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise UserError(f"model directory {name!r} does not exist")
    return name


def load_model(name: str, dtype: str | torch.dtype | None = None, device: str | None = "cpu",
               attn_implementation: str | None = None, trust_remote_code: bool = False):
    """Load a causal LM and its tokenizer from a local directory, an embedded name or a hub id.

    Modeling code shipped beside a model (config.json `auto_map`) runs only with `trust_remote_code=True`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name)
    check_reachable(name)
    if os.path.isdir(path):
        check_model_dir(path, trust_remote_code)
    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError, EOFError, struct.error, SafetensorError, pickle.UnpicklingError) as e:
        raise UserError(f"cannot load model {name!r}: {_load_cause(path, e)}") from e
    try:  # a local directory without tokenizer files has none (transformers would build an empty one from config)
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer(path) else None
    except (OSError, ValueError, TypeError):
        tokenizer = None
    model.config.use_cache = False
    model.eval()
    adapter_for(model)
    return model.to(resolve_device(device)), tokenizer


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_dir(path: str, trust_remote_code: bool = False) -> None:
    """Refuse, in one line, a local model directory that is empty, lacks a usable config.json or weights, has
    corrupt weights, or would run its own modeling code without `trust_remote_code`."""
    local = Path(path)
    if not any(local.iterdir()):
        raise UserError(f"model directory {path!r} is empty")
    config_file = local / "config.json"
    if not config_file.is_file():
        raise UserError(f"model directory {path!r} has no config.json")
    config = files.read_json(config_file, "model config")
    if not isinstance(config, dict):
        raise UserError(f"{config_file} must hold a JSON object, not {type(config).__name__}")
    if "model_type" not in config:
        raise UserError(f"{config_file} has no 'model_type'; supported: {', '.join(ADAPTERS)}")
    if config["model_type"] not in ADAPTERS:
        raise UserError(f"{config_file}: unsupported architecture {config['model_type']!r}; "
                        f"supported: {', '.join(ADAPTERS)}")
    code = sorted({f"{ref.split('.')[0]}.py" for ref in (config.get("auto_map") or {}).values()
                   if isinstance(ref, str)})
    if code and not trust_remote_code:
        raise UserError(f"model directory {path!r} ships its own modeling code ({', '.join(code)}), which would run "
                        "on load; pass --trust-remote-code (or trust_remote_code=True) to allow it")
    weights = [local / f for f in WEIGHT_FILES if (local / f).is_file()]
    if not weights:
        raise UserError(f"model directory {path!r} holds no weights ({' or '.join(WEIGHT_FILES[::2])})")
    if weights[0].name == "model.safetensors":
        try:  # opening validates the header and that the data covers the file exactly (truncation)
            with safe_open(str(weights[0]), framework="pt"):
                pass
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{weights[0]} is corrupt: {first_line(e)}") from None


def _load_cause(path: str, e: BaseException) -> str:
    """One plain line for a from_pretrained failure; torch's weights_only advice is replaced by the plain cause."""
    text = first_line(e)
    local = Path(path)
    if (local / "pytorch_model.bin").is_file() and ("weights_only" in str(e) or isinstance(e, pickle.UnpicklingError)):
        return (f"{local / 'pytorch_model.bin'} cannot be loaded safely: it holds pickled objects other than "
                "tensors; save the model with safetensors")
    if (local / "pytorch_model.bin").is_file() and os.path.isdir(path):
        return f"{local / 'pytorch_model.bin'} is not a readable checkpoint: {text}"
    return text


def check_reachable(name: str) -> None:
    """A local or embedded model must exist; a hub id must be in the local cache or the hub must answer."""
    path = resolve_model_path(name)
    if os.path.isdir(path):
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    if offline or not _reachable(constants.ENDPOINT):
        raise UserError(f"model {name!r} is not in the local Hugging Face cache and the hub ({constants.ENDPOINT}) "
                        f"{'is off (HF_HUB_OFFLINE)' if offline else 'cannot be reached'}; "
                        "run where the hub is reachable or fill the cache (HF_HOME) first")


def hub_revision(name: str) -> str | None:
    """The commit of a hub model as loaded (the cached snapshot of its config.json); None for a local or embedded
    model. (transformers 5 no longer records it on the config as `_commit_hash`.)"""
    if os.path.isdir(resolve_model_path(name)):
        return None
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(name, "config.json")
    return Path(config).parent.name if isinstance(config, str) else None


def _reachable(url: str, timeout: float = 5.0) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


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


def _has(model: nn.Module, path: str) -> bool:
    try:
        return model.get_submodule(path) is not None
    except AttributeError:
        return False
