"""The command line: prune and eval end to end on a local tiny OPT, and one clear line for every bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from sds_bench.cli import main
from sds_bench.sparsity import Sparsity, satisfies
from sds_bench.testing import tiny_opt


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "calib.pt"
    torch.save(torch.randint(0, 320, (8, 32), generator=torch.Generator().manual_seed(0)), path)
    return path


@pytest.fixture
def text_file(tmp_path):
    import pydoc_data.topics

    path = tmp_path / "eval.txt"
    path.write_text("\n\n".join(list(pydoc_data.topics.topics.values())[50:60]))
    return path


@pytest.mark.parametrize("pattern", ["2:4", "0.5"])
def test_prune_writes_loadable_model_with_pattern_and_record(opt_dir, token_file, tmp_path, capsys, pattern):
    out = tmp_path / "pruned"
    assert main(["prune", str(opt_dir), "--method", "wanda", "--sparsity", pattern, "--calibration", str(token_file),
                 "--output", str(out), "--quiet"]) == 0
    assert "measured sparsity" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(out)
    for name, p in model.named_parameters():
        if "layers" in name and p.dim() == 2:
            assert satisfies(p.data, Sparsity.parse(pattern)), name
    record = json.loads((out / "pruning.json").read_text())
    assert record["method"] == "wanda" and record["sparsity"] == pattern
    assert record["calibration"]["nsamples"] == 8 and record["calibration"]["seqlen"] == 32
    assert len(record["calibration"]["sha256"]) == 64 and "torch" in record["environment"]["versions"]
    assert len(record["layers"]) == 12 and record["wall_seconds"] > 0


def test_eval_prints_perplexity_on_local_text(opt_dir, text_file, capsys):
    assert main(["eval", str(opt_dir), "--ppl", "file", "--data-file", str(text_file), "--seqlen", "32", "--quiet"]) == 0
    name, metric, value = capsys.readouterr().out.strip().split("\t")
    assert (name, metric) == ("perplexity:file", "ppl_file") and 1 < float(value) < 10 * 320


def test_eval_errors_on_text_without_a_tokenizer_or_too_short(opt_dir, text_file, tmp_path, capsys):
    bare = tmp_path / "bare"  # a model saved without its tokenizer: no empty stand-in may tokenize the text
    tiny_opt().save_pretrained(bare)
    assert main(["eval", str(bare), "--ppl", "file", "--data-file", str(text_file), "--seqlen", "32", "--quiet"]) == 2
    assert "needs the model's tokenizer, and none was found" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("a few words")
    assert main(["eval", str(opt_dir), "--ppl", "file", "--data-file", str(short), "--seqlen", "32", "--quiet"]) == 2
    assert "are fewer than one window of 32" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"--sparsity": "3:2"}, "bad sparsity '3:2': N:M needs 0 < N < M"),
    ({"--method": "nope"}, "unknown method 'nope'; known: "),
    ({"--calibration": "bad_dtype.pt"}, "must hold an int64 array of shape [N, L]; got torch.float32"),
    ({"--calibration": "bad_shape.npy"}, "must hold an int64 array of shape [N, L]; got torch.int64 [32]"),
    ({"--calibration": "missing.pt"}, "missing.pt' does not exist"),
    ({"--calibration": "big_ids.pt"}, "token ids span 0..100000, but the model's vocabulary has 320 tokens"),
    ({"--calibration": None}, "'wanda' needs calibration data"),
    ({"--device": "cuda"}, "CUDA is not available"),
    ({"-o": "blocksize"}, "bad option 'blocksize': use KEY=VALUE"),
    ({"-o": "blocksize=2"}, "'wanda' has no option 'blocksize'"),
    ({"model": "/no/such/dir"}, "model directory '/no/such/dir' does not exist"),
    pytest.param({"model": "no-such-org/no-such-model"}, "model 'no-such-org/no-such-model' is not in the local Hugging Face cache",
                 marks=pytest.mark.slow),  # the hub client's offline retries take tens of seconds
])
def test_bad_input_gives_one_line_and_nonzero_exit(opt_dir, token_file, tmp_path, capsys, change, message):
    if "--device" in change and torch.cuda.is_available():
        pytest.skip("CUDA present")
    torch.save(torch.zeros(4, 8), tmp_path / "bad_dtype.pt")
    np.save(tmp_path / "bad_shape.npy", np.zeros(32, dtype=np.int64))
    torch.save(torch.tensor([[0, 100000] * 8] * 4), tmp_path / "big_ids.pt")
    args = {"model": str(opt_dir), "--method": "wanda", "--sparsity": "2:4", "--calibration": str(token_file),
            "--output": str(tmp_path / "out")}
    args.update({k: str(tmp_path / v) if k == "--calibration" and v else v for k, v in change.items()})
    argv = ["prune", args.pop("model"), "--quiet", *[x for k, v in args.items() if v is not None for x in (k, v)]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sds-bench: error: ") and message in err and "\n" not in err, err


@pytest.mark.slow
def test_console_script_exit_code_and_debug(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sds_bench.cli", "prune", str(tmp_path / "none"), "--method", "magnitude",
                           "--sparsity", "2:4", "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "sds_bench.cli", "--debug", "prune", str(tmp_path / "none"), "--method",
                           "magnitude", "--sparsity", "2:4", "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_plugins_lists_builtins(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("magnitude", "wanda", "sparsegpt", "perplexity"):
        assert name in out
    assert "builtin" in out
