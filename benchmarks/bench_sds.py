"""Wall time and peak memory of SDS-SparseGPT against SparseGPT on the same model, data and machine, in one run.

Each prune runs in a fresh process (the two alternate over --repeats); the printed ratio is of the medians.

    python benchmarks/bench_sds.py                      # random-init OPT, hidden 256, 2 blocks, 128 x 2048 tokens
    python benchmarks/bench_sds.py --model embedded:opt-tiny --calibration embedded --seqlen 256
    python benchmarks/bench_sds.py -o adjust=false      # any SDS option; this one is the paper's path from 3B on

SDS's extra work is fixed per layer (a second prune and 2 x 200 [out,in]x[in,in] products) while SparseGPT's grows
with the calibration tokens (forward passes, Gram accumulation), so the ratio falls as tokens per unit of width
grow: the default calibration is the paper's, 128 sequences of 2048 tokens.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time

import torch
from peak_memory import peak_mib, reset
from transformers import OPTConfig, OPTForCausalLM

import sds_bench
from sds_bench import data, models


def _prune(args: argparse.Namespace, method: str, queue) -> None:
    """Load the model and calibration, then time one prune in this fresh process; report seconds and peak memory."""
    torch.set_num_threads(args.threads)
    device = models.resolve_device(args.device)
    if args.model:
        model, tokenizer = models.load_model(args.model, "float32", "cpu")
        calib = data.calibration(args.calibration, tokenizer, args.nsamples, args.seqlen, 0)
    else:
        torch.manual_seed(0)
        model = OPTForCausalLM(OPTConfig(hidden_size=args.hidden, ffn_dim=4 * args.hidden, num_hidden_layers=args.layers,
                                         num_attention_heads=max(1, args.hidden // 64), vocab_size=2048,
                                         max_position_embeddings=args.seqlen, word_embed_proj_dim=args.hidden)).eval()
        tokens = torch.randint(0, 2048, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
        calib = sds_bench.Calibration(tokens, "random", 0)
    options = dict(o.split("=", 1) for o in args.option or []) if method.startswith("sds") else {}
    reset(device)
    start = time.perf_counter()
    record = sds_bench.prune(model, None, method, args.pattern, calib, options=options, device=str(device), quiet=True)
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "peak_mib": peak_mib(device), "device": record["environment"]["device_name"]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a model to load (default: a random-init OPT of --hidden/--layers)")
    ap.add_argument("--calibration", default="embedded", help="calibration source with --model")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--pattern", default="2:4")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable timings on a shared machine)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("-o", "--option", action="append", metavar="KEY=VALUE", help="an SDS option (repeatable)")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    runs = {"sparsegpt": [], "sds-sparsegpt": []}
    for _ in range(args.repeats):
        for method in runs:
            queue = ctx.Queue()
            process = ctx.Process(target=_prune, args=(args, method, queue))
            process.start()
            runs[method].append(queue.get())
            process.join()
    seconds = {m: statistics.median(r["seconds"] for r in v) for m, v in runs.items()}
    peak = {m: max(r["peak_mib"] for r in v) for m, v in runs.items()}
    what = args.model or f"random-init OPT hidden {args.hidden}, {args.layers} blocks"
    print(f"{what}; {args.nsamples} x {args.seqlen} calibration tokens; {args.pattern}; "
          f"{runs['sparsegpt'][0]['device']}, {args.threads} threads; SDS options {args.option or 'default'}")
    for method in runs:
        print(f"  {method:14s} {seconds[method]:9.2f} s   peak memory {peak[method]:9.1f} MiB")
    print(f"  time ratio sds-sparsegpt / sparsegpt = {seconds['sds-sparsegpt'] / seconds['sparsegpt']:.2f}; "
          f"memory ratio = {peak['sds-sparsegpt'] / peak['sparsegpt']:.2f}")
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "args": vars(args)}))


if __name__ == "__main__":
    main()
