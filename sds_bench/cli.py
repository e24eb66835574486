"""The ``sds-bench`` command: argument parsing and error reporting only; the work is done by the library."""

from __future__ import annotations

import argparse
import json
import sys

from sds_bench.errors import UserError, at_least

ALLOCATION_PREFIX = "allocation."
"""Options given as -o allocation.KEY=VALUE go to the allocator, the others to the pruner."""


def cmd_plugins(args: argparse.Namespace) -> None:
    """List every pruner, statistic, refinement and evaluator with its origin and description, and each plugin
    skipped as broken."""
    from tabulate import tabulate

    from sds_bench.registry import KINDS, registry

    reg = registry()
    rows = [(f"{kind.__name__.lower()}", item.name, reg.origins[f"{kind.__name__}:{item.name}"], item.description)
            for kind, field in KINDS.items() for item in getattr(reg, field).values()]
    rows += [("plugin", "-", source, f"BROKEN, skipped: {why}") for source, why in reg.broken.items()]
    print(tabulate(sorted(rows), headers=["kind", "name", "origin", "description"]))


def cmd_prune(args: argparse.Namespace) -> None:
    """Prune a model and write it with its pruning.json record."""
    from sds_bench import api, models

    options = _key_values(args.option)
    if args.base:
        options["base"] = args.base
    allocation = {k.removeprefix(ALLOCATION_PREFIX): options.pop(k) for k in list(options)
                  if k.startswith(ALLOCATION_PREFIX)}
    api.check_prune_args(args.method, args.sparsity, options, args.nsamples, args.batch_size, args.offload,
                         args.allocation, allocation)
    models.resolve_device(args.device)
    api.check_output(args.output, args.overwrite)
    _quiet_transformers(args.quiet)
    model, tokenizer = models.load_model(args.model, args.dtype, "cpu" if args.offload == "cpu" else args.device,
                                         args.attn_implementation, args.trust_remote_code)
    record = api.prune(model, tokenizer, args.method, args.sparsity, args.calibration, args.nsamples, args.seqlen,
                       args.seed, options, args.device, args.offload, args.batch_size, args.quiet, args.allocation,
                       allocation)
    record["model"] = args.model
    api.save_pruned(model, tokenizer, record, args.output, args.overwrite)
    print(f"{args.method} {record['sparsity']}: measured sparsity {record['measured_sparsity']:.4f}, "
          f"{record['wall_seconds']:.1f}s -> {args.output}")


def cmd_eval(args: argparse.Namespace) -> None:
    """Evaluate a model: perplexity on a dataset (and any other registered evaluator)."""
    from sds_bench import api, models
    from sds_bench.plugin import DENSE_MODEL, parse_options
    from sds_bench.registry import registry

    for name in args.evaluator or []:
        plugin = registry().evaluator(name)
        parse_options(plugin, _key_values(args.option))
        if DENSE_MODEL in plugin.needs and not args.dense:
            raise UserError(f"evaluator {name!r} compares with the dense model: give --dense MODEL")
    _quiet_transformers(args.quiet)
    model, tokenizer = models.load_model(args.model, args.dtype, args.device, args.attn_implementation,
                                         args.trust_remote_code)
    results = {}
    for dataset in args.ppl or []:
        options = {"dataset": dataset, "data_file": args.data_file, "seqlen": args.seqlen, "quiet": args.quiet,
                   "max_windows": args.max_windows}
        results[f"perplexity:{dataset}"] = api.evaluate(model, tokenizer, "perplexity", options)
    dense = models.load_model(args.dense, args.dtype, args.device, args.attn_implementation,
                              args.trust_remote_code)[0] if args.dense else None
    for name in args.evaluator or []:
        results[name] = api.evaluate(model, tokenizer, name, _key_values(args.option), dense)
    if args.zeroshot:
        results["zeroshot"] = api.evaluate(model, tokenizer, "zeroshot",
                                           {"quiet": args.quiet, **_key_values(args.option), "tasks": args.zeroshot})
    if not results:
        raise UserError("nothing to evaluate: give --ppl DATASET, --zeroshot TASKS or --evaluator NAME")
    for name, result in results.items():
        for metric, value in result.metrics.items():
            print(f"{name}\t{metric}\t{value:.4f}")
    if args.json:
        print(json.dumps({k: {"metrics": r.metrics, "protocol": r.protocol} for k, r in results.items()}, default=str))


def cmd_bench_kernels(args: argparse.Namespace) -> None:
    """Time dense against 2:4 sparse Linear kernels (and, with --e2e, whole models) on this GPU; write the tables."""
    from sds_bench import kernels, runner

    for flag, value, low in (("--warmup", args.warmup, 0), ("--reps", args.reps, kernels.MIN_REPS),
                              ("--e2e-reps", args.e2e_reps, kernels.MIN_REPS)):
        at_least(flag, value, low)
    if not args.dry_run and (problem := kernels.gpu_problem(args.device)):
        print(f"sds-bench bench kernels: {problem}; nothing timed")
        return
    e2e = (kernels.make_e2e_plan(args.prefill, args.decode, args.context, args.new_tokens, args.e2e_reps)
           if args.e2e else None)
    models = list(runner.load_suite(args.suite).models) if args.suite else args.model
    plan = kernels.make_plan(models, args.shapes, args.tokens, args.dtype, args.backend, e2e)
    if args.dry_run:
        print(plan.describe())
        return
    paths = kernels.run(plan, args.output, args.device, args.warmup, args.reps, not args.eager, args.peak_tflops,
                        args.quiet)
    print(paths["kernels.md"].read_text())
    print("wrote " + ", ".join(str(path) for path in paths.values()))


def cmd_run(args: argparse.Namespace) -> None:
    """Run a suite's cells that have no result yet (or list the grid with --dry-run), then write its tables."""
    from collections import Counter
    from pathlib import Path

    from tabulate import tabulate
    from tqdm.auto import tqdm

    from sds_bench import runner

    suite = runner.load_suite(args.suite, _suite_overrides(args))
    if args.dry_run:
        cells = runner.plan(suite, args.results, args.only, args.exclude)
        print(tabulate([(i, c.model, c.method, c.pattern, "" if c.seed is None else c.seed, c.evaluator, c.key, state)
                        for i, (c, state) in enumerate(cells, 1)],
                       headers=["#", "model", "method", "sparsity", "seed", "evaluator", "key", "state"]))
        states = ", ".join(f"{n} {state}" for state, n in Counter(state for _, state in cells).items())
        print(f"{len(cells)} cells ({states or 'none'}) -> {Path(args.results) / suite.name}")
        return
    _quiet_transformers(args.quiet)
    summary = runner.run_suite(suite, args.results, args.only, args.exclude, args.executor, args.cluster,
                               {k: runner.toml_value(v) for k, v in _key_values(args.slurm).items()}, args.fail_fast,
                               args.save_models, args.quiet, on_row=lambda row: tqdm.write(_row_line(row)),
                               fresh=args.fresh)
    print(f"{suite.name}: {summary.cells} cells, {summary.skipped} done before, {summary.ok} done now, "
          f"{summary.failed} failed")
    if summary.cells and not args.no_report:
        _report(suite, args.results, args.baselines)
    if summary.failed:
        raise UserError(f"{summary.failed} cell(s) failed (errors in {Path(args.results) / suite.name / 'rows.jsonl'}); "
                        "run again to retry them")


def cmd_report(args: argparse.Namespace) -> None:
    """Write a suite's tables (Markdown, CSV) and plots from the rows of its results."""
    from sds_bench import runner

    _report(runner.load_suite(args.suite, _suite_overrides(args)), args.results, args.baselines)


def cmd_plot_weights(args: argparse.Namespace) -> None:
    """Render the SDS weight histograms a prune run recorded in its pruning.json."""
    from sds_bench.report.weights import plot_weights

    print(f"wrote {plot_weights(args.run_dir, args.output)}")


def cmd_embedded_build(args: argparse.Namespace) -> None:
    """Train an embedded model and its tokenizer from scratch on the embedded corpus (reproduces the shipped files)."""
    from sds_bench.embedded import ASSETS
    from sds_bench.embedded.build import Recipe, build

    given = {"steps": args.steps, "seed": args.seed, "threads": args.threads}
    output = args.output or ASSETS / args.name
    info = build(args.name, output, Recipe(**{k: v for k, v in given.items() if v is not None}), args.quiet)
    print(f"{args.name}: {info['parameters']:,} parameters, test perplexity {info['ppl']['test']:.2f} "
          f"(unigram {info['unigram_ppl']['test']:.2f}), {info['build_seconds']:.0f}s -> {output}")


def _report(suite, results: str, baselines: str | None) -> None:
    from sds_bench.report.tables import BASELINES_DIR, write_report

    print("wrote " + ", ".join(str(p) for p in write_report(suite, results, baselines or BASELINES_DIR)))


def _row_line(row: dict) -> str:
    """One line per finished cell: its name and headline metrics (perplexity, averages), or its error."""
    metrics = row["metrics"]
    shown = {k: v for k, v in metrics.items() if "ppl" in k or k.endswith("avg")} or metrics
    outcome = ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) if row["status"] == "ok" else row["error"]
    return f"{row['status']:6} {row['cell']['name']}: {outcome}"


def _suite_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="a shipped suite (embedded, paper-opt, ...: sds_bench/suites/) or a path to a suite .toml")
    p.add_argument("--results", default="results", help="results root; rows and tables go to RESULTS/SUITE/")
    p.add_argument("--baselines", default=None, help="folder of published numbers (*.csv; default: the repo's baselines/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a suite key before validation, VALUE as TOML: calibration.nsamples=8, run.device=cpu, "
                   "evaluators.perplexity.options.max_windows=4, methods.sds-wanda.options.iterations=20 (repeatable)")
    p.add_argument("--seeds", metavar="S,S,...",
                   help="calibration seeds replacing the suite's `seeds` for this command (0,1,2: each seed its own "
                   "cell; an evaluator's own seeds must be among them)")


def _suite_overrides(args: argparse.Namespace) -> list[str]:
    """The --set overrides, then --seeds as the override of the suite's `seeds`."""
    return [*(args.set or ()), *([f"seeds=[{args.seeds}]"] if args.seeds is not None else [])]


def _quiet_transformers(quiet: bool) -> None:
    """--quiet also silences transformers' loading and saving progress bars."""
    if quiet:
        from transformers.utils import logging

        logging.disable_progress_bar()


def _key_values(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"bad option {pair!r}: use KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="local model directory, embedded:NAME, or Hugging Face hub id")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="auto, float32, float16, bfloat16 (default: the checkpoint's)")
    p.add_argument("--attn-implementation", default=None, help="eager, sdpa, ... (default: the model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow modeling code shipped in the model directory (auto_map) to run")


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are UserErrors, so they print as the one line every other error does."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="sds-bench", description=__doc__)
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    sub.add_parser("plugins", help="list pruners, statistics, refinements, allocators and evaluators").set_defaults(func=cmd_plugins)

    p = sub.add_parser("prune", help="prune a model and save it")
    _model_arguments(p)
    p.add_argument("--method", required=True, help="a registered pruner (see `sds-bench plugins`)")
    p.add_argument("--sparsity", required=True, help="0.5, 50%%, unstructured:0.5, 2:4, 4:8, N:M")
    p.add_argument("--base", default=None, help="base pruner, for wrappers such as --method sds")
    p.add_argument("--calibration", default=None, help="c4, wikitext2, embedded, a text file, or a .pt/.npy token file")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=None, help="default: the model's context, capped at 2048")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1, help="calibration sequences per forward (1 = reference order)")
    p.add_argument("--offload", choices=["cpu", "device"], default="cpu",
                   help="where the model and calibration activations wait while one block is on the device")
    p.add_argument("--allocation", default="uniform",
                   help="per-layer sparsity allocation: uniform (default), owl, or a plugin's (see `sds-bench plugins`)")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="a pruner option (repeatable); allocation.KEY=VALUE sets an option of --allocation")
    p.add_argument("--output", required=True, help="directory for the pruned model and pruning.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output directory")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("eval", help="evaluate a model")
    _model_arguments(p)
    p.add_argument("--ppl", action="append", metavar="DATASET", help="wikitext2, ptb, c4, embedded, file (repeatable)")
    p.add_argument("--data-file", default=None, help="local copy of the perplexity dataset")
    p.add_argument("--seqlen", type=int, default=None)
    p.add_argument("--max-windows", type=int, default=None, help="evaluate only the first windows (quick check)")
    p.add_argument("--evaluator", action="append", metavar="NAME", help="another registered evaluator")
    p.add_argument("--zeroshot", metavar="TASKS", help="zero-shot accuracy with lm-eval: a preset (sds-paper, wanda, "
                   "embedded) or comma-separated task names; -o options apply (limit=, metrics=, batch_size=)")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE", help="an option of --evaluator")
    p.add_argument("--dense", metavar="MODEL", default=None,
                   help="the dense model MODEL was pruned from, for evaluators that compare with it (--evaluator kl)")
    p.add_argument("--json", action="store_true", help="also print metrics and protocol as JSON")
    p.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="speed benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("kernels", help="dense vs 2:4 sparse Linear kernels (and whole models) on this GPU")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", action="append", metavar="M",
                       help="hub id, local directory or embedded:NAME; repeatable (default: opt-125m and llama-7b)")
    which.add_argument("--suite", help="time the Linear shapes of a suite's models (name or .toml path)")
    which.add_argument("--shapes", help="explicit OUTxIN weight shapes, e.g. 4096x4096,11008x4096")
    p.add_argument("--tokens", help="token counts (rows of the input), default 1,16,128,512,2048,8192")
    p.add_argument("--dtype", help="float16,bfloat16 (default both)")
    p.add_argument("--backend", help="cutlass,cusparselt,torchao (default: all available)")
    p.add_argument("--device", default="cuda", help="a CUDA device (default: cuda)")
    p.add_argument("--warmup", type=int, default=5, help="untimed repetitions before each measurement (also --e2e)")
    p.add_argument("--reps", type=int, default=30, help="timed repetitions per measurement (median and spread)")
    p.add_argument("--eager", action="store_true",
                   help="time eager calls, Python dispatch included, instead of CUDA graph replays")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense fp16 peak, for GPUs not in the built-in table")
    p.add_argument("--e2e", action="store_true", help="also time whole 2:4-pruned models (prefill and decode)")
    p.add_argument("--prefill", help="end-to-end prefill sizes BATCHxSEQLEN (default 1x128,1x512,1x2048,8x512)")
    p.add_argument("--decode", help="end-to-end decode batch sizes (default 1,16)")
    p.add_argument("--context", type=int, default=512, help="tokens in the KV cache before decoding")
    p.add_argument("--new-tokens", type=int, default=16, help="decode steps timed per repetition")
    p.add_argument("--e2e-reps", type=int, default=10)
    p.add_argument("--output", default="results/kernels", help="results folder; a subfolder per GPU is written")
    p.add_argument("--dry-run", action="store_true", help="print what would be timed and exit (no GPU needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench_kernels)

    p = sub.add_parser("run", help="run a suite: prune and evaluate every cell without a result, then report")
    _suite_arguments(p)
    p.add_argument("--only", action="append", metavar="GLOB",
                   help="run only cells whose method, model, sparsity or evaluator matches (FIELD=GLOB for one field; "
                   "repeatable)")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="skip the matching cells (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the grid with each cell's state, run nothing")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    p.add_argument("--fresh", action="store_true",
                   help="run every cell again: the suite's rows move to rows.<time>.jsonl and a new store starts")
    p.add_argument("--save-models", action="store_true", help="also save each pruned model under RESULTS/SUITE/models/")
    p.add_argument("--no-report", action="store_true", help="do not write the tables at the end")
    p.add_argument("--executor", choices=["local", "submitit"], default="local",
                   help="run the cells in this process, or as submitit jobs (one per pruned model)")
    p.add_argument("--cluster", default=None,
                   help="submitit cluster: slurm, local or debug (default: slurm where sbatch exists, else local)")
    p.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                   help="a submitit parameter over the suite's [submitit] table: timeout_min=240, gpus_per_node=1, "
                   "slurm_partition=gpu (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write a suite's tables and plots from its results")
    _suite_arguments(p)
    p.set_defaults(func=cmd_report)

    plot = sub.add_parser("plot", help="plots of one run").add_subparsers(dest="plot", required=True)
    p = plot.add_parser("weights", help="SDS weight histograms (dense, first prune, re-dense, final) of a prune run")
    p.add_argument("run_dir", help="a directory holding pruning.json")
    p.add_argument("--output", default=None, help="PNG path (default: RUN_DIR/weights.png)")
    p.set_defaults(func=cmd_plot_weights)

    embedded = sub.add_parser("embedded", help="the shipped embedded models").add_subparsers(dest="embedded", required=True)
    p = embedded.add_parser("build", help="train an embedded model and its tokenizer from scratch on the embedded corpus")
    p.add_argument("--name", default="opt-tiny", help="opt-tiny or llama-tiny")
    p.add_argument("--output", default=None, help="directory to write (default: the package's shipped copy)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped recipe's)")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation and batch order (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1: reproducible, shares the machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embedded_build)

    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except UserError as e:
        print(f"sds-bench: error: {_one_line(e)}", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"sds-bench: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sds-bench: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # anything unexpected still gets one line; --debug shows the traceback
        if args.debug:
            raise
        print(f"sds-bench: error: {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return 0


def _one_line(e: BaseException) -> str:
    """The message folded onto one line: the CLI's errors are always one line."""
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
