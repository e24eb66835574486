"""Perplexity on WikiText-2 / PTB / C4 / the embedded corpus / a text file, as SparseGPT and Wanda measure it.

The text is tokenized once and cut into non-overlapping windows of seqlen tokens (the tail dropped);
ppl = exp(mean over windows of the mean token negative log-likelihood).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sds_bench.data import eval_tokens, resolve_seqlen
from sds_bench.errors import UserError
from sds_bench.hookspecs import hookimpl
from sds_bench.models import check_token_ids
from sds_bench.plugin import EvalResult, Evaluator, option


@dataclass
class PerplexityOptions:
    dataset: str = "wikitext2"
    """wikitext2, ptb, c4, embedded, or file (with data_file)."""
    data_file: str | None = None
    """A local copy of the dataset (see sds_bench.data); also SDS_BENCH_DATA_<DATASET>."""
    seqlen: int | None = option(None, ge=1)
    """Window length; default the model's context length capped at 2048."""
    batch_size: int = option(1, ge=1)
    max_windows: int | None = option(None, ge=1)
    """Evaluate only the first windows (for quick checks; the published protocol uses all)."""
    quiet: bool = False


def windows(ids: torch.Tensor, seqlen: int) -> torch.Tensor:
    """The non-overlapping seqlen windows [W, seqlen] of ids [1, T], the tail dropped."""
    return ids[0, : ids.shape[1] // seqlen * seqlen].reshape(-1, seqlen)


def eval_windows(model, tokenizer, options: PerplexityOptions) -> tuple[torch.Tensor, dict]:
    """The dataset's evaluation windows for this model (checked against its vocabulary), and their protocol."""
    seqlen = resolve_seqlen(model, options.seqlen)
    ids, protocol = eval_tokens(options.dataset, tokenizer, seqlen, options.data_file)
    if options.max_windows:
        ids = ids[:, : options.max_windows * seqlen]
    check_token_ids(model, ids, options.dataset)
    if ids.shape[1] < seqlen:
        raise UserError(f"{options.dataset}: {ids.shape[1]} tokens are fewer than one window of {seqlen}")
    return windows(ids, seqlen), {**protocol, "seqlen": seqlen, "max_windows": options.max_windows}


@torch.no_grad()
def window_nlls(model, windows: torch.Tensor, batch_size: int = 1, quiet: bool = False) -> torch.Tensor:
    """Mean token NLL of each window [W, seqlen]."""
    device = next(model.parameters()).device
    nlls = []
    for batch in tqdm(windows.split(batch_size), desc="perplexity", unit="batch", disable=quiet):
        batch = batch.to(device)
        logits = model(batch, use_cache=False).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
        nlls.append(loss.mean(dim=1).cpu())
    return torch.cat(nlls)


def perplexity(model, tokenizer, options: PerplexityOptions) -> EvalResult:
    """Perplexity of the model on the chosen dataset, with the protocol that produced it."""
    windows, protocol = eval_windows(model, tokenizer, options)
    nlls = window_nlls(model, windows, options.batch_size, options.quiet)
    ppl = math.exp(nlls.mean().item())
    return EvalResult({f"ppl_{options.dataset}": ppl},
                      {**protocol, "windows": nlls.numel(), "tokens": windows.numel(),
                       "metric": "perplexity: exp(mean over windows of mean token NLL)"})


@hookimpl
def register_evaluators(register):
    register(Evaluator("perplexity", "Perplexity over non-overlapping windows (SparseGPT/Wanda protocol)",
                       evaluate=perplexity, options=PerplexityOptions))
