"""Time the built-in pruners on one model and one calibration set, in one run, and print ratios.

1. Whole-model pruning through the engine: magnitude, Wanda, SparseGPT (SparseGPT / Wanda ratio).
2. SparseGPT's per-layer solve against the line-by-line transcription of the official `fasterprune`
   (tests/transcriptions.py), on the same H and W: time and peak memory,
   each in a fresh subprocess, peak memory as the growth of its peak RSS (Linux /proc) over the solve.

    python benchmarks/bench_pruners.py [--hidden 768 --layers 2 --nsamples 32 --seqlen 256]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import torch
from peak_memory import peak_mib, reset
from transformers import OPTConfig, OPTForCausalLM

import sds_bench
from sds_bench.pruners.sparsegpt import SparseGPTOptions, sparsegpt
from sds_bench.sparsity import Sparsity
from sds_bench.stats import LayerStats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/transcriptions.py
from tests.transcriptions import sparsegpt_solve  # noqa: E402


def _layer(d_out: int, d_in: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, d_in, generator=g)
    return torch.randn(d_out, d_in, generator=g) * 0.02, 2 * x.T @ x / tokens


def _solve(which: str, d_out: int, d_in: int, tokens: int, pattern: str, queue) -> None:
    """Run one per-layer solve in this (fresh) process and report time, peak RSS growth and the result's checksum."""
    torch.set_num_threads(2)
    W, H = _layer(d_out, d_in, tokens)
    s = Sparsity.parse(pattern)
    baseline = reset(torch.device("cpu"))
    start = time.perf_counter()
    if which == "ours":
        out = sparsegpt(W, LayerStats("bench", gram=H), s, SparseGPTOptions())
    else:
        out = sparsegpt_solve(W, H, s.ratio, s.n, s.m)
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "peak_mib": peak_mib(torch.device("cpu")) - baseline,
               "checksum": float(out.double().abs().sum())})


def per_layer(d_out: int, d_in: int, tokens: int, pattern: str, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    runs = {"ours": [], "transcription": []}
    for _ in range(repeats):
        for which in runs:
            q = ctx.Queue()
            p = ctx.Process(target=_solve, args=(which, d_out, d_in, tokens, pattern, q))
            p.start()
            runs[which].append(q.get())
            p.join()
    return runs


def whole_model(hidden: int, layers: int, nsamples: int, seqlen: int, pattern: str) -> dict[str, float]:
    config = OPTConfig(hidden_size=hidden, ffn_dim=4 * hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                       vocab_size=2048, max_position_embeddings=seqlen, word_embed_proj_dim=hidden)
    tokens = torch.randint(0, 2048, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))
    times = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        torch.manual_seed(0)
        model = OPTForCausalLM(config).eval()
        start = time.perf_counter()
        sds_bench.prune(model, None, method, pattern, sds_bench.Calibration(tokens, "random", 0), quiet=True)
        times[method] = time.perf_counter() - start
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--pattern", default="2:4")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)

    times = whole_model(args.hidden, args.layers, args.nsamples, args.seqlen, args.pattern)
    print(f"whole model (OPT, hidden {args.hidden}, {args.layers} layers, {args.nsamples}x{args.seqlen} tokens, {args.pattern}):")
    for method, seconds in times.items():
        print(f"  {method:10s} {seconds:8.2f} s")
    print(f"  ratio sparsegpt / wanda = {times['sparsegpt'] / times['wanda']:.2f}")

    for d_out, d_in in ((args.hidden, args.hidden), (args.hidden, 4 * args.hidden)):
        runs = per_layer(d_out, d_in, args.nsamples * args.seqlen, args.pattern, args.repeats)
        med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
        peak = {k: max(r["peak_mib"] for r in v) for k, v in runs.items()}
        same = len({r["checksum"] for v in runs.values() for r in v}) == 1
        print(f"per-layer SparseGPT {d_out}x{d_in} {args.pattern}: ours {med['ours']:.3f} s, transcription "
              f"{med['transcription']:.3f} s, ratio ours/transcription = {med['ours'] / med['transcription']:.2f}; "
              f"peak RSS growth ours {peak['ours']:.1f} MiB vs {peak['transcription']:.1f} MiB; "
              f"identical results: {same}")
    print(json.dumps({"whole_model_seconds": times}))


if __name__ == "__main__":
    main()
