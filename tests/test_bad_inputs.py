"""Bad inputs, table-driven: each one, through the CLI or the Python API, is refused with one plain line (exit 2 /
UserError), no traceback, and nothing written.

Layout: the harness (module-level helpers, shared by every section), then one section of case lists per owner.
Each case list is a list of `pytest.param(...)`; a test per list runs them through `check_cli` or `check_api`.
To add cases: append a section with your own lists and tests; reuse the harness, do not edit it per case.

The inputs are built lazily by name (`World`): `{opt}` is a saved tiny OPT with its tokenizer, `{llama}` a tiny
Llama, `{tokens}` a good token file, and each name in BUILDERS one bad file or directory. Every case fails before
anything large loads: tiny in-process models only.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import sds_bench
from sds_bench import api, cli
from sds_bench.errors import UserError
from sds_bench.testing import VOCAB, tiny_llama, tiny_opt

# ------------------------------------------------------------------------------------------------------------------
# Harness
# ------------------------------------------------------------------------------------------------------------------


def _model_dir(build: Callable[[], Any]) -> Callable[[Path], Path]:
    """A builder saving a tiny model with the session's tokenizer."""
    def make(path: Path) -> Path:
        build().save_pretrained(path)
        _TOKENIZER[0].save_pretrained(path)
        return path
    return make


def _bad_model(mutate: Callable[[Path], Any]) -> Callable[[Path], Path]:
    """A builder: a saved tiny OPT, then `mutate(directory)`."""
    def make(path: Path) -> Path:
        _model_dir(tiny_opt)(path)
        mutate(path)
        return path
    return make


def _file(content: bytes | str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path
    return make


def _torch_file(obj: Any) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        torch.save(obj, path)
        return path
    return make


def _numpy_file(array: np.ndarray) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        np.save(path, array)
        return path
    return make


def _remote_code(path: Path) -> None:
    """Plant modeling code that, if it ever runs, writes a marker file beside the model; and an auto_map to it."""
    (path / "modeling_planted.py").write_text(
        f"from pathlib import Path\nPath({str(path / 'RAN')!r}).write_text('the planted code ran')\n"
        "from transformers import OPTForCausalLM\nclass Planted(OPTForCausalLM):\n    pass\n")
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_planted.Planted"}
    (path / "config.json").write_text(json.dumps(config))


def _drop(*names: str) -> Callable[[Path], None]:
    return lambda path: [(path / n).unlink() for n in names]


def _pickled_bin(path: Path) -> None:
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Path("x")}))


def _garbage_bin(path: Path) -> None:
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"not a checkpoint at all")


def _pruning_json(content: bytes | str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.mkdir()
        _file(content)(path / "pruning.json")
        return path
    return make


def _under_a_file(path: Path) -> Path:
    path.write_text("a file")
    return path / "out"


BUILDERS: dict[str, Callable[[Path], Path]] = {
    # models
    "opt": _model_dir(tiny_opt),
    "llama": _model_dir(tiny_llama),
    "planted": _bad_model(_remote_code),
    "corrupt_safetensors": _bad_model(lambda p: (p / "model.safetensors").write_bytes(b"\x00garbage" * 64)),
    "truncated_safetensors": _bad_model(
        lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:4000])),
    "config_not_json": _bad_model(lambda p: (p / "config.json").write_text("{model_type: opt")),
    "config_not_utf8": _bad_model(lambda p: (p / "config.json").write_bytes(b'{"model_type": "\xff\xfe"}')),
    "config_a_list": _bad_model(lambda p: (p / "config.json").write_text("[1, 2]")),
    "config_no_model_type": _bad_model(lambda p: (p / "config.json").write_text('{"hidden_size": 32}')),
    "config_unknown_type": _bad_model(lambda p: (p / "config.json").write_text('{"model_type": "no-such-arch"}')),
    "no_config": _bad_model(_drop("config.json")),
    "no_weights": _bad_model(_drop("model.safetensors")),
    "pickled_bin": _bad_model(_pickled_bin),
    "garbage_bin": _bad_model(_garbage_bin),
    "empty_dir": lambda p: (p.mkdir(), p)[1],
    "a_file": _file("not a model"),
    # data files
    "tokens": _torch_file(torch.randint(0, VOCAB, (8, 32), generator=torch.Generator().manual_seed(0))),
    "text": _file(" ".join(f"word{i % 50} and more text" for i in range(400))),
    "not_utf8.txt": _file(b"caf\xe9 au lait " * 50),
    "empty.txt": _file(""),
    "bad.json": _file('["one", "two",'),
    "object.json": _file('{"text": "a dict, not a list"}'),
    "numbers.json": _file("[1, 2, 3]"),
    "bad.jsonl": _file('{"text": "one"}\n{"text": "two"}\n{"text": "three\n'),
    "no_text.jsonl": _file('{"text": "one"}\n{"body": "two"}\n'),
    "not_object.jsonl": _file('{"text": "one"}\n["two"]\n'),
    "not_utf8.jsonl": _file(b'{"text": "caf\xe9"}\n'),
    "garbage.pt": _file(b"this is not a torch file"),
    "pickled.pt": _torch_file({"tokens": Path("x")}),
    "floats.pt": _torch_file(torch.zeros(4, 8)),
    "dict.pt": _torch_file({"tokens": torch.zeros(4, 8, dtype=torch.int64)}),
    "garbage.npy": _file(b"this is not a numpy file"),
    "objects.npy": _numpy_file(np.array([{"a": 1}], dtype=object)),
    "vector.npy": _numpy_file(np.zeros(32, dtype=np.int64)),
    "strings.npy": _numpy_file(np.array([["a", "b"], ["c", "d"]])),
    "bad.json.gz": _file(b'{"text": "not compressed"}\n'),
    "no_text.json.gz": _file(gzip.compress(b'{"body": "one", "url": "https://example.org"}\n')),
    "short_docs.json.gz": _file(gzip.compress(b'{"text": "short"}\n{"text": "also short"}\n')),
    "empty.json.gz": _file(gzip.compress(b"")),
    # pruning records (plot weights)
    "run_corrupt": _pruning_json('{"layers": {"a": '),
    "run_list": _pruning_json("[1, 2, 3]"),
    "run_layers_list": _pruning_json('{"layers": [1, 2]}'),
    "run_no_histograms": _pruning_json('{"layers": {"a": {"sparsity": 0.5}}}'),
    "run_not_utf8": _pruning_json(b'{"layers": "\xff"}'),
    "run_bad_histograms": _pruning_json('{"layers": {"a": {"sds_histograms": [1, 2]}}}'),
    # outputs
    "full_dir": lambda p: (p.mkdir(), (p / "pytorch_model.bin").write_text("stale"), p)[2],
    "under_a_file": _under_a_file,
}

_TOKENIZER: list = []  # the session's tokenizer, set by the `world` fixture


class World(dict):
    """Input paths by name, each built on first use under one temporary directory."""

    def __init__(self, root: Path):
        super().__init__(tmp=str(root))
        self.root = root

    def __missing__(self, name: str) -> str:
        path = BUILDERS[name](self.root / name)
        self[name] = str(path)
        return self[name]

    def resolve(self, value: Any) -> Any:
        """A '{name}' template filled in; a `Build` called; anything else as is."""
        if isinstance(value, str):  # not str.format: names such as {bad.json} hold dots
            return re.sub(r"\{([^{}]+)\}", lambda m: self[m.group(1)], value)
        return value() if isinstance(value, Build) else value


class Build:
    """An API argument made when the case runs (a fresh tiny model), not when the table is written."""

    def __init__(self, make: Callable[[], Any]):
        self.make = make

    def __call__(self) -> Any:
        return self.make()

    def __repr__(self) -> str:
        return getattr(self.make, "__name__", "build")


OPT, LLAMA = Build(tiny_opt), Build(tiny_llama)


@pytest.fixture
def world(tmp_path, tokenizer) -> World:
    _TOKENIZER[:] = [tokenizer]
    return World(tmp_path)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and modification time: a written or changed file shows."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
            for p in sorted(root.rglob("*"))}


def assert_one_clean_line(text: str, message: str) -> None:
    assert text.count("\n") <= 1 and "\n" not in text.strip(), f"not one line: {text!r}"
    assert "Traceback" not in text and 'File "' not in text, text
    assert "weights_only=False" not in text and "weights_only` set to `False" not in text, text
    assert message in text, f"{message!r} not in {text!r}"


def check_cli(world: World, capsys, argv: str, message: str) -> None:
    """`sds-bench ARGV` exits 2 with one 'sds-bench: error:' line holding `message`, and writes nothing."""
    args = [world.resolve(a) for a in shlex.split(argv)]
    before = snapshot(world.root)
    capsys.readouterr()
    code = cli.main(args)
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert err.startswith("sds-bench: error: "), err
    assert_one_clean_line(err, message)
    assert snapshot(world.root) == before, "something was written"


def check_api(world: World, call: Callable, args: tuple, kwargs: dict, message: str) -> None:
    """`call(*args, **kwargs)` raises UserError with one line holding `message`, and writes nothing."""
    args = [world.resolve(a) for a in args]
    kwargs = {k: world.resolve(v) for k, v in kwargs.items()}
    before = snapshot(world.root)
    with pytest.raises(UserError) as info:
        call(*args, **kwargs)
    assert_one_clean_line(str(info.value), message)
    assert snapshot(world.root) == before, "something was written"


def api_case(call: Callable, *args: Any, message: str, id: str, marks=(), **kwargs: Any):
    """One Python API case: the call, its arguments (templates and `Build`s resolved when it runs), the message."""
    return pytest.param(call, args, kwargs, message, id=id, marks=marks)


# ------------------------------------------------------------------------------------------------------------------
# Section C1: model directories, data files, CLI arguments, output paths, hub preflight
# ------------------------------------------------------------------------------------------------------------------

PRUNE = "prune {opt} --method wanda --sparsity 2:4 --calibration {tokens} --output {tmp}/out --quiet"
EVAL = "eval {opt} --ppl file --data-file {text} --seqlen 16 --quiet"
ROOT = os.geteuid() == 0

CLI_CASES = [
    # remote code in a model directory
    pytest.param("eval {planted} --ppl file --data-file {text} --seqlen 16 --quiet",
                 "modeling_planted.py", id="eval-planted-code"),
    pytest.param(PRUNE.replace("{opt}", "{planted}"), "--trust-remote-code", id="prune-planted-code"),
    # arguments out of range
    pytest.param(PRUNE + " --nsamples 0", "nsamples must be >= 1; got 0", id="prune-nsamples-0"),
    pytest.param(PRUNE + " --nsamples -3", "nsamples must be >= 1; got -3", id="prune-nsamples-negative"),
    pytest.param(PRUNE + " --nsamples many", "argument --nsamples: invalid int value", id="prune-nsamples-text"),
    pytest.param(PRUNE + " --seqlen 0", "seqlen must be >= 1; got 0", id="prune-seqlen-0"),
    pytest.param(PRUNE + " --seqlen -5", "seqlen must be >= 1; got -5", id="prune-seqlen-negative"),
    pytest.param(PRUNE + " --seqlen 65", "seqlen 65 is beyond the model's 64 positions", id="prune-seqlen-opt-over"),
    pytest.param(PRUNE.replace("{opt}", "{llama}") + " --seqlen 100", "seqlen 100 is beyond the model's 64 positions",
                 id="prune-seqlen-llama-over"),
    pytest.param(PRUNE + " --batch-size 0", "batch_size must be >= 1; got 0", id="prune-batch-0"),
    pytest.param(PRUNE + " --batch-size -2", "batch_size must be >= 1; got -2", id="prune-batch-negative"),
    pytest.param(PRUNE + " --offload disk", "argument --offload: invalid choice: 'disk'", id="prune-offload"),
    pytest.param(PRUNE + " --sparsity 1.5", "bad sparsity", id="prune-sparsity-over-1"),
    pytest.param(PRUNE + " --device tpu:0", "bad device 'tpu:0'", id="prune-device"),
    pytest.param(PRUNE + " --dtype float64", "bad dtype 'float64'", id="prune-dtype"),
    pytest.param(PRUNE + " --frobnicate", "unrecognized arguments: --frobnicate", id="prune-unknown-flag"),
    pytest.param(EVAL.replace("--seqlen 16", "--seqlen 0"), "'seqlen' must be >= 1; got 0", id="eval-seqlen-0"),
    pytest.param(EVAL.replace("--seqlen 16", "--seqlen -5"), "'seqlen' must be >= 1; got -5", id="eval-seqlen-neg"),
    pytest.param(EVAL.replace("--seqlen 16", "--seqlen 65"), "seqlen 65 is beyond the model's 64 positions",
                 id="eval-seqlen-opt-over"),
    pytest.param(EVAL.replace("{opt}", "{llama}").replace("--seqlen 16", "--seqlen 1000"),
                 "seqlen 1000 is beyond the model's 64 positions", id="eval-seqlen-llama-over"),
    pytest.param(EVAL + " --max-windows 0", "'max_windows' must be >= 1; got 0", id="eval-max-windows-0"),
    pytest.param(EVAL + " --max-windows -1", "'max_windows' must be >= 1; got -1", id="eval-max-windows-neg"),
    pytest.param("eval {opt} --ppl nope --quiet", "unknown evaluation dataset 'nope'", id="eval-unknown-dataset"),
    pytest.param("eval {opt} --ppl file --quiet", "needs a data file (--data-file)", id="eval-file-without-data"),
    pytest.param("eval {opt} --quiet", "nothing to evaluate", id="eval-nothing"),
    pytest.param("bench kernels --shapes 64x64 --reps 0", "--reps must be >= 3; got 0", id="bench-reps-0"),
    pytest.param("bench kernels --shapes 64x64 --warmup -1", "--warmup must be >= 0; got -1", id="bench-warmup-neg"),
    pytest.param("bench kernels --shapes 64x64 --e2e --e2e-reps 0", "--e2e-reps must be >= 3; got 0",
                 id="bench-e2e-reps-0"),
    pytest.param("eval {opt} --evaluator nope --quiet", "unknown evaluator 'nope'", id="eval-unknown-evaluator"),
    # model directories
    pytest.param(EVAL.replace("{opt}", "{corrupt_safetensors}"), "model.safetensors is corrupt",
                 id="eval-corrupt-safetensors"),
    pytest.param(PRUNE.replace("{opt}", "{truncated_safetensors}"), "model.safetensors is corrupt",
                 id="prune-truncated-safetensors"),
    pytest.param(EVAL.replace("{opt}", "{config_not_json}"), "config.json' is not valid JSON (line 1",
                 id="eval-config-not-json"),
    pytest.param(PRUNE.replace("{opt}", "{config_not_json}"), "config.json' is not valid JSON",
                 id="prune-config-not-json"),
    pytest.param(EVAL.replace("{opt}", "{config_not_utf8}"), "config.json' is not UTF-8 text",
                 id="eval-config-not-utf8"),
    pytest.param(EVAL.replace("{opt}", "{config_a_list}"), "config.json must hold a JSON object",
                 id="eval-config-a-list"),
    pytest.param(EVAL.replace("{opt}", "{config_no_model_type}"), "config.json has no 'model_type'",
                 id="eval-config-no-model-type"),
    pytest.param(EVAL.replace("{opt}", "{config_unknown_type}"), "'no-such-arch'", id="eval-config-unknown-type"),
    pytest.param(EVAL.replace("{opt}", "{no_config}"), "has no config.json", id="eval-no-config"),
    pytest.param(EVAL.replace("{opt}", "{empty_dir}"), "is empty", id="eval-empty-dir"),
    pytest.param(PRUNE.replace("{opt}", "{empty_dir}"), "is empty", id="prune-empty-dir"),
    pytest.param(EVAL.replace("{opt}", "{no_weights}"), "holds no weights", id="eval-no-weights"),
    pytest.param(EVAL.replace("{opt}", "{pickled_bin}"), "pytorch_model.bin cannot be loaded safely",
                 id="eval-pickled-bin"),
    pytest.param(EVAL.replace("{opt}", "{garbage_bin}"), "pytorch_model.bin", id="eval-garbage-bin"),
    pytest.param(EVAL.replace("{opt}", "{a_file}"), "is a file", id="eval-model-is-a-file"),
    pytest.param(EVAL.replace("{opt}", "{tmp}/nowhere"), "does not exist", id="eval-model-missing"),
    # hub ids offline: the preflight, one line
    pytest.param(PRUNE.replace("{opt}", "no-such-org/no-such-model"), "is not in the local Hugging Face cache",
                 id="prune-hub-offline"),
    pytest.param(EVAL.replace("{opt}", "no-such-org/no-such-model"), "is not in the local Hugging Face cache",
                 id="eval-hub-offline"),
    # data files
    pytest.param(EVAL.replace("{text}", "{tmp}/missing.txt"), "does not exist", id="eval-data-missing"),
    pytest.param(EVAL.replace("{text}", "{empty.txt}"), "fewer than one window", id="eval-text-empty"),
    pytest.param(PRUNE.replace("{tokens}", "{empty.txt}"), "calibration text has", id="prune-calib-empty"),
    pytest.param(PRUNE.replace("{tokens}", "{floats.pt}"), "must hold an int64 array", id="prune-calib-floats"),
    pytest.param(PRUNE.replace("{tokens}", "{dict.pt}"), "must hold an int64 array", id="prune-calib-dict"),
    pytest.param(PRUNE.replace("{tokens}", "{vector.npy}"), "must hold an int64 array", id="prune-calib-vector"),
    pytest.param(PRUNE.replace("{tokens}", "{tmp}/missing.pt"), "does not exist", id="prune-calib-missing"),
    pytest.param(PRUNE.replace("{tokens}", "nowhere"), "unknown calibration source", id="prune-calib-unknown"),
    pytest.param(EVAL.replace("{text}", "{not_utf8.txt}"), "is not UTF-8 text (byte 3)", id="eval-text-not-utf8"),
    pytest.param(EVAL.replace("{text}", "{bad.json}"), "is not valid JSON (line 1", id="eval-bad-json"),
    pytest.param(EVAL.replace("{text}", "{object.json}"), "must hold a JSON list of strings; found dict",
                 id="eval-json-object"),
    pytest.param(EVAL.replace("{text}", "{numbers.json}"), "a list holding non-strings", id="eval-json-numbers"),
    pytest.param(EVAL.replace("{text}", "{bad.jsonl}"), "line 3 is not valid JSON", id="eval-bad-jsonl"),
    pytest.param(EVAL.replace("{text}", "{no_text.jsonl}"), "line 2 has no string field 'text'",
                 id="eval-jsonl-without-text"),
    pytest.param(EVAL.replace("{text}", "{not_object.jsonl}"), "line 2 is not a JSON object",
                 id="eval-jsonl-not-object"),
    pytest.param(EVAL.replace("{text}", "{not_utf8.jsonl}"), "is not UTF-8 text", id="eval-jsonl-not-utf8"),
    pytest.param("eval {opt} --ppl c4 --data-file {bad.json.gz} --seqlen 16 --quiet", "not a readable gzip file",
                 id="eval-c4-not-gzip"),
    pytest.param("eval {opt} --ppl c4 --data-file {no_text.json.gz} --seqlen 16 --quiet",
                 "line 1 has no string field 'text'", id="eval-c4-without-text"),
    pytest.param("eval {opt} --ppl ptb --data-file {no_text.jsonl} --seqlen 16 --quiet",
                 "line 1 has no string field 'sentence'", id="eval-ptb-without-sentence"),
    pytest.param(PRUNE.replace("{tokens}", "{not_utf8.txt}"), "is not UTF-8 text", id="prune-calib-not-utf8"),
    pytest.param(PRUNE.replace("{tokens}", "{bad.jsonl}"), "line 3 is not valid JSON", id="prune-calib-bad-jsonl"),
    pytest.param(PRUNE.replace("{tokens}", "{no_text.jsonl}"), "has no string field 'text'", id="prune-calib-no-text"),
    pytest.param(PRUNE.replace("{tokens}", "{no_text.json.gz}"), "has no string field 'text'",
                 id="prune-calib-c4-no-text"),
    pytest.param(PRUNE.replace("{tokens}", "{short_docs.json.gz}"), "no calibration document has more than",
                 id="prune-calib-c4-all-short"),
    pytest.param(PRUNE.replace("{tokens}", "{garbage.pt}"), "is not a file torch.save wrote", id="prune-calib-garbage-pt"),
    pytest.param(PRUNE.replace("{tokens}", "{pickled.pt}"), "holds Python objects besides tensors",
                 id="prune-calib-pickled-pt"),
    pytest.param(PRUNE.replace("{tokens}", "{garbage.npy}"), "is not a .npy file", id="prune-calib-garbage-npy"),
    pytest.param(PRUNE.replace("{tokens}", "{objects.npy}"), "holds objects or text, not numbers",
                 id="prune-calib-objects-npy"),
    pytest.param(PRUNE.replace("{tokens}", "{strings.npy}"), "holds objects or text, not numbers",
                 id="prune-calib-strings-npy"),
    # pruning records
    pytest.param("plot weights {run_no_histograms}", "holds no weight histograms", id="plot-no-histograms"),
    pytest.param("plot weights {tmp}/nowhere", "does not exist", id="plot-missing"),
    pytest.param("plot weights {run_corrupt}", "is not valid JSON (line 1", id="plot-corrupt-json"),
    pytest.param("plot weights {run_list}", "is not a pruning record", id="plot-json-list"),
    pytest.param("plot weights {run_layers_list}", "is not a pruning record", id="plot-layers-list"),
    pytest.param("plot weights {run_not_utf8}", "is not UTF-8 text", id="plot-not-utf8"),
    pytest.param("plot weights {run_bad_histograms}", "histograms of layer 'a' are malformed",
                 id="plot-bad-histograms"),
    # outputs: checked before the model loads
    pytest.param(PRUNE.replace("{tmp}/out", "{a_file}"), "is a file", id="prune-output-a-file"),
    pytest.param(PRUNE.replace("{tmp}/out", "{under_a_file}"), "is under a file", id="prune-output-under-a-file"),
    pytest.param(PRUNE.replace("{tmp}/out", "{full_dir}"), "pass --overwrite", id="prune-output-not-empty"),
    pytest.param(PRUNE.replace("{tmp}/out", "/sys/sds-bench-out"), "cannot write", id="prune-output-unwritable"),
]


@pytest.mark.parametrize("argv, message", CLI_CASES)
def test_cli_bad_input(world, capsys, argv, message):
    check_cli(world, capsys, argv, message)


API_CASES = [
    api_case(sds_bench.load_model, "{planted}", message="trust_remote_code=True", id="load-planted-code"),
    api_case(sds_bench.load_model, "{corrupt_safetensors}", message="model.safetensors is corrupt",
             id="load-corrupt-safetensors"),
    api_case(sds_bench.load_model, "{config_not_json}", message="config.json' is not valid JSON", id="load-bad-config"),
    api_case(sds_bench.load_model, "{empty_dir}", message="is empty", id="load-empty-dir"),
    api_case(sds_bench.load_model, "{no_weights}", message="holds no weights", id="load-no-weights"),
    api_case(sds_bench.load_model, "{pickled_bin}", message="cannot be loaded safely", id="load-pickled-bin"),
    api_case(sds_bench.load_model, "no-such-org/no-such-model", message="is not in the local Hugging Face cache",
             id="load-hub-offline"),
    api_case(sds_bench.load_model, "{opt}", dtype="float64", message="bad dtype", id="load-dtype"),
    api_case(api.prune, OPT, None, "wanda", "2:4", "{tokens}", nsamples=0, message="nsamples must be >= 1",
             id="prune-nsamples-0"),
    api_case(api.prune, OPT, None, "wanda", "2:4", "{tokens}", seqlen=0, message="seqlen must be >= 1",
             id="prune-seqlen-0"),
    api_case(api.prune, OPT, None, "wanda", "2:4", "{tokens}", seqlen=65, message="beyond the model's 64 positions",
             id="prune-seqlen-over"),
    api_case(api.prune, LLAMA, None, "wanda", "2:4", "{tokens}", seqlen=65,
             message="beyond the model's 64 positions", id="prune-llama-seqlen-over"),
    api_case(api.prune, OPT, None, "wanda", "2:4", "{tokens}", batch_size=0, message="batch_size must be >= 1",
             id="prune-batch-0"),
    api_case(api.prune, OPT, None, "wanda", "2:4", "{tokens}", offload="disk", message="offload must be one of",
             id="prune-offload"),
    api_case(api.evaluate, OPT, None, "perplexity", {"dataset": "embedded", "seqlen": 0},
             message="'seqlen' must be >= 1", id="eval-seqlen-0"),
    api_case(api.evaluate, OPT, None, "perplexity", {"dataset": "embedded", "seqlen": 65},
             message="beyond the model's 64 positions", id="eval-seqlen-over"),
    api_case(api.evaluate, OPT, None, "perplexity", {"dataset": "embedded", "max_windows": -1},
             message="'max_windows' must be >= 1", id="eval-max-windows-neg"),
    api_case(api.evaluate, OPT, None, "perplexity", {"dataset": "embedded", "batch_size": 0},
             message="'batch_size' must be >= 1", id="eval-batch-0"),
    api_case(sds_bench.calibration, "{tokens}", nsamples=0, message="nsamples must be >= 1", id="calibration-nsamples"),
    api_case(api.prune, OPT, None, "wanda", "2:4", "{pickled.pt}", message="holds Python objects besides tensors",
             id="prune-pickled-tokens"),
    api_case(sds_bench.calibration, "{bad.jsonl}", message="line 3 is not valid JSON", id="calibration-bad-jsonl"),
    api_case(sds_bench.calibration, "{garbage.pt}", message="is not a file torch.save wrote",
             id="calibration-garbage-pt"),
    api_case(sds_bench.calibration, "{empty.json.gz}", message="holds no documents", id="calibration-c4-empty"),
    api_case(api.save_pruned, OPT, None, {}, "{full_dir}", message="pass overwrite", id="save-not-empty"),
    api_case(api.save_pruned, OPT, None, {}, "{a_file}", message="is a file", id="save-a-file"),
    api_case(api.save_pruned, OPT, None, {}, "{under_a_file}", message="is under a file", id="save-under-a-file"),
]


@pytest.mark.parametrize("call, args, kwargs, message", API_CASES)
def test_api_bad_input(world, call, args, kwargs, message):
    check_api(world, call, args, kwargs, message)


def test_there_are_at_least_sixty_bad_inputs():
    assert len(CLI_CASES) + len(API_CASES) >= 60


# ------------------------------------------------------------------------------------------------------------------
# Section C2: suites, option bounds, plugins (appended by its owner)
# ------------------------------------------------------------------------------------------------------------------

import math  # noqa: E402  (section C2's own imports)

from sds_bench import runner  # noqa: E402
from sds_bench.plugin import EvalResult, Evaluator, Pruner, parse_options  # noqa: E402
from sds_bench.pruners.magnitude import MagnitudeOptions  # noqa: E402
from sds_bench.registry import registry  # noqa: E402
from tests.test_guards import BAD_PRUNERS  # noqa: E402

SUITE_KEYS = {"name": '"ok"', "models": '["embedded:opt-tiny"]', "methods": '["magnitude"]', "sparsities": '["2:4"]',
              "evaluators": '["perplexity"]', "calibration": '{source = "embedded", nsamples = 2, seqlen = 32}',
              "run": '{device = "cpu"}'}


def _suite(**keys: str) -> Callable[[Path], Path]:
    """A builder: a valid suite TOML with some keys replaced (values are TOML literals; tables inline)."""
    text = "\n".join(f"{k} = {v}" for k, v in {**SUITE_KEYS, **keys}.items()) + "\n"
    return _file(text)


def _method(table: str) -> Callable[[Path], Path]:
    return _suite(methods=f"[{table}]")


def _evaluator(table: str) -> Callable[[Path], Path]:
    return _suite(evaluators=f"[{table}]")


SUITES = {
    "suite_ok": _suite(),
    "suite_name_up": _suite(name='"../../x"'),
    "suite_name_abs": _suite(name='"/tmp/elsewhere"'),
    "suite_name_empty": _suite(name='""'),
    "suite_name_slash": _suite(name='"a/b"'),
    "suite_name_dotdot": _suite(name='".."'),
    "suite_nsamples_0": _suite(calibration='{source = "embedded", nsamples = 0}'),
    "suite_seqlen_neg": _suite(calibration='{source = "embedded", seqlen = -8}'),
    "suite_batch_0": _suite(run='{device = "cpu", batch_size = 0}'),
    "suite_float64": _suite(run='{device = "cpu", dtype = "float64"}'),
    "suite_device": _suite(run='{device = "gpu0"}'),
    "suite_offload": _suite(run='{device = "cpu", offload = "disk"}'),
    "suite_method_option": _method('{name = "sg", pruner = "sparsegpt", options = {blocksz = 64}}'),
    "suite_blocksize_0": _method('{name = "sg-b0", pruner = "sparsegpt", options = {blocksize = 0}}'),
    "suite_percdamp": _method('{name = "sg-d", pruner = "sparsegpt", options = {percdamp = -5.0}}'),
    "suite_unknown_method": _suite(methods='["magnitude", "nonesuch"]'),
    "suite_sds_no_base": _suite(methods='["sds"]'),
    "suite_sds_base_options": _method(
        '{name = "s", pruner = "sds", options = {base = "sparsegpt", base_options = "blocksize=0"}}'),
    "suite_sds_lr": _method('{name = "s-lr", pruner = "sds-wanda", options = {lr = 0.0}}'),
    "suite_tyr_nm": _suite(methods='["tyr"]'),
    "suite_unknown_evaluator": _suite(evaluators='["perplexity", "nope"]'),
    "suite_eval_option": _evaluator('{name = "ppl", evaluator = "perplexity", options = {windows = 2}}'),
    "suite_eval_seqlen": _evaluator('{name = "ppl", evaluator = "perplexity", options = {seqlen = 0}}'),
    "suite_eval_windows": _evaluator('{name = "ppl", evaluator = "perplexity", options = {max_windows = -1}}'),
    "suite_zeroshot_limit": _evaluator('{name = "zs", evaluator = "zeroshot", options = {limit = 0}}'),
    "suite_eval_methods": _evaluator('{name = "ppl", evaluator = "perplexity", methods = ["wanda"]}'),
    "suite_method_sparsity": _method('{name = "m", pruner = "magnitude", sparsities = ["4:8"]}'),
    "suite_owl_nm": _method('{name = "o", pruner = "wanda", allocation = "owl"}'),
    "suite_owl_option": _method('{name = "o", pruner = "wanda", allocation = "owl", allocation_options = {lam = -1.0}, '
                                'sparsities = ["2:4"]}'),
}
BUILDERS.update(SUITES)

RUN = "run {%s} --results {tmp}/results --quiet"
C2_SUITE_CASES = [
    pytest.param(RUN % "suite_name_up", "'name' '../../x' must be one plain folder name", id="suite-name-up"),
    pytest.param(RUN % "suite_name_abs", "'name' '/tmp/elsewhere' must be one plain folder name",
                 id="suite-name-absolute"),
    pytest.param(RUN % "suite_name_empty", "'name' '' must be one plain folder name", id="suite-name-empty"),
    pytest.param(RUN % "suite_name_slash", "'name' 'a/b' must be one plain folder name", id="suite-name-slash"),
    pytest.param(RUN % "suite_name_dotdot", "'name' '..' must be one plain folder name", id="suite-name-dotdot"),
    pytest.param(RUN % "suite_nsamples_0", "[calibration] nsamples must be >= 1; got 0", id="suite-nsamples-0"),
    pytest.param(RUN % "suite_seqlen_neg", "[calibration] seqlen must be >= 1; got -8", id="suite-seqlen-neg"),
    pytest.param(RUN % "suite_batch_0", "[run] batch_size must be >= 1; got 0", id="suite-batch-0"),
    pytest.param(RUN % "suite_float64", "[run] dtype 'float64' is not supported", id="suite-float64"),
    pytest.param(RUN % "suite_device", "[run] device 'gpu0' is not a device", id="suite-device"),
    pytest.param(RUN % "suite_offload", "[run] offload must be one of cpu, device; got 'disk'",
                 id="suite-offload"),
    pytest.param(RUN % "suite_method_option", "methods entry 'sg': 'sparsegpt' has no option 'blocksz'",
                 id="suite-method-unknown-option"),
    pytest.param(RUN % "suite_blocksize_0",
                 "methods entry 'sg-b0': 'sparsegpt': option 'blocksize' must be >= 1; got 0", id="suite-blocksize-0"),
    pytest.param(RUN % "suite_percdamp", "'sparsegpt': option 'percdamp' must be >= 0; got -5.0",
                 id="suite-percdamp-negative"),
    pytest.param(RUN % "suite_unknown_method", "methods entry 'nonesuch': unknown method 'nonesuch'",
                 id="suite-unknown-method"),
    pytest.param(RUN % "suite_sds_no_base", "methods entry 'sds': sds needs a base pruner", id="suite-sds-no-base"),
    pytest.param(RUN % "suite_sds_base_options", "methods entry 's': 'sparsegpt': option 'blocksize' must be >= 1",
                 id="suite-sds-base-options"),
    pytest.param(RUN % "suite_sds_lr", "'sds-wanda': option 'lr' must be > 0; got 0.0", id="suite-sds-lr-0"),
    pytest.param(RUN % "suite_tyr_nm", "methods entry 'tyr': 'tyr' does not support nm sparsity (2:4)",
                 id="suite-tyr-nm"),
    pytest.param(RUN % "suite_unknown_evaluator", "evaluators entry 'nope': unknown evaluator 'nope'",
                 id="suite-unknown-evaluator"),
    pytest.param(RUN % "suite_eval_option", "evaluators entry 'ppl': 'perplexity' has no option 'windows'",
                 id="suite-evaluator-unknown-option"),
    pytest.param(RUN % "suite_eval_seqlen", "'perplexity': option 'seqlen' must be >= 1; got 0",
                 id="suite-evaluator-seqlen-0"),
    pytest.param(RUN % "suite_eval_windows", "'perplexity': option 'max_windows' must be >= 1; got -1",
                 id="suite-evaluator-max-windows"),
    pytest.param(RUN % "suite_eval_methods", "evaluators entry 'ppl': methods ['wanda'] are not among the suite's",
                 id="suite-evaluator-methods"),
    pytest.param(RUN % "suite_method_sparsity", "methods entry 'm': sparsities ['4:8'] are not among the suite's",
                 id="suite-method-sparsities"),
    pytest.param(RUN % "suite_owl_nm", "methods entry 'o': allocation 'owl' allocates unstructured sparsity only",
                 id="suite-owl-nm"),
    pytest.param(RUN % "suite_owl_option", "methods entry 'o': 'owl': option 'lam' must be >= 0; got -1.0",
                 id="suite-owl-option"),
    pytest.param(RUN % "suite_zeroshot_limit", "'zeroshot': option 'limit' must be >= 1; got 0",
                 id="suite-zeroshot-limit-0"),
    pytest.param("run {suite_ok} --results {a_file} --quiet", "is a file; give a directory", id="run-results-a-file"),
    pytest.param("run {suite_name_up} --results {tmp}/results --dry-run", "must be one plain folder name",
                 id="dry-run-bad-suite"),
    pytest.param("report {suite_name_up} --results {tmp}/results", "must be one plain folder name",
                 id="report-bad-suite"),
]

PRUNE_O = "prune {opt} --method %s --sparsity %s --calibration {tokens} --output {tmp}/out --quiet -o %s"
C2_OPTION_CASES = [
    pytest.param(PRUNE_O % ("sparsegpt", "2:4", "blocksize=0"), "'sparsegpt': option 'blocksize' must be >= 1; got 0",
                 id="sparsegpt-blocksize-0"),
    pytest.param(PRUNE_O % ("sparsegpt", "2:4", "blocksize=-1"), "option 'blocksize' must be >= 1; got -1",
                 id="sparsegpt-blocksize-negative"),
    pytest.param(PRUNE_O % ("sparsegpt", "2:4", "percdamp=-5"), "'sparsegpt': option 'percdamp' must be >= 0; got -5.0",
                 id="sparsegpt-percdamp-negative"),
    pytest.param(PRUNE_O % ("sparsegpt", "2:4", "percdamp=nan"), "option 'percdamp' must be >= 0; got nan",
                 id="sparsegpt-percdamp-nan"),
    pytest.param(PRUNE_O % ("sds-wanda", "2:4", "lr=0"), "'sds-wanda': option 'lr' must be > 0; got 0.0",
                 id="sds-lr-0"),
    pytest.param(PRUNE_O % ("sds-wanda", "2:4", "iterations=-1"), "option 'iterations' must be >= 0; got -1",
                 id="sds-iterations-negative"),
    pytest.param(PRUNE_O % ("sds-wanda", "2:4", "bins=0"), "option 'bins' must be >= 1; got 0", id="sds-bins-0"),
    pytest.param(PRUNE_O % ("sds-wanda", "2:4", "l1=-0.1"), "option 'l1' must be >= 0; got -0.1", id="sds-l1-negative"),
    pytest.param(PRUNE_O % ("sds", "2:4", "base=sparsegpt -o base_options=percdamp=-1"),
                 "'sparsegpt': option 'percdamp' must be >= 0; got -1.0", id="sds-base-options-out-of-bounds"),
    pytest.param(PRUNE_O % ("tyr", "0.5", "delta=2"), "'tyr': option 'delta' must be <= 1; got 2.0", id="tyr-delta-2"),
    pytest.param(PRUNE_O % ("tyr", "0.5", "levels=0"), "'tyr': option 'levels' must be >= 1; got 0", id="tyr-levels-0"),
    pytest.param(PRUNE_O % ("tyr", "0.5", "offspring=0"), "'tyr': option 'offspring' must be >= 1; got 0",
                 id="tyr-offspring-0"),
    pytest.param(PRUNE_O % ("wanda-sp", "0.5", "batch_size=0"), "'wanda-sp': option 'batch_size' must be >= 1; got 0",
                 id="wanda-sp-batch-0"),
    pytest.param("eval {opt} --zeroshot embedded -o limit=0 --quiet", "'zeroshot': option 'limit' must be >= 1; got 0",
                 id="zeroshot-limit-0"),
    pytest.param("eval {opt} --zeroshot embedded -o batch_size=0 --quiet",
                 "'zeroshot': option 'batch_size' must be >= 1; got 0", id="zeroshot-batch-0"),
]


@pytest.mark.parametrize("argv, message", C2_SUITE_CASES + C2_OPTION_CASES)
def test_c2_cli_bad_suite_or_option(world, capsys, argv, message):
    check_cli(world, capsys, argv, message)


@pytest.fixture
def faulty_plugins(monkeypatch):
    """The faulty pruners of tests/test_guards.py, and an evaluator whose metric is NaN, registered as plugins."""
    reg = registry()
    for name, (prune, _, _) in BAD_PRUNERS.items():
        monkeypatch.setitem(reg.pruners, name, Pruner(name, "faulty", prune=prune, options=MagnitudeOptions))
        monkeypatch.setitem(reg.origins, f"Pruner:{name}", "test")
    nan = Evaluator("nan", "a NaN metric", evaluate=lambda model, tokenizer, options: EvalResult({"x": math.nan}))
    monkeypatch.setitem(reg.evaluators, "nan", nan)
    monkeypatch.setitem(reg.origins, "Evaluator:nan", "test")


PRUNE_BAD = "prune {opt} --method %s --sparsity %s --output {tmp}/out --quiet"
C2_PLUGIN_OUTPUT_CASES = [
    *(pytest.param(PRUNE_BAD % (name, sparsity), f"pruner '{name}' returned", id=f"pruner-{name}")
      for name, (_, sparsity, _) in BAD_PRUNERS.items()),
    pytest.param("eval {opt} --evaluator nan --quiet", "evaluator 'nan' gave metric 'x' = nan, not a finite number",
                 id="evaluator-nan"),
]


@pytest.mark.parametrize("argv, message", C2_PLUGIN_OUTPUT_CASES)
def test_c2_cli_bad_plugin_output(world, capsys, faulty_plugins, argv, message):
    check_cli(world, capsys, argv, message)


C2_API_CASES = [
    api_case(runner.load_suite, "{suite_name_up}", message="must be one plain folder name", id="load-suite-name"),
    api_case(runner.load_suite, "{suite_float64}", message="[run] dtype 'float64' is not supported",
             id="load-suite-float64"),
    api_case(runner.suite_from_dict, {"name": "/abs", "models": ["m"], "methods": ["wanda"], "sparsities": ["2:4"],
                                      "evaluators": ["perplexity"]}, Path("dict.toml"),
             message="dict.toml: 'name' '/abs' must be one plain folder name", id="suite-from-dict-name"),
    api_case(api.prune, OPT, None, "sparsegpt", "2:4", "{tokens}", options={"blocksize": 0},
             message="'sparsegpt': option 'blocksize' must be >= 1; got 0", id="prune-blocksize-0"),
    api_case(parse_options, Build(lambda: registry().pruner("sds-wanda")), {"lr": "-1"},
             message="'sds-wanda': option 'lr' must be > 0; got -1.0", id="parse-options-sds-lr"),
    api_case(lambda suite, results: runner.run_suite(runner.load_suite(suite), results), "{suite_ok}", "{a_file}",
             message="is a file; give a directory", id="run-suite-results-a-file"),
]


@pytest.mark.parametrize("call, args, kwargs, message", C2_API_CASES)
def test_c2_api_bad_suite_or_option(world, call, args, kwargs, message):
    check_api(world, call, args, kwargs, message)


@pytest.mark.parametrize("plugins, message", [
    pytest.param("nonesuch", "SDS_BENCH_PLUGINS names nonesuch, which matches no installed plugin; installed:",
                 id="plugins-env-matches-nothing"),
    pytest.param("none,ria-typo", "SDS_BENCH_PLUGINS names ria-typo", id="plugins-env-one-typo"),
])
def test_c2_plugins_env_naming_nothing(world, capsys, monkeypatch, plugins, message):
    monkeypatch.setenv("SDS_BENCH_PLUGINS", plugins)
    check_cli(world, capsys, "plugins", message)


def test_c2_has_at_least_twenty_five_bad_inputs():
    assert len(C2_SUITE_CASES) + len(C2_OPTION_CASES) + len(C2_PLUGIN_OUTPUT_CASES) + len(C2_API_CASES) + 2 >= 25
