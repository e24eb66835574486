"""Divergence from the dense model: mean per-token KL(dense || pruned) and top-1 agreement on a dataset's windows.

Perplexity says how well the pruned model predicts the text; KL says how far it moved from the model it was pruned
from, token by token (the distillation view; it separates methods whose perplexities tie). Same windows as
perplexity (`eval_windows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sds_bench.eval.perplexity import PerplexityOptions, eval_windows
from sds_bench.hookspecs import hookimpl
from sds_bench.plugin import DENSE_MODEL, EvalResult, Evaluator


@dataclass
class KLOptions(PerplexityOptions):
    """The perplexity evaluator's options: dataset, data_file, seqlen, batch_size, max_windows, quiet."""


@torch.no_grad()
def kl(model, tokenizer, options: KLOptions, *, dense) -> EvalResult:
    """Mean over every predicted token of KL(p_dense || p_pruned) in nats, and the share of tokens where both models'
    most likely next token agree."""
    windows, protocol = eval_windows(model, tokenizer, options)
    device = next(model.parameters()).device
    total, agree, tokens = 0.0, 0, 0
    for batch in tqdm(windows.split(options.batch_size), desc="kl", unit="batch", disable=options.quiet):
        batch = batch.to(device)
        log_q = F.log_softmax(model(batch, use_cache=False).logits.float(), dim=-1)
        log_p = F.log_softmax(dense(batch.to(next(dense.parameters()).device), use_cache=False).logits.float(),
                              dim=-1).to(device)
        total += float(F.kl_div(log_q, log_p, log_target=True, reduction="sum"))
        agree += int((log_q.argmax(-1) == log_p.argmax(-1)).sum())
        tokens += batch.numel()
    return EvalResult({f"kl_{options.dataset}": total / tokens, f"top1_{options.dataset}": agree / tokens},
                      {**protocol, "windows": len(windows), "tokens": tokens,
                       "dense_model": getattr(dense.config, "_name_or_path", None),
                       "metric": "kl: mean per-token KL(dense || pruned), nats; top1: share of tokens whose argmax "
                                 "next token agrees"})


@hookimpl
def register_evaluators(register):
    register(Evaluator("kl", "Mean per-token KL(dense || pruned) and top-1 agreement with the dense model",
                       evaluate=kl, options=KLOptions, needs=(DENSE_MODEL,)))
