"""Calibration and evaluation text: the hub loaders SparseGPT and Wanda use, local files, token files, the embedded corpus.

Every dataset also loads from a local file (``data_file=`` or the environment variable ``SDS_BENCH_DATA_<NAME>``),
so everything runs offline.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sds_bench import embedded, files
from sds_bench.errors import UserError, at_least

C4_REPO = "allenai/c4"
C4_TRAIN = "en/c4-train.00000-of-01024.json.gz"
C4_VALID = "en/c4-validation.00000-of-00008.json.gz"
EVAL_DATASETS = ("wikitext2", "ptb", "c4", "embedded", "file")


@dataclass
class Calibration:
    """Calibration token windows [N, L] (int64) and where they came from."""

    tokens: torch.Tensor
    source: str
    seed: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.tokens.numpy().tobytes()).hexdigest()

    def describe(self) -> dict:
        n, l = self.tokens.shape
        return {"source": self.source, "nsamples": n, "seqlen": l, "seed": self.seed, "sha256": self.sha256}


def default_seqlen(model) -> int:
    """The model's context length, capped at 2048 (the SparseGPT/Wanda setting)."""
    return min(int(getattr(model.config, "max_position_embeddings", 2048)), 2048)


def resolve_seqlen(model, seqlen: int | None) -> int:
    """`seqlen`, or the default when None, once it is a window the model has positions for."""
    if seqlen is None:
        return default_seqlen(model)
    positions = getattr(model.config, "max_position_embeddings", None)
    at_least("seqlen", seqlen)
    if positions is not None and seqlen > positions:
        raise UserError(f"seqlen {seqlen} is beyond the model's {positions} positions")
    return seqlen


def calibration(source: str, tokenizer=None, nsamples: int = 128, seqlen: int = 2048, seed: int = 0) -> Calibration:
    """Calibration windows from 'c4', 'wikitext2', 'embedded', a text file, or a token file (.pt/.npy, used as given)."""
    at_least("nsamples", nsamples)
    path = Path(source)
    if path.suffix in (".pt", ".npy"):
        return Calibration(load_token_file(path), str(path), seed)
    if source == "c4" or source.endswith(".json.gz"):
        local = source != "c4"
        docs = files.read_jsonl(source) if local else _c4_documents(C4_TRAIN)
        return Calibration(_sample_documents(docs, tokenizer, nsamples, seqlen, seed), source if local else f"c4:{C4_TRAIN}", seed)
    if source in ("wikitext2", "embedded") or path.suffix in (".txt", ".raw", ".json", ".jsonl"):
        if source == "wikitext2":
            text = " ".join(_wikitext2_rows("train"))
        elif source == "embedded":
            text = embedded.corpus_text("train")
        else:
            text = read_text_file(path)
        ids = _tokenize(tokenizer, text)
        return Calibration(_sample_windows(ids, nsamples, seqlen, seed), source, seed)
    raise UserError(f"unknown calibration source {source!r}; use c4, wikitext2, embedded, a text file, or a .pt/.npy token file")


def load_token_file(path: Path) -> torch.Tensor:
    """An int64 [N, L] token array from .pt (weights_only) or .npy, checked for dtype and shape."""
    tokens = files.read_token_array(path)
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.int64 or tokens.dim() != 2:
        what = f"{tokens.dtype} {list(tokens.shape)}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise UserError(f"token file {str(path)!r} must hold an int64 array of shape [N, L]; got {what}")
    return tokens


def eval_tokens(dataset: str, tokenizer, seqlen: int, data_file: str | None = None) -> tuple[torch.Tensor, dict]:
    """The token stream [1, T] a perplexity evaluation runs on, and where it came from."""
    data_file = data_file or os.environ.get(f"SDS_BENCH_DATA_{dataset.upper()}")
    if dataset == "wikitext2":
        text = read_text_file(Path(data_file)) if data_file else "\n\n".join(_wikitext2_rows("test"))
        split = "test"
    elif dataset == "ptb":
        rows = _rows_from_file(data_file, "sentence") if data_file else _hub_rows("ptb_text_only", "penn_treebank", "test", "sentence")
        text, split = " ".join(r.strip() if data_file else r for r in rows), "test"
    elif dataset == "c4":
        docs = _rows_from_file(data_file) if data_file else _c4_documents(C4_VALID)
        ids = _tokenize(tokenizer, " ".join(docs[:1100]))[:, : 256 * seqlen]
        return ids, {"dataset": "c4", "split": "validation", "source": data_file or C4_VALID}
    elif dataset == "embedded":
        text, split = embedded.corpus_text("test"), "test"
    elif dataset == "file":
        if not data_file:
            raise UserError("dataset 'file' needs a data file (--data-file)")
        text, split = read_text_file(Path(data_file)), "file"
    else:
        raise UserError(f"unknown evaluation dataset {dataset!r}; use one of {', '.join(EVAL_DATASETS)}")
    return _tokenize(tokenizer, text), {"dataset": dataset, "split": split, "source": data_file or "hub",
                                        "text_sha256": hashlib.sha256(text.encode()).hexdigest()}


def read_text_file(path: Path) -> str:
    """Text of a .txt/.raw file, or the joined rows of a JSON list / JSON Lines file."""
    return "\n\n".join(_rows_from_file(str(path))) if path.suffix in (".json", ".jsonl") else files.read_text(path)


def _rows_from_file(path: str, field: str = "text") -> list[str]:
    """Rows of a local copy: a JSON list of strings, JSON Lines (or the hub's gzip'd .json.gz) with the dataset's
    text column `field`, or one row per line."""
    if path.endswith(".json"):
        return files.read_json_strings(path)
    if path.endswith((".jsonl", ".json.gz", ".jsonl.gz")):
        return files.read_jsonl(path, field)
    return files.read_text(path).splitlines()


def _tokenize(tokenizer, text: str) -> torch.Tensor:
    if tokenizer is None:
        raise UserError("this dataset needs the model's tokenizer, and none was found beside the model")
    return tokenizer(text, return_tensors="pt").input_ids


def _sample_windows(ids: torch.Tensor, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """nsamples random windows of one long token stream (SparseGPT's WikiText-2 / PTB calibration)."""
    if ids.shape[1] <= seqlen:
        raise UserError(f"calibration text has {ids.shape[1]} tokens, fewer than seqlen+1 = {seqlen + 1}")
    random.seed(seed)
    starts = [random.randint(0, ids.shape[1] - seqlen - 1) for _ in range(nsamples)]
    return torch.cat([ids[:, i : i + seqlen] for i in starts])


def _sample_documents(docs: Sequence[str], tokenizer, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """SparseGPT/Wanda C4 calibration: a random document with more than seqlen tokens, a random window of it (the
    same draws; where the reference would redraw forever, because no document is long enough, this stops)."""
    if not len(docs):
        raise UserError("the calibration source holds no documents")
    random.seed(seed)
    windows, short = [], set()
    for _ in range(nsamples):
        while True:
            j = random.randint(0, len(docs) - 1)
            if j in short:
                continue
            ids = _tokenize(tokenizer, docs[j])
            if ids.shape[1] > seqlen:
                break
            short.add(j)
            if len(short) == len(docs):
                raise UserError(f"no calibration document has more than seqlen = {seqlen} tokens")
        i = random.randint(0, ids.shape[1] - seqlen - 1)
        windows.append(ids[:, i : i + seqlen])
    return torch.cat(windows)


def _wikitext2_rows(split: str) -> list[str]:
    return _hub_rows("wikitext", "wikitext-2-raw-v1", split, "text")


def _c4_documents(data_file: str) -> list[str]:
    """The `text` of every document of one allenai/c4 shard, fetched into (or, offline, read from) the hub cache: the
    rows `datasets.load_dataset("allenai/c4", data_files=...)` yields, which offline finds no shard in that cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        path = hf_hub_download(C4_REPO, data_file, repo_type="dataset")
    except (HfHubHTTPError, OSError) as e:  # LocalEntryNotFoundError (offline, not cached) is an OSError
        raise UserError(f"cannot load {C4_REPO} {data_file} from the hub or the local cache ({type(e).__name__}); "
                        "pass a local shard (--calibration FILE.json.gz, SDS_BENCH_DATA_C4)") from e
    return files.read_jsonl(path)


def _hub_rows(path: str, name: str, split: str, column: str) -> list[str]:
    return _load_hub(path, name, split)[column]


def _load_hub(path: str, name: str | None, split: str):
    """datasets.load_dataset, with a one-line error when neither the hub nor a local cache has it."""
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as e:
        raise UserError(
            f"cannot load dataset {path}{'/' + name if name else ''} ({split}) from the hub or the local cache "
            f"({type(e).__name__}); pass a local copy with --data-file or SDS_BENCH_DATA_*"
        ) from e
