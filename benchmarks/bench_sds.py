"""Wall time and peak memory of SDS-SparseGPT against SparseGPT on the same model, data and machine, in one run.

Each prune runs in a fresh process (the two alternate over --repeats); the printed ratio is of the medians.

    python benchmarks/bench_sds.py                      # random-init OPT, hidden 256, 2 blocks, 128 x 2048 tokens
    python benchmarks/bench_sds.py --model embedded:opt-tiny --calibration embedded --seqlen 256
    python benchmarks/bench_sds.py -o adjust=false      # any SDS option; this one is the paper's path from 3B on
    python benchmarks/bench_sds.py --shape opt-125m     # one block at real shapes, scaled to the whole model

SDS's extra work is fixed per layer (a second prune and the products [out,in]x[in,in] of steps 2 and 4: 200 + 201
with solver=plain, at most 20 + 62 with the default solver=fast) while SparseGPT's grows with the calibration tokens
(forward passes, Gram accumulation), so the ratio falls as tokens per unit of width grow: the default calibration is
the paper's, 128 sequences of 2048 tokens.

--shape times one decoder block of OPT-125M or LLaMA-7B at its exact Linear shapes, random weights and a Gram from
synthetic activations (heavy-tailed channel scales and a shared low-rank part), each piece by the project's own
functions: the calibration forward passes (the engine's two per block, on --sequences of the 2048-token sequences and
scaled linearly to 128), the Gram accumulation (one per distinct input, as the engine shares it among q/k/v and
gate/up), the SparseGPT solve, and each SDS
step with both solvers; then the whole-model ratio SDS-SparseGPT / SparseGPT at 128 x 2048 tokens, with the FLOPs
behind every figure; with --repeats R each piece's least time of R runs. With --timed-iterations K, each step's iterations are timed K at a time and scaled to the count
the solver runs (printed as scaled); the default runs every iteration at opt-125m and scales at llama-7b. Linears of
the same shape (q/k/v/o; gate/up) are timed once and counted for each, unless --every-linear.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass, replace

import torch
from peak_memory import peak_mib, reset
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

import sds_bench
from sds_bench import data, models
from sds_bench.passes import capture_block_inputs, gather_stats, run_block
from sds_bench.plugin import parse_options
from sds_bench.pruners import sds
from sds_bench.registry import registry
from sds_bench.sparsity import Sparsity
from sds_bench.stats import BUILTIN, GRAM, Accumulator, LayerStats

PAPER_TOKENS = (128, 2048)
"""The paper's calibration: 128 sequences of 2048 tokens."""


@dataclass(frozen=True)
class Shape:
    """One decoder block of a real model: its Linears (out, in, the input they read) and the model's size."""

    blocks: int
    params: float
    hidden: int
    heads: int
    ffn: int
    linears: dict[str, tuple[int, int, str]]

    def config(self):
        """A one-block model of this width (small vocabulary: only the block is timed)."""
        if "fc1" in self.linears:
            return OPTForCausalLM(OPTConfig(hidden_size=self.hidden, ffn_dim=self.ffn, num_hidden_layers=1, vocab_size=512,
                                            num_attention_heads=self.heads, max_position_embeddings=PAPER_TOKENS[1],
                                            word_embed_proj_dim=self.hidden))
        return LlamaForCausalLM(LlamaConfig(hidden_size=self.hidden, intermediate_size=self.ffn, num_hidden_layers=1,
                                            num_attention_heads=self.heads, vocab_size=512,
                                            max_position_embeddings=PAPER_TOKENS[1]))


def _block(h: int, f: int, names: tuple[str, ...], mlp: tuple[str, ...]) -> dict[str, tuple[int, int, str]]:
    """The Linears of a block of width h and MLP width f: attention in/out projections, MLP up (and gate) and down."""
    q, k, v, o = names
    up, down = mlp[:-1], mlp[-1]
    return {q: (h, h, "attn"), k: (h, h, "attn"), v: (h, h, "attn"), o: (h, h, "attn_out"),
            **{u: (f, h, "mlp") for u in up}, down: (h, f, "mlp_out")}


SHAPES = {
    "opt-125m": Shape(12, 125.2e6, 768, 12, 3072, _block(768, 3072, ("q_proj", "k_proj", "v_proj", "out_proj"),
                                                         ("fc1", "fc2"))),
    "llama-7b": Shape(32, 6.74e9, 4096, 32, 11008, _block(4096, 11008, ("q_proj", "k_proj", "v_proj", "o_proj"),
                                                          ("gate_proj", "up_proj", "down_proj"))),
}


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


def _clock(fn, *args, repeats: int = 1):
    """fn(*args) and its least wall time over `repeats` runs (the least is the one other jobs disturbed least)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def _activations(tokens: int, width: int, g: torch.Generator) -> torch.Tensor:
    """Synthetic Linear inputs [tokens, width]: lognormal channel scales (a few channels 20x: LLM outlier features)
    and a shared rank-32 part, so the Gram is correlated and ill-conditioned as real ones are."""
    scale = torch.randn(width, generator=g).exp()
    scale[torch.randperm(width, generator=g)[: max(1, width // 256)]] *= 20
    shared = torch.randn(tokens, 32, generator=g) @ torch.randn(32, width, generator=g)
    return torch.randn(tokens, width, generator=g) * scale + shared


def _forward(shape: Shape, sequences: int, repeats: int) -> tuple[float, float]:
    """Seconds of the engine's two calibration passes through one block for `sequences` of 2048 tokens."""
    torch.manual_seed(0)
    model = shape.config().eval()
    tokens = torch.randint(0, 512, (sequences, PAPER_TOKENS[1]), generator=torch.Generator().manual_seed(0))
    inputs, kwargs = capture_block_inputs(model, tokens, torch.device("cpu"), torch.device("cpu"))
    block = models.adapter_for(model).decoder_blocks(model)[0]
    gather = _clock(gather_stats, block, {}, inputs, kwargs, [], torch.device("cpu"), repeats=repeats)[1]
    rerun = _clock(run_block, block, inputs, kwargs, torch.device("cpu"), repeats=repeats)[1]
    return gather, rerun


def _step_seconds(run, n: int, timed: int, repeats: int) -> tuple[float, int, bool]:
    """Seconds and iterations of a step: run(m) with the step capped at m iterations returns (result, iterations
    used); with timed > 0, run(timed) and run(0) are timed and scaled linearly to n (True: scaled)."""
    if not timed or timed >= n:
        (_, used), seconds = _clock(run, n, repeats=repeats)
        return seconds, used, False
    base, per = _clock(run, 0, repeats=repeats)[1], _clock(run, timed, repeats=repeats)[1]
    return base + (per - base) * n / timed, n, True


def _capped(o: sds.SDSOptions, solver: str, which: str, m: int) -> sds.SDSOptions:
    """SDS options for `solver` with step `which` capped at m iterations (fast step 4: Adam first, then the refit)."""
    if solver == "plain":
        return replace(o, solver="plain", iterations=m)
    if which == "redense":
        return replace(o, solver="fast", iterations=m, lr=1.0)
    return replace(o, solver="fast", fast_iterations=min(m, o.fast_iterations), polish=max(0, m - o.fast_iterations))


def _sds_steps(solver: str, o: sds.SDSOptions, W_d: torch.Tensor, W_s: torch.Tensor, stats: LayerStats,
               sparsity: Sparsity, timed: int, adjust: bool, repeats: int) -> dict:
    """Seconds of steps 2, 3 and 4 on one Linear with `solver` (steps 2 and 4 also their iterations, and whether
    those were scaled)."""
    sparsegpt = registry().pruner("sparsegpt")

    def step(which: str, W: torch.Tensor, m: int):
        objective = sds.Objective(W_d, stats.gram, stats.nsamples, _capped(o, solver, which, m),
                                  o.optimizer if which == "redense" else o.adjust_optimizer)
        return sds.solve(which, W, objective, sparsity)

    n2, n4 = ((o.iterations, o.iterations) if solver == "plain" else
              (round(o.lr * o.iterations), o.fast_iterations + o.polish))
    steps = {"redense": _step_seconds(lambda m: step("redense", W_s, m), n2, timed, repeats)}
    W_re = step("redense", W_s, min(n2, timed or n2))[0]
    W_2, steps["second_prune"] = _clock(sparsegpt.prune, W_re, stats, sparsity, parse_options(sparsegpt, {}),
                                        repeats=repeats)
    if adjust:
        steps["adjust"] = _step_seconds(lambda m: step("adjust", W_2, m), n4, timed, repeats)
    return steps


def _shape_bench(args: argparse.Namespace) -> None:
    """Time one block at --shape, both solvers, and print the whole-model ratios at the paper's calibration."""
    shape, g = SHAPES[args.shape], torch.Generator().manual_seed(0)
    torch.set_num_threads(args.threads)
    timed = args.timed_iterations if args.timed_iterations is not None else (0 if args.shape == "opt-125m" else 3)
    scale_seq = PAPER_TOKENS[0] / args.sequences
    tokens = PAPER_TOKENS[0] * PAPER_TOKENS[1]
    gather, rerun = _forward(shape, args.sequences, args.repeats)
    forward = (gather + rerun) * scale_seq
    linear_flops = 2 * tokens * sum(o * i for o, i, _ in shape.linears.values())
    attention_flops = 4 * tokens * PAPER_TOKENS[1] * shape.hidden
    print(f"{args.shape}: one block of {shape.blocks}, {len(shape.linears)} Linears, random weights; "
          f"{PAPER_TOKENS[0]} x {PAPER_TOKENS[1]} calibration tokens; {args.pattern}; {args.threads} threads")
    print(f"  forward, 2 passes: {gather + rerun:.2f} s on {args.sequences} x {PAPER_TOKENS[1]} tokens, scaled x "
          f"{scale_seq:g} -> {forward:.1f} s ({2 * (linear_flops + attention_flops) / 1e12:.1f} TFLOP: Linears "
          f"{2 * linear_flops / 1e12:.1f}, attention {2 * attention_flops / 1e12:.1f})")
    user = dict(o.split("=", 1) for o in args.option or [])
    opts = {s: parse_options(registry().pruner("sds-sparsegpt"), {**user, "solver": s}) for s in ("plain", "fast")}
    sparsegpt = registry().pruner("sparsegpt")
    P_options, sparsity = parse_options(sparsegpt, {}), Sparsity.parse(args.pattern)
    grams, rows, timed_shapes = {}, [], {}
    adjust = shape.params < opts["fast"].adjust_max_params and opts["fast"].adjust
    sequences = args.gram_sequences or (1 if timed else None)
    counted: set[str] = set()  # Linears fed one input share its Gram (passes.gather_stats): counted once
    for name, (out, inp, source) in shape.linears.items():
        if (out, inp) in timed_shapes and not args.every_linear:
            shared = {"gram": 0.0, "gram_flops": 0} if source in counted else {}
            rows.append({**timed_shapes[out, inp], "name": name, **shared})
            counted.add(source)
            print(f"  {name:10s} {out:5d} x {inp:5d}: the same work as {timed_shapes[out, inp]['name']}, its times"
                  + (" (its input's Gram already counted)" if shared else ""))
            continue
        if source not in grams:
            X = _activations(sequences * PAPER_TOKENS[1] if sequences else
                             -(-inp * 5 // 4 // PAPER_TOKENS[1]) * PAPER_TOKENS[1], inp, g)
            acc = Accumulator(BUILTIN[GRAM], inp)
            seconds = _clock(acc.add, X.reshape(-1, PAPER_TOKENS[1], inp))[1]
            if args.repeats > 1:
                seconds = min(seconds, _clock(Accumulator(BUILTIN[GRAM], inp).add, X.reshape(-1, PAPER_TOKENS[1], inp),
                                              repeats=args.repeats - 1)[1])
            grams[source] = (seconds / X.shape[0], acc.value)
            del X
        per_token, H = grams[source]
        stats = LayerStats(name, nsamples=PAPER_TOKENS[0], gram=H, model_params=int(shape.params))
        W_d = torch.randn(out, inp, generator=g) / inp**0.5
        W_s, solve = _clock(sparsegpt.prune, W_d, stats, sparsity, P_options, repeats=args.repeats)
        row = {"name": name, "shape": (out, inp), "gram": 0.0 if source in counted else per_token * tokens,
               "solve": solve, "product": 2 * out * inp**2, "gram_flops": 0 if source in counted else 2 * tokens * inp**2,
               "solve_flops": 5 / 3 * inp**3 + out * inp**2}
        counted.add(source)
        for solver, o in opts.items():
            row[solver] = _sds_steps(solver, o, W_d, W_s, stats, sparsity, timed, adjust, args.repeats)
        rows.append(row)
        timed_shapes[out, inp] = row
        print(f"  {name:10s} {out:5d} x {inp:5d}: Gram {row['gram']:7.1f} s ({row['gram_flops'] / 1e12:6.2f} TFLOP), "
              f"SparseGPT solve {solve:6.2f} s (~{row['solve_flops'] / 1e9:.0f} GFLOP); one product "
              f"{row['product'] / 1e9:.1f} GFLOP", flush=True)
        for solver in opts:
            print("      " + f"{solver:5s} " + "; ".join(
                f"{k} {v:.2f} s" if isinstance(v, float) else
                f"{k} {v[0]:.2f} s / {v[1]} products ({v[1] * row['product'] / 1e12:.2f} TFLOP){' scaled' if v[2] else ''}"
                for k, v in row[solver].items()), flush=True)
    _ratios(shape, rows, forward, adjust, args)


def _ratios(shape: Shape, rows: list[dict], forward: float, adjust: bool, args: argparse.Namespace) -> None:
    """Per block and whole model: SparseGPT's seconds, SDS-SparseGPT's with each solver, and their ratios."""
    base = forward + sum(r["gram"] + r["solve"] for r in rows)
    print(f"  per block: forward {forward:.1f} s + Gram {sum(r['gram'] for r in rows):.1f} s + SparseGPT solves "
          f"{sum(r['solve'] for r in rows):.1f} s = SparseGPT {base:.1f} s" + ("" if adjust else
          f"; step 4 skipped (model {shape.params:.3g} params >= adjust_max_params, as the paper from 3B on)"))
    result = {}
    for solver in ("plain", "fast"):
        extra = sum(v if isinstance(v, float) else v[0] for r in rows for v in r[solver].values())
        products = sum(v[1] * r["product"] for r in rows for v in r[solver].values() if not isinstance(v, float))
        result[solver] = (base + extra) / base
        print(f"  solver={solver:5s}: SDS adds {extra:.1f} s per block (steps 2/4: {products / 1e12:.1f} TFLOP); "
              f"whole model {shape.blocks} blocks: SparseGPT {base * shape.blocks / 60:.1f} min, SDS-SparseGPT "
              f"{(base + extra) * shape.blocks / 60:.1f} min; ratio SDS-SparseGPT / SparseGPT = {result[solver]:.2f}")
    print(json.dumps({"shape": args.shape, "ratio": result, "forward_s": forward, "args": vars(args)}))


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
    ap.add_argument("--repeats", type=int, default=1, help="runs per prune (median); with --shape, per timed piece (least)")
    ap.add_argument("-o", "--option", action="append", metavar="KEY=VALUE", help="an SDS option (repeatable)")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="time one block of this model at real shapes (see above)")
    ap.add_argument("--sequences", type=int, default=1, help="--shape: 2048-token sequences the forward is timed on")
    ap.add_argument("--gram-sequences", type=int, default=0,
                    help="--shape: 2048-token sequences of synthetic activations per Gram (0: enough for full rank, "
                         "or 1 when iterations are scaled: then only times matter)")
    ap.add_argument("--every-linear", action="store_true",
                    help="--shape: time every Linear, not once per distinct shape (q/k/v/o, gate/up are the same work)")
    ap.add_argument("--timed-iterations", type=int, default=None,
                    help="--shape: time steps 2 and 4 K iterations at a time and scale (0: run all; default 0 at "
                         "opt-125m, 3 at llama-7b)")
    args = ap.parse_args()
    if args.shape:
        return _shape_bench(args)

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
