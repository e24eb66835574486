"""The 2:4 kernel benchmark: shapes from configs, the plan, the CPU-side logic, the writers; timing itself on a GPU."""

import csv
import io
import json

import pytest
import torch
import torch.nn.functional as F

from sds_bench import testing
from sds_bench.cli import main
from sds_bench.errors import UserError
from sds_bench.kernels import backends, bench, e2e, linear, report, timing
from sds_bench.kernels.gpu import gpu_info, gpu_problem
from sds_bench.kernels.plan import DEFAULT_TOKENS, make_e2e_plan, make_plan
from sds_bench.kernels.shapes import LinearShape, collect_shapes, known_key, model_shapes, parse_shapes
from sds_bench.sparsity import satisfies

SM80 = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
gpu = pytest.mark.skipif(not SM80, reason="needs a CUDA GPU of compute capability >= 8.0")
GPU_INFO = {"gpu": "Test GPU X1", "capability": "9.0", "driver": "555.42", "torch": "2.13.0", "cuda": "12.8",
            "cusparselt": "0.6.3", "peak_tflops": 100.0, "l2_bytes": 4096, "python": "3.11"}


# --- shapes ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("facebook/opt-125m", [(768, 768), (3072, 768), (768, 3072)]),
    ("meta-llama/Meta-Llama-3-8B", [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)]),
])
def test_paper_models_have_their_shapes_offline(name, expected):
    assert model_shapes(name) == expected


def test_hub_ids_map_to_built_in_configs():
    assert [known_key(n) for n in ("facebook/opt-1.3b", "huggyllama/llama-7b", "meta-llama/Llama-2-7b-hf",
                                   "meta-llama/Meta-Llama-3-8B")] == ["opt-1.3b", "llama-7b", "llama-2-7b", "llama-3-8b"]


def test_unknown_hub_id_offline_is_one_clear_error(monkeypatch):
    from transformers import AutoConfig

    def offline(name, **kwargs):
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {name}")

    monkeypatch.setattr(AutoConfig, "from_pretrained", offline)
    with pytest.raises(UserError, match="cannot read the config of 'nobody/no-such-model'.*built-in configs"):
        model_shapes("nobody/no-such-model")


def test_shapes_of_a_local_model_merge_across_models(opt_dir, tmp_path):
    testing.tiny_llama().save_pretrained(tmp_path / "llama")
    shapes = collect_shapes([str(opt_dir), str(tmp_path / "llama")])
    assert [s.label for s in shapes] == ["32x32", "64x32", "32x64", "16x32"]
    assert shapes[0].models == ("opt", "llama") and shapes[1].models == ("opt", "llama")
    assert shapes[3].models == ("llama",)


def test_parse_shapes_dedupes_and_rejects_junk():
    assert parse_shapes("4096x4096, 11008x4096,4096x4096") == [LinearShape(4096, 4096), LinearShape(11008, 4096)]
    for bad in ("4096", "0x16", "axb", ","):
        with pytest.raises(UserError):
            parse_shapes(bad)


# --- the plan -------------------------------------------------------------------------------------------------------

def test_plan_times_every_shape_token_dtype_with_every_backend():
    plan = make_plan(shapes="768x768,3072x768", tokens="1,16,128", dtypes="fp16,bfloat16,float16",
                           backends="cutlass,cusparselt")
    assert plan.dtypes == ("float16", "bfloat16") and plan.tokens == (1, 16, 128)
    cells = plan.cells()
    assert len(cells) == 2 * 2 * 3
    assert cells[0] == ("float16", LinearShape(768, 768), 1) and cells[-1] == ("bfloat16", LinearShape(3072, 768), 128)
    assert "12 cells: 12 dense and 24 sparse timings" in plan.describe()


def test_plan_from_models_and_suite(opt_dir, tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text(f'models = ["{opt_dir}"]\nmethods = ["magnitude"]\nsparsities = ["2:4"]\n'
                     'evaluators = ["perplexity"]\n')
    plan = make_plan(models=[str(opt_dir)])
    assert plan.models == (str(opt_dir),)
    assert [s.label for s in plan.shapes] == ["32x32", "64x32", "32x64"]
    assert plan.tokens == DEFAULT_TOKENS and plan.dtypes == ("float16", "bfloat16")
    assert main(["bench", "kernels", "--suite", str(suite), "--dry-run"]) == 0  # the CLI resolves the suite's models
    assert plan.describe() in capsys.readouterr().out


@pytest.mark.parametrize("kwargs", [{"tokens": "1,0"}, {"tokens": "1,x"}, {"dtypes": "float32"},
                                    {"backends": "cutlass,triton"}])
def test_plan_rejects_bad_choices(kwargs):
    with pytest.raises(UserError):
        make_plan(shapes="768x768", **kwargs)


def test_end_to_end_plan_needs_models_and_sane_sizes():
    e2e_plan = make_e2e_plan("1x128,8x512", "1,4", context=256, new_tokens=8)
    assert e2e_plan.workloads() == [("prefill", 1, 128), ("prefill", 8, 512), ("decode", 1, 256), ("decode", 4, 256)]
    with pytest.raises(UserError, match="needs models"):
        make_plan(shapes="768x768", e2e=e2e_plan)
    for bad in ({"prefill": "1x"}, {"decode": "0"}, {"context": 0}):
        with pytest.raises(UserError):
            make_e2e_plan(**bad)


def test_without_a_gpu_it_says_so_in_one_line_and_times_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "there is no cuda:1" in gpu_problem("cuda:1")
    assert main(["bench", "kernels", "--shapes", "768x768", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "Tesla T4 has compute capability 7.5" in out and "nothing timed" in out
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cli_on_a_cpu_machine_exits_zero(capsys):
    assert main(["bench", "kernels"]) == 0
    assert "no CUDA GPU found" in capsys.readouterr().out


def test_dry_run_prints_the_plan_without_a_gpu(opt_dir, capsys):
    assert main(["bench", "kernels", "--model", str(opt_dir), "--tokens", "1,16", "--dry-run", "--e2e",
                 "--prefill", "1x32"]) == 0
    out = capsys.readouterr().out
    assert "3 shapes x 2 token counts x 2 dtypes = 12 cells" in out and "64x32  opt" in out
    assert "prefill (batch x seq) 1x32" in out


# --- CPU-side logic of a measurement --------------------------------------------------------------------------------

def test_pruned_weight_is_two_four_and_unit_scale():
    w = backends.pruned_weight(64, 256, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert satisfies(w, backends.TWO_FOUR) and (w == 0).float().mean() == 0.5
    assert 0.5 < F.linear(torch.randn(512, 256), w).std() < 1.0


def test_timing_statistics_and_throughput():
    assert timing.median_spread([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, pytest.approx(52.0 - 1.5))
    # 2 * 2048 tokens * 4096 * 4096 = 68,719,476,736 FLOPs in 1 ms; 2 * 16 * 11008 * 4096 = 1,442,840,576 in 0.5 ms
    assert timing.tflops(4096, 4096, 2048, ms=1.0) == pytest.approx(68.719476736)
    assert timing.tflops(11008, 4096, 16, ms=0.5) == pytest.approx(2.885681152)


def test_a_cell_reports_ok_mismatch_and_unsupported_backends(monkeypatch):
    """The row logic with CPU stand-ins for the sparse kernels and for CUDA-event timing (sparse 2 ms, dense 4 ms)."""
    made, copies, dense_outputs = {}, [], []

    def fake_sparse(backend, weights, x):
        if backend == "cutlass":
            raise RuntimeError("Error original_tensor.shape is not supported!\nsecond line")
        shift = 0.0 if backend == "cusparselt" else 1.0
        made.update(weights=weights, x=x, calls=[lambda w=w: F.linear(x, w) + shift for w in weights])
        return made["calls"], 7

    def fake_time(calls, warmup, reps, graph):
        if calls is made["calls"]:
            return [2.0] * reps
        copies.extend(torch.equal(w, made["weights"][0]) for w in made["weights"])
        for i, w in enumerate(made["weights"]):
            w.mul_(i + 1)  # tell the copies apart, so each call shows which one it reads
        dense_outputs.extend(call() for call in calls)
        return [4.0] * reps

    monkeypatch.setattr(linear, "sparse_calls", fake_sparse)
    monkeypatch.setattr(linear, "time_calls", fake_time)
    rows = linear.bench_cell(LinearShape(64, 128, ("m",)), 16, "bfloat16", ("cutlass", "cusparselt", "torchao"),
                             torch.device("cpu"), warmup=1, reps=3, graph=True, gpu=GPU_INFO)
    cutlass, cusparselt, torchao = rows
    assert cutlass["status"] == "unsupported: Error original_tensor.shape is not supported!"
    assert torchao["status"].startswith("mismatch") and "dense_ms" not in torchao
    assert cusparselt["status"] == "ok" and cusparselt["alg_id"] == 7 and cusparselt["timing"] == "graph"
    assert cusparselt["dense_ms"] == 4.0 and cusparselt["sparse_ms"] == 2.0 and cusparselt["speedup"] == 2.0
    assert cusparselt["sparse_tflops"] == pytest.approx(1.31072e-4)  # 2 * 16 * 64 * 128 = 262,144 FLOPs in 2 ms
    assert cusparselt["sparse_peak_frac"] == pytest.approx(1.31072e-6)  # of the 100 TFLOP/s peak
    assert cusparselt["weight_copies"] == 2 and cusparselt["models"] == "m"
    # the dense baseline: one call per copy of the 2:4 weight, each computing x @ W.T with its own copy
    weights, x = made["weights"], made["x"]
    assert copies == [True, True] and len({w.data_ptr() for w in weights}) == len(dense_outputs) == 2
    for w, out in zip(weights, dense_outputs):
        assert satisfies(w, backends.TWO_FOUR)
        torch.testing.assert_close(out.float(), x.float() @ w.float().T, rtol=2e-2, atol=2e-2)


class _FakeEvent:
    """A CPU stand-in for a timing CUDA event: every timed interval lasts 1 ms."""

    def __init__(self, enable_timing: bool = False):
        pass

    def record(self) -> None:
        pass

    def elapsed_time(self, end: "_FakeEvent") -> float:
        return 1.0


def test_end_to_end_timing_runs_its_warmup_untimed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    model = testing.tiny_opt().eval()
    forwards = []
    model.register_forward_hook(lambda module, args, out: forwards.append(args))
    ids = torch.randint(0, model.config.vocab_size, (2, 8))
    with torch.no_grad():
        assert e2e.time_prefill(model, ids, warmup=2, reps=4) == [1.0] * 4
        assert len(forwards) == 2 + 4
        forwards.clear()
        assert e2e.time_decode(model, ids, new_tokens=3, warmup=2, reps=4) == pytest.approx([1 / 3] * 4)
    assert len(forwards) == (2 + 4) * (1 + 3)  # a prefill and 3 decode steps per repetition, warm-ups included


def test_prune_blocks_makes_every_block_linear_two_four(tiny_model):
    weights = e2e.prune_blocks_24(tiny_model)
    assert len(weights) == 2 * len([n for n, m in tiny_model.named_modules()
                                    if isinstance(m, torch.nn.Linear) and ".layers.0." in n])
    for name, w in weights.items():
        assert satisfies(w, backends.TWO_FOUR)
        assert tiny_model.get_submodule(name).weight.data_ptr() == w.data_ptr()
    again = e2e.prune_blocks_24(tiny_model)
    assert all(torch.equal(again[n], w) for n, w in weights.items())


def test_model_rows_skip_long_workloads_and_report_unsupported_backends(opt_dir, monkeypatch):
    """bench_model's bookkeeping on CPU: times replaced by constants, 'fake' a sparse backend that keeps dense weights."""
    real_swap = e2e.swap_weights
    monkeypatch.setattr(e2e, "swap_weights", lambda m, w, b: real_swap(m, w, None if b == "fake" else b))
    monkeypatch.setattr(e2e, "time_prefill", lambda model, ids, warmup, reps: [3.0, 3.0, 3.0])
    monkeypatch.setattr(e2e, "time_decode", lambda model, ids, new, warmup, reps: [1.0, 1.0, 1.0])
    e2e_plan = make_e2e_plan("2x16,1x80", "4", context=32, new_tokens=8, reps=3)
    rows = e2e.bench_model(str(opt_dir), "float16", ("cutlass", "fake"), e2e_plan, torch.device("cpu"), warmup=1)
    assert rows[0]["backend"] == "cutlass" and rows[0]["status"].startswith("unsupported: ")
    fake = {(r["phase"], r["batch"], r["seq"]): r for r in rows[1:]}
    assert fake[("prefill", 1, 80)]["status"] == "skipped: longer than the model's 64 positions"
    assert fake[("prefill", 2, 16)]["status"] == "ok" and fake[("prefill", 2, 16)]["max_rel_err"] == 0.0
    assert fake[("prefill", 2, 16)]["sparse_tokens_per_s"] == pytest.approx(32 / 3e-3)
    assert fake[("decode", 4, 32)]["status"] == "ok" and fake[("decode", 4, 32)]["new_tokens"] == 8
    assert fake[("decode", 4, 32)]["dense_tokens_per_s"] == pytest.approx(4 / 1e-3)


# --- writers --------------------------------------------------------------------------------------------------------

def _kernel_rows() -> list[dict]:
    base = {"dtype": "float16", "models": "opt-125m", "backend": "cusparselt", "alg_id": 3, "timing": "graph",
            "weight_copies": 4, "status": "ok", "max_abs_err": 0.001}
    rows = []
    for shape in ((768, 768), (3072, 768)):
        for tokens, speedup in ((1, 0.8), (128, 1.2), (2048, 1.5)):
            rows.append({**base, "shape": f"{shape[0]}x{shape[1]}", "out_features": shape[0], "in_features": shape[1],
                         "tokens": tokens, "dense_ms": 1.5, "dense_iqr_ms": 0.02, "sparse_ms": 1.5 / speedup,
                         "sparse_iqr_ms": 0.01, "speedup": speedup, "dense_tflops": 50.0, "sparse_tflops": 60.0,
                         "dense_peak_frac": 0.5, "sparse_peak_frac": 0.6})
    rows.append({**base, "shape": "768x768", "out_features": 768, "in_features": 768, "tokens": 8192,
                 "backend": "cutlass", "alg_id": None, "status": "unsupported: no kernel"})
    return rows


META = {"gpu": GPU_INFO, "protocol": {"warmup": 5, "reps": 30, "timing": "graph",
                                      "e2e": {"reps": 10, "new_tokens": 16, "context": 512}}}


def test_csv_keeps_column_order_and_empty_cells():
    text = report.csv_text(_kernel_rows(), report.KERNEL_COLUMNS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == report.KERNEL_COLUMNS
    assert rows[-1]["dense_ms"] == "" and rows[-1]["alg_id"] == "" and rows[-1]["status"] == "unsupported: no kernel"
    assert float(rows[1]["speedup"]) == 1.2


def test_results_per_gpu_with_versions_in_the_header(tmp_path):
    e2e_rows = [{"model": "opt-125m", "dtype": "float16", "phase": "prefill", "batch": 1, "seq": 128, "backend": "cutlass",
            "dense_ms": 2.0, "dense_iqr_ms": 0.1, "sparse_ms": 1.6, "sparse_iqr_ms": 0.1, "speedup": 1.25,
            "dense_tokens_per_s": 64000.0, "sparse_tokens_per_s": 80000.0, "max_rel_err": 0.001, "status": "ok"}]
    paths = report.write_results(tmp_path, META, _kernel_rows(), e2e_rows)
    folder = tmp_path / "test-gpu-x1"
    assert set(paths) == {"kernels.csv", "kernels.md", "e2e.csv", "e2e.md", "speedup.png", "protocol.json"}
    assert all(p.parent == folder for p in paths.values())
    assert sorted(p.name for p in folder.iterdir()) == sorted(paths)  # no temporary files left behind
    md = paths["kernels.md"].read_text()
    for fact in ("Test GPU X1", "driver 555.42", "torch 2.13.0", "CUDA 12.8", "cuSPARSELt 0.6.3", "100 TFLOP/s"):
        assert fact in md
    assert ["float16", "3072x768", "opt-125m", "128", "cusparselt", "1.5 ± 0.01", "1.25 ± 0.005", "1.20", "50.0",
            "60.0", "50%", "60%", "ok"] in _table(md)
    assert _table(md)[-1][-1] == "unsupported: no kernel"
    kernel_csv = list(csv.DictReader(paths["kernels.csv"].open()))
    assert len(kernel_csv) == 7 and {r["gpu"] for r in kernel_csv} == {"Test GPU X1"}
    assert {r["cusparselt"] for r in kernel_csv} == {"0.6.3"}
    assert _table(paths["e2e.md"].read_text())[1][:8] == ["opt-125m", "float16", "prefill", "1", "128", "cutlass",
                                                         "2 ± 0.05", "1.6 ± 0.05"]
    assert paths["speedup.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _table(markdown: str) -> list[list[str]]:
    """The cells of a Markdown table's rows (header first, separator dropped)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|")]
    return [r for r in rows if not set("".join(r)) <= set("-:")]


def test_run_records_plan_and_protocol_beside_the_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "gpu_info", lambda device, peak=None: GPU_INFO)
    monkeypatch.setattr(bench, "bench_kernels", lambda plan, *args: _kernel_rows())
    plan = make_plan(shapes="768x768,3072x768", tokens="1,128,2048", dtypes="float16", backends="cusparselt")
    paths = bench.run(plan, str(tmp_path), device="cpu", warmup=2, reps=7, quiet=True)
    meta = json.loads(paths["protocol.json"].read_text())
    assert meta["protocol"] == {"warmup": 2, "reps": 7, "timing": "graph", "tolerance": linear.TOLERANCE, "e2e": None}
    assert [s["out_features"] for s in meta["plan"]["shapes"]] == [768, 3072] and meta["gpu"] == GPU_INFO
    assert "versions" in meta["environment"] and "e2e.csv" not in paths
    with pytest.raises(UserError, match="reps must be >= 3; got 2"):
        bench.run(plan, str(tmp_path), device="cpu", reps=2)


def test_end_to_end_uses_the_warmup_it_records(opt_dir, tmp_path, monkeypatch):
    used = []
    monkeypatch.setattr(bench, "gpu_info", lambda device, peak=None: GPU_INFO)
    monkeypatch.setattr(bench, "bench_kernels", lambda plan, *args: _kernel_rows())
    monkeypatch.setattr(e2e, "time_prefill", lambda model, ids, warmup, reps: used.append(warmup) or [3.0] * reps)
    monkeypatch.setattr(e2e, "time_decode", lambda model, ids, new, warmup, reps: used.append(warmup) or [1.0] * reps)
    plan = make_plan(models=[str(opt_dir)], tokens="16", dtypes="float16", backends="cutlass",
                     e2e=make_e2e_plan("1x16", "2", context=16, new_tokens=2, reps=3))
    paths = bench.run(plan, str(tmp_path), device="cpu", warmup=4, reps=3, quiet=True)
    assert json.loads(paths["protocol.json"].read_text())["protocol"]["warmup"] == 4
    assert used == [4, 4]  # the dense prefill and decode; cutlass cannot run on a CPU
    assert "e2e.csv" in paths


def test_no_plot_when_nothing_was_timed(tmp_path):
    paths = report.write_results(tmp_path, META, _kernel_rows()[-1:], [])
    assert set(paths) == {"kernels.csv", "kernels.md", "protocol.json"}


# --- on a GPU -------------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@gpu
def test_sparse_kernels_agree_with_dense_and_are_timed():
    dev = torch.device("cuda")
    rows = linear.bench_cell(LinearShape(1024, 1024), 64, "float16", ("cutlass", "cusparselt"), dev, warmup=2, reps=5,
                            graph=True, gpu=gpu_info(dev))
    for row in rows:
        assert row["status"] == "ok", row
        assert row["dense_ms"] > 0 and row["sparse_ms"] > 0 and row["max_abs_err"] < 1e-2


@pytest.mark.gpu
@gpu
def test_eager_timing_and_cusparselt_search_match_linear():
    dev = torch.device("cuda")
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT

    w = backends.pruned_weight(512, 256, torch.bfloat16, dev, torch.Generator(dev).manual_seed(0))
    x = torch.randn(5, 256, device=dev, dtype=torch.bfloat16)
    sparse = SparseSemiStructuredTensorCUSPARSELT.from_dense(w)
    alg = backends.cusparselt_alg_id(sparse, x)
    out = F.linear(x, SparseSemiStructuredTensorCUSPARSELT.from_dense(w, alg_id=alg))
    torch.testing.assert_close(out, F.linear(x, w), rtol=2e-2, atol=2e-2)
    assert len(timing.time_calls([lambda: F.linear(x, w)], 1, 4, graph=False)) == 4


@pytest.mark.gpu
@gpu
@pytest.mark.slow
def test_whole_run_writes_tables_for_a_small_model(tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    OPTForCausalLM(OPTConfig(vocab_size=512, hidden_size=256, ffn_dim=1024, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=256,
                             word_embed_proj_dim=256)).save_pretrained(tmp_path / "opt")
    e2e_plan = make_e2e_plan("1x64", "2", context=32, new_tokens=4, reps=3)
    plan = make_plan(models=[str(tmp_path / "opt")], tokens="16,128", dtypes="float16",
                           backends="cutlass,cusparselt", e2e=e2e_plan)
    paths = bench.run(plan, str(tmp_path / "out"), warmup=1, reps=3, quiet=True)
    kernels = list(csv.DictReader(paths["kernels.csv"].open()))
    assert len(kernels) == 3 * 2 * 2 and all(r["status"] == "ok" for r in kernels)
    e2e_rows = list(csv.DictReader(paths["e2e.csv"].open()))
    assert {r["status"] for r in e2e_rows} == {"ok"} and len(e2e_rows) == 2 * 2
