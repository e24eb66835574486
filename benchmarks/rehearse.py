"""The paper grid rehearsed offline at real shapes (`nox -s rehearse`, or `python benchmarks/rehearse.py`).

Builds, in a temporary HF_HOME, a Hugging Face cache in the hub's own layout: facebook/opt-125m with its published
config (random weights, float16 as the hub stores them) and a byte-level BPE tokenizer trained here, saved as the
files the hub serves (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json); huggyllama/llama-7b
with its published config reduced to 2 blocks; WikiText-2 raw prepared as `datasets` leaves it after a download;
and allenai/c4's first train and validation shards (gzip'd JSON lines with text, timestamp, url). Then it runs the
unmodified CLI, `sds-bench run paper-opt` (every method and pattern of opt-125m, perplexity cells) and a few
`paper-llama` cells, with HF_HUB_OFFLINE=1, through the normal loaders. Calibration, the perplexity windows and SDS's
iterations are reduced with `--set`; the per-cell times and memory are measured and scaled to the paper's 128 x 2048
calibration and SDS's default solver budget (at most 82 products per Linear), and the whole grid's needs are
estimated from the published configs.

Text (all offline): WikiText-2 test is the real split when ../shared/data has it, else the embedded corpus's test
split; WikiText-2 train/validation and the C4 shards are the embedded corpus (Python's docstrings) and Python's
pydoc topics. Zero-shot cells are not rehearsed: lm-eval's task data cannot be had offline.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import inspect
import json
import os
import pydoc_data.topics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2-raw" / "test_hf_rows.json"
OPT_125M = {  # facebook/opt-125m config.json as published on the hub
    "_name_or_path": "facebook/opt-125m", "_remove_final_layer_norm": False, "activation_dropout": 0.0,
    "activation_function": "relu", "architectures": ["OPTForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 2,
    "do_layer_norm_before": True, "dropout": 0.1, "eos_token_id": 2, "ffn_dim": 3072, "hidden_size": 768,
    "init_std": 0.02, "layerdrop": 0.0, "max_position_embeddings": 2048, "model_type": "opt",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1, "prefix": "</s>",
    "torch_dtype": "float16", "transformers_version": "4.21.0.dev0", "use_cache": True, "vocab_size": 50272,
    "word_embed_proj_dim": 768,
}
LLAMA_7B = {  # huggyllama/llama-7b config.json as published on the hub
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 2048,
    "max_sequence_length": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "pad_token_id": 0, "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "torch_dtype": "float16",
    "transformers_version": "4.28.0.dev0", "use_cache": True, "vocab_size": 32000,
}
GRID = {  # the shapes of every model of paper-opt and paper-llama (published configs), for the whole grid's needs
    "facebook/opt-125m": dict(hidden=768, ffn=3072, blocks=12, vocab=50272, kv=768),
    "facebook/opt-350m": dict(hidden=1024, ffn=4096, blocks=24, vocab=50272, kv=1024),
    "facebook/opt-1.3b": dict(hidden=2048, ffn=8192, blocks=24, vocab=50272, kv=2048),
    "facebook/opt-2.7b": dict(hidden=2560, ffn=10240, blocks=32, vocab=50272, kv=2560),
    "huggyllama/llama-7b": dict(hidden=4096, ffn=11008, blocks=32, vocab=32000, kv=4096, gated=True),
    "meta-llama/Llama-2-7b-hf": dict(hidden=4096, ffn=11008, blocks=32, vocab=32000, kv=4096, gated=True),
    "meta-llama/Meta-Llama-3-8B": dict(hidden=4096, ffn=14336, blocks=32, vocab=128256, kv=1024, gated=True),
}
PAPER = dict(nsamples=128, seqlen=2048)


def sds_products(iterations: int, fast_iterations: int, polish: int, lr: float = 0.1) -> int:
    """The most [out, in] x [in, in] products SDS's default solver (fast) runs per Linear: step 2's lr x iterations
    gradient steps, step 4's Adam iterations (+1 evaluation) and its conjugate-gradient refit (+1)."""
    return round(lr * iterations) + fast_iterations + 1 + (polish + 1 if polish else 0)


SDS_BUDGET = sds_products(200, 50, 10)
"""The default solver's budget per Linear (20 + 51 + 11), what the rehearsal's reduced SDS is scaled to."""
OPT_CELLS = "facebook/opt-125m/*/*/perplexity"
LLAMA_CELLS = ("huggyllama/llama-7b/dense/dense/perplexity", "huggyllama/llama-7b/wanda/2:4/perplexity")


# --- a cache in the hub's layout -------------------------------------------------------------------------------------

def put_repo(hf_home: Path, repo_id: str, files: Mapping[str, Path | bytes], repo_type: str = "model") -> Path:
    """Store `files` (path in the repo -> a file or its bytes) as one commit of a cached repo, as huggingface_hub
    does: blobs named by their etag, linked from snapshots/REV/, refs/main naming REV; returns the snapshot folder."""
    folder = hf_home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    blobs = {name: data if isinstance(data, bytes) else Path(data).read_bytes() for name, data in sorted(files.items())}
    revision = hashlib.sha1(json.dumps({n: _etag(b) for n, b in blobs.items()}).encode()).hexdigest()
    snapshot = folder / "snapshots" / revision
    for name, content in blobs.items():
        blob = folder / "blobs" / _etag(content)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return snapshot


def put_saved(hf_home: Path, repo_id: str, *saveables) -> Path:
    """Cache what each object's save_pretrained writes (a model, a tokenizer) as the repo `repo_id`."""
    with tempfile.TemporaryDirectory() as tmp:
        for saveable in saveables:
            saveable.save_pretrained(tmp)
        return put_repo(hf_home, repo_id, {str(p.relative_to(tmp)): p for p in Path(tmp).rglob("*") if p.is_file()})


def put_prepared_dataset(hf_home: Path, name: str, config: str, splits: Mapping[str, list[str]]) -> Path:
    """A text dataset (column `text`) prepared as `datasets` leaves it after a download, Arrow files per split and
    dataset_info.json, where `load_dataset(name, config)` finds it with HF_HUB_OFFLINE=1."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    features = datasets.Features({"text": datasets.Value("string")})
    revision = hashlib.sha1(json.dumps(splits, sort_keys=True).encode()).hexdigest()
    folder = hf_home / "datasets" / name / config / "0.0.0" / revision
    folder.mkdir(parents=True, exist_ok=True)
    infos = datasets.SplitDict(dataset_name=name)
    for split, rows in splits.items():
        with ArrowWriter(features=features, path=str(folder / f"{name}-{split}.arrow")) as writer:
            writer.write_batch({"text": rows})
            examples, size = writer.finalize()
        infos.add(datasets.SplitInfo(split, num_bytes=size, num_examples=examples, dataset_name=name))
    datasets.DatasetInfo(dataset_name=name, config_name=config, features=features,
                         splits=infos).write_to_directory(str(folder))
    return folder


def c4_shard(documents: Iterable[str]) -> bytes:
    """A C4 shard as allenai/c4 serves it: gzip'd JSON lines with text, timestamp and url."""
    lines = (json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{i}"})
             for i, text in enumerate(documents))
    return gzip.compress("".join(line + "\n" for line in lines).encode(), mtime=0)


def _etag(content: bytes) -> str:
    """The hub's etag: sha256 for a large (LFS) file, the git blob sha1 for a small one."""
    if len(content) > 10 * 2**20:
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


# --- what goes into the cache ----------------------------------------------------------------------------------------

def texts() -> dict[str, list[str]]:
    """Offline text: the embedded corpus's documents, Python's pydoc topics, and WikiText-2 test where available."""
    from sds_bench.embedded import corpus_text

    train = [d for d in corpus_text("train").split("\n\n") if d.strip()]
    test = [d for d in corpus_text("test").split("\n\n") if d.strip()]
    wiki_test = json.loads(SHARED_WIKITEXT.read_text()) if SHARED_WIKITEXT.is_file() else [f" {d}\n" for d in test]
    return {"train": train, "test": test, "topics": list(pydoc_data.topics.topics.values()), "wiki_test": wiki_test}


def opt_tokenizer_files(documents: list[str], vocab_size: int) -> dict[str, bytes]:
    """A GPT-2-style byte-level BPE trained on `documents`, as the files facebook/opt-125m serves (OPT's ids:
    <s> 0, <pad> 1, </s> 2, <unk> 3; </s> is BOS, EOS and UNK, and is put before every text)."""
    from sds_bench.embedded.build import train_bpe

    bpe = train_bpe(documents, vocab_size, ["<s>", "<pad>", "</s>", "<unk>"], bos_token="</s>").backend_tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        bpe.model.save(tmp)
        files = {name: (Path(tmp) / name).read_bytes() for name in ("vocab.json", "merges.txt")}
    token = lambda content: {"content": content, "single_word": False, "lstrip": False, "rstrip": False,  # noqa: E731
                             "normalized": True, "__type": "AddedToken"}
    specials = {"bos_token": token("</s>"), "eos_token": token("</s>"), "unk_token": token("</s>"),
                "pad_token": token("<pad>")}
    config = {"errors": "replace", **specials, "add_prefix_space": False, "add_bos_token": True,
              "special_tokens_map_file": None, "name_or_path": "patrickvonplaten/opt-30b"}
    specials = {k: {f: v for f, v in t.items() if f != "__type"} for k, t in specials.items()}
    return {**files, "tokenizer_config.json": json.dumps(config).encode(),
            "special_tokens_map.json": json.dumps(specials).encode()}


def llama_tokenizer(documents: list[str], vocab_size: int):
    """A byte-level BPE with LLaMA's special ids (<unk> 0, <s> 1, </s> 2), <s> put before every text."""
    from tokenizers import processors

    from sds_bench.embedded.build import train_bpe

    tokenizer = train_bpe(documents, vocab_size, ["<unk>", "<s>", "</s>"], unk_token="<unk>", bos_token="<s>",
                          eos_token="</s>")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tokenizer


def build_cache(hf_home: Path, vocab_size: int = 16384, llama: bool = True) -> dict[str, float]:
    """Fill `hf_home` (see the module docstring); returns the seconds each part took."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    seconds, started = {}, time.perf_counter()
    text = texts()
    tokenizer_docs = text["train"] + text["topics"]
    torch.manual_seed(0)
    opt = OPTForCausalLM(OPTConfig(**OPT_125M)).to(torch.float16)
    generation = GenerationConfig(bos_token_id=2, eos_token_id=2, pad_token_id=1)
    with tempfile.TemporaryDirectory() as tmp:
        opt.save_pretrained(tmp)
        generation.save_pretrained(tmp)
        saved = {p.name: p.read_bytes() for p in Path(tmp).iterdir()}
    put_repo(hf_home, "facebook/opt-125m", {**saved, "config.json": json.dumps(OPT_125M, indent=2).encode(),
                                            **opt_tokenizer_files(tokenizer_docs, vocab_size)})
    seconds["opt-125m"] = time.perf_counter() - started
    if llama:
        started = time.perf_counter()
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**{**LLAMA_7B, "num_hidden_layers": 2})).to(torch.float16)
        put_saved(hf_home, "huggyllama/llama-7b", model, llama_tokenizer(tokenizer_docs, vocab_size))
        del model
        seconds["llama-7b (2 blocks)"] = time.perf_counter() - started
    started = time.perf_counter()
    put_prepared_dataset(hf_home, "wikitext", "wikitext-2-raw-v1",
                         {"train": [f" {d}\n" for d in text["train"]], "validation": [f" {d}\n" for d in text["test"]],
                          "test": text["wiki_test"]})
    put_repo(hf_home, "allenai/c4", {"en/c4-train.00000-of-01024.json.gz": c4_shard(text["topics"] + text["train"]),
                                     "en/c4-validation.00000-of-00008.json.gz": c4_shard(text["test"])}, "dataset")
    seconds["datasets"] = time.perf_counter() - started
    return seconds


# --- running the suites and reading their rows -----------------------------------------------------------------------

def sds_bench_run(suite: str, only: Iterable[str], settings: list[str], results: Path, env: dict[str, str]) -> float:
    """`sds-bench run SUITE` as a user types it (the installed CLI), in `env`; returns its wall seconds."""
    command = [sys.executable, "-m", "sds_bench.cli", "run", suite, "--results", str(results), "--quiet",
               *[a for glob in only for a in ("--only", glob)], *[a for s in settings for a in ("--set", s)]]
    print("$ " + " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    return time.perf_counter() - started


def settings_for(args: argparse.Namespace) -> list[str]:
    """The --set overrides of the rehearsal: CPU, reduced calibration, perplexity windows and SDS iterations."""
    return [f"run.device={args.device}", f"run.dtype={args.dtype}", f"calibration.nsamples={args.nsamples}",
            f"evaluators.perplexity.options.max_windows={args.windows}",
            *(f"methods.{m}.options.{k}={v}" for m in ("sds-sparsegpt", "sds-wanda")
              for k, v in (("iterations", args.sds_iterations), ("fast_iterations", args.sds_fast_iterations),
                           ("polish", 0))),
            *args.set]


def rows(results: Path, suite: str) -> list[dict]:
    return [json.loads(line) for line in (results / suite / "rows.jsonl").read_text().splitlines() if line.strip()]


def cell_table(all_rows: list[dict], args: argparse.Namespace) -> tuple[list[str], list[dict]]:
    """One Markdown line per cell: status, times, peak memory, and prune time scaled to the paper's setting.

    Scaling (an estimate): the calibration forward passes (two per block: statistics, then the pruned block's outputs)
    cost about two dense perplexity windows per calibration sample, so prune(128) ~ prune(n) + 2 (128 - n) t_window;
    SDS's steps 2 and 4 cost one product per iteration, so their part, sds - base, scales by the default solver's
    budget over the reduced run's products (an upper bound: that part also holds SDS's fixed per-layer costs, and
    the solver may stop before its budget)."""
    window = {}
    for row in all_rows:
        if row["status"] == "ok" and row["cell"]["method"] == "dense":
            window[row["cell"]["model"]] = row["times"]["eval"] / row["evaluation"]["protocol"]["windows"]
    base = {(r["cell"]["model"], r["cell"]["pattern"], r["cell"]["method"]): r["times"].get("prune", 0.0)
            for r in all_rows if r["status"] == "ok"}
    lines = ["| cell | status | load s | calibration s | prune s | eval s (windows) | peak RSS MiB | prune s at 128 x 2048"
             f" (and SDS's {SDS_BUDGET} products per Linear) |", "|---|---|--:|--:|--:|--:|--:|--:|"]
    summary = []
    for row in all_rows:
        t, cell = row["times"], row["cell"]
        prune = t.get("prune")
        scaled = None
        if prune is not None and cell["model"] in window:
            scaled = prune + 2 * (PAPER["nsamples"] - args.nsamples) * window[cell["model"]]
            if cell["method"].startswith("sds-"):
                plain = base.get((cell["model"], cell["pattern"], cell["method"].removeprefix("sds-")), 0.0)
                scaled += (prune - plain) * (SDS_BUDGET / sds_products(args.sds_iterations,
                                                                         args.sds_fast_iterations, 0) - 1)
        windows = (row.get("evaluation") or {}).get("protocol", {}).get("windows", "-")
        memory = row["memory"]["process_peak_rss_mb"]
        lines.append(f"| {cell['name']} | {row['status']} | {_f(t.get('load'))} | {_f(t.get('calibration'))} | "
                     f"{_f(prune)} | {_f(t.get('eval'))} ({windows}) | {memory:.0f} | {_f(scaled)} |")
        summary.append({"cell": cell["name"], "status": row["status"], "times": t, "memory_mib": memory,
                        "prune_seconds_at_paper_setting": scaled, "error": row["error"]})
    return lines, summary


def grid_needs(dtype_bytes: int = 2) -> list[str]:
    """What each model of the paper grid needs at 128 x 2048 in float16, from its published shapes: weights,
    calibration activations (inputs and outputs of one block, offloaded to the CPU by default), the largest Hessians of
    one block (float32), and the FLOPs of each step of one prune (the forward without attention; SDS: at most
    SDS_BUDGET products [out, in] x [in, in] per Linear), with SparseGPT's sequential column steps, which bound it
    on a CPU."""
    tokens = PAPER["nsamples"] * PAPER["seqlen"]
    lines = ["| model | weights GiB | activations GiB (2 x 128 x 2048 x hidden) | Hessians of one block GiB | "
             "calibration forward TFLOP | SparseGPT solves TFLOP | SparseGPT sequential column steps | "
             f"SDS solver TFLOP (at most {SDS_BUDGET} products) | slowest step (FLOPs) |", "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for model, s in GRID.items():
        h, f, kv = s["hidden"], s["ffn"], s["kv"]
        linears = ([(h, h), (kv, h), (kv, h), (h, h)] +
                   ([(f, h), (f, h), (h, f)] if s.get("gated") else [(f, h), (h, f)]))  # (out, in)
        block = sum(o * i for o, i in linears)
        params = s["blocks"] * block + s["vocab"] * h * (1 if model.startswith("facebook") else 2)
        forward = 2 * 2 * tokens * block * s["blocks"] / 1e12  # two passes per block, 2 FLOPs per MAC
        sparsegpt = sum(o * i * i for o, i in linears) * s["blocks"] / 1e12
        sds = SDS_BUDGET * 2 * sum(o * i * i for o, i in linears) * s["blocks"] / 1e12
        hessians = sum(i * i for i in dict.fromkeys(i for _, i in linears)) * 4 / 2**30
        columns = sum(i for _, i in linears) * s["blocks"]  # SparseGPT's loop: one small step per input column
        steps = {"calibration forward": forward, "SparseGPT solves": sparsegpt, "SDS solver": sds}
        lines.append(f"| {model} | {params * dtype_bytes / 2**30:.1f} | {2 * tokens * h * dtype_bytes / 2**30:.1f} | "
                     f"{hessians:.2f} | {forward:.0f} | {sparsegpt:.1f} | {columns:,} | {sds:.0f} | "
                     f"{max(steps, key=steps.get)} |")
    return lines


def _f(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nsamples", type=int, default=2, help="calibration windows of 2048 tokens (paper: 128)")
    ap.add_argument("--windows", type=int, default=2, help="perplexity windows of 2048 tokens per cell")
    ap.add_argument("--sds-iterations", type=int, default=10,
                    help="SDS option iterations: step 2 runs lr x iterations steps (default solver: 200, i.e. 20)")
    ap.add_argument("--sds-fast-iterations", type=int, default=3,
                    help="SDS option fast_iterations: step 4's Adam iterations (default 50); the refit is skipped")
    ap.add_argument("--dtype", default="float32", help="run.dtype (the paper suites: float16, on a GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-llama", action="store_true", help="skip the 2-block llama-7b cells")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a further suite override after the rehearsal's own, e.g. 'sparsities=[\"2:4\"]'")
    ap.add_argument("--output", type=Path, default=ROOT / "results" / "rehearsal")
    ap.add_argument("--keep", type=Path, default=None, help="build the cache and results here and keep them")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        hf_home, results = work / "hf", work / "results"
        built = build_cache(hf_home, llama=not args.no_llama)
        print("cache built: " + ", ".join(f"{k} {v:.1f}s" for k, v in built.items()), flush=True)
        env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "SDS_BENCH_PLUGINS": "none", "TOKENIZERS_PARALLELISM": "false"}
        settings = settings_for(args)
        runs = {"paper-opt": sds_bench_run("paper-opt", [OPT_CELLS], settings, results, env)}
        if not args.no_llama:
            runs["paper-llama"] = sds_bench_run("paper-llama", LLAMA_CELLS, settings, results, env)
        all_rows = [r for suite in runs for r in rows(results, suite)]
        lines, summary = cell_table(all_rows, args)
        write(args, runs, built, lines, summary, results, time.perf_counter() - started)
    failed = [s["cell"] for s in summary if s["status"] != "ok"]
    print(f"rehearsal: {len(summary)} cells, {len(failed)} failed, {time.perf_counter() - started:.0f}s in all")
    return 1 if failed else 0


def write(args, runs: dict[str, float], built: dict[str, float], lines: list[str], summary: list[dict],
          results: Path, total: float) -> None:
    """results/rehearsal/: the suites' own reports (headed: a random model) and rehearsal.md with the measurements."""
    args.output.mkdir(parents=True, exist_ok=True)
    note = ("> Rehearsal (benchmarks/rehearse.py): the models are **randomly initialised** at the published shapes, so"
            " these numbers say nothing about pruning quality; the paper's columns are the published values. Settings"
            f" reduced with `--set`: {', '.join(f'`{s}`' for s in settings_for(args))}.\n\n")
    for suite in runs:
        name = "report.md" if suite == "paper-opt" else f"report-{suite}.md"
        (args.output / name).write_text(note + (results / suite / "report.md").read_text())
    head = [f"# Rehearsal of the paper grid at real shapes, offline ({total:.0f} s in all)", "",
            f"Machine: {os.cpu_count()} CPU threads visible (load average {os.getloadavg()[0]:.1f} at the end), torch "
            f"{torch.__version__}, {args.device}, {args.dtype}. "
            f"Calibration {args.nsamples} x 2048 (paper: 128 x 2048), {args.windows} perplexity windows of 2048, "
            f"SDS (default solver fast) at most {sds_products(args.sds_iterations, args.sds_fast_iterations, 0)} "
            f"products per Linear (default: at most {SDS_BUDGET}; the paper's plain solver: 200 + 201).", "",
            "Cache built: " + ", ".join(f"{k} {v:.1f} s" for k, v in built.items()) + "; suites run: " +
            ", ".join(f"{k} {v:.0f} s" for k, v in runs.items()) + ".", "",
            "## Per cell", "", inspect.getdoc(cell_table).split("\n\n")[1], "", *lines, "",
            "## What the whole grid needs (128 x 2048, float16, from the published configs)", "", *grid_needs(), "",
            "Peak RSS: the row's `process_peak_rss_mb` (on Linux since the group's model was loaded). Zero-shot cells are"
            " not rehearsed (lm-eval's task data cannot be had offline)."]
    (args.output / "rehearsal.md").write_text("\n".join(head) + "\n")
    (args.output / "rehearsal.json").write_text(json.dumps({"settings": settings_for(args), "cells": summary,
                                                            "suites_seconds": runs, "cache_seconds": built}, indent=1))
    print("\n".join(head))


if __name__ == "__main__":
    sys.exit(main())
