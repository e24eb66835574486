"""Build an embedded model from scratch: a byte-level BPE tokenizer and a small causal LM trained on the corpus.

`sds-bench embedded build` runs `build()`; its output is what ships under ``sds_bench/embedded/assets/<name>/``
(weights, tokenizer, ``build_info.json`` with the corpus sha256, the recipe and the perplexities it reached).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from sds_bench.embedded.configs import CONTEXT, config_factory
from sds_bench.embedded.corpus import SPLITS, corpus_sha256, corpus_text
from sds_bench.eval.perplexity import window_nlls, windows
from sds_bench.record import environment, write_json_atomic

VOCAB_SIZE = 4096
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
"""At OPT's ids 0-3; the tokenizer adds none of them to encoded text, so a text is one unbroken token stream."""


@dataclass(frozen=True)
class Recipe:
    """How an embedded model is trained: AdamW, linear warm-up then cosine decay, random windows of the train split."""

    steps: int = 2000
    batch_size: int = 8
    seqlen: int = CONTEXT
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0
    threads: int = 1


def train_bpe(documents: Iterable[str], vocab_size: int, special_tokens: Sequence[str], **roles: str):
    """A byte-level BPE (GPT-2/OPT style) trained on `documents`, its special tokens first, loadable with
    AutoTokenizer; `roles` name them (bos_token=..., eos_token=...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(documents, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **roles)


def train_tokenizer(text: str, vocab_size: int = VOCAB_SIZE):
    """The embedded models' tokenizer: a byte-level BPE trained on the documents of `text`."""
    bos, pad, eos, unk = SPECIAL_TOKENS
    return train_bpe(text.split("\n\n"), vocab_size, SPECIAL_TOKENS, bos_token=bos, pad_token=pad, eos_token=eos,
                     unk_token=unk)


def token_stream(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one int64 token sequence [T], as calibration and perplexity tokenize it."""
    return tokenizer(text, return_tensors="pt").input_ids[0]


def train_language_model(model, ids: torch.Tensor, recipe: Recipe, quiet: bool = False) -> list[float]:
    """Train `model` in place on random windows of `ids`; return the loss of every step."""
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, recipe.steps, recipe.warmup))
    model.train()
    losses = []
    bar = tqdm(range(recipe.steps), desc="training", unit="step", disable=quiet)
    for _ in bar:
        starts = torch.randint(0, len(ids) - recipe.seqlen, (recipe.batch_size,), generator=generator)
        batch = torch.stack([ids[s : s + recipe.seqlen] for s in starts.tolist()])
        loss = model(batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", refresh=False)
    model.eval()
    return losses


def warmup_cosine(step: int, steps: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def unigram_perplexity(train_ids: torch.Tensor, ids: torch.Tensor, vocab_size: int, seqlen: int) -> float:
    """Perplexity of add-one-smoothed train-split token frequencies on the tokens a window perplexity scores."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1
    log_p = counts.log() - counts.sum().log()
    targets = ids[: len(ids) // seqlen * seqlen].reshape(-1, seqlen)[:, 1:]
    return math.exp(-log_p[targets].mean().item())


def model_perplexity(model, ids: torch.Tensor, seqlen: int) -> float:
    """Window perplexity (the protocol of the perplexity evaluator) of a token stream [T]."""
    return math.exp(window_nlls(model, windows(ids[None], seqlen), batch_size=8, quiet=True).mean().item())


def build(name: str, output: str | Path, recipe: Recipe = Recipe(), quiet: bool = False) -> dict[str, Any]:
    """Train the tokenizer and the model `name` from scratch, write them and build_info.json into `output`."""
    from transformers import AutoModelForCausalLM

    config = config_factory(name)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        tokenizer = train_tokenizer(corpus_text("train"))
        ids = {split: token_stream(tokenizer, corpus_text(split)) for split in SPLITS}
        torch.manual_seed(recipe.seed)
        model = AutoModelForCausalLM.from_config(config(len(tokenizer)))
        losses = train_language_model(model, ids["train"], recipe, quiet)
        info = {
            "name": name, "architecture": model.config.model_type,
            "parameters": sum(p.numel() for p in model.parameters()),
            "corpus_sha256": corpus_sha256(), "corpus_chars": {s: len(corpus_text(s)) for s in SPLITS},
            "corpus_tokens": {s: len(t) for s, t in ids.items()}, "vocab_size": len(tokenizer),
            "recipe": asdict(recipe), "train_tokens": recipe.steps * recipe.batch_size * recipe.seqlen,
            "final_train_loss": sum(losses[-50:]) / len(losses[-50:]), "eval_seqlen": CONTEXT,
            "ppl": {s: model_perplexity(model, ids[s], CONTEXT) for s in ("validation", "test")},
            "unigram_ppl": {s: unigram_perplexity(ids["train"], ids[s], len(tokenizer), CONTEXT)
                            for s in ("validation", "test")},
        }
    finally:
        torch.set_num_threads(threads)
    model.config.use_cache = True
    output = Path(output)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    info["build_seconds"] = time.perf_counter() - started
    info["environment"] = environment("cpu")
    write_json_atomic(output / "build_info.json", info)
    return info
