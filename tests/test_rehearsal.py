"""What the offline rehearsal of the paper grid (benchmarks/rehearse.py) relies on: a hub-layout cache read by the
normal loaders (models by id, C4 shards, WikiText-2 as `datasets` prepares it) sampling as the official code does,
float16 on the CPU, and the suite overrides `--set KEY=VALUE`."""

import json
import math
import subprocess
import sys
from pathlib import Path

import datasets
import huggingface_hub
import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from benchmarks import rehearse
from sds_bench import api, data, testing
from sds_bench.cli import main
from sds_bench.errors import UserError
from sds_bench.runner import load_suite
from sds_bench.runner.suite import with_override

from . import transcriptions
from .test_data import TOPICS


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    """An empty HF_HOME that huggingface_hub and datasets read, offline (their constants are read at import)."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return home


def test_c4_calibration_from_the_hub_cache_equals_the_official_sampling(hf_home, tokenizer):
    """`calibration("c4")` reads allenai/c4's train shard where huggingface_hub caches it; same windows as Wanda's
    get_c4 on the rows `datasets` yields for that file, same seed."""
    docs = [text if i % 3 else text[:40] for i, text in enumerate(TOPICS[:30])]  # every third too short: redrawn
    snapshot = rehearse.put_repo(hf_home, "allenai/c4", {data.C4_TRAIN: rehearse.c4_shard(docs)}, "dataset")
    rows = datasets.load_dataset("json", data_files=str(snapshot / data.C4_TRAIN), split="train")
    for seed in (0, 3):
        ours = data.calibration("c4", tokenizer, nsamples=5, seqlen=48, seed=seed)
        assert ours.tokens.equal(transcriptions.get_c4_train(rows, tokenizer, nsamples=5, seed=seed, seqlen=48))
    assert ours.source == f"c4:{data.C4_TRAIN}"


def test_c4_not_in_the_cache_offline_is_one_line(hf_home, tokenizer):
    with pytest.raises(UserError, match="cannot load allenai/c4 en/c4-train.* from the hub or the local cache"):
        data.calibration("c4", tokenizer, nsamples=2, seqlen=8)


def test_wikitext2_from_the_prepared_dataset_cache_equals_the_official_loader(hf_home, tokenizer):
    """WikiText-2 as `datasets` prepares it: calibration is SparseGPT's windows of " ".join(train rows), perplexity
    text is "\\n\\n".join(test rows)."""
    train = [f" {t[:300]}\n" for t in TOPICS[:20]] + [""]
    test = ["", " = Robert Boulter = \n", "", " Robert Boulter is an English actor . \n"]
    rehearse.put_prepared_dataset(hf_home, "wikitext", "wikitext-2-raw-v1", {"train": train, "test": test})
    ours = data.calibration("wikitext2", tokenizer, nsamples=4, seqlen=32, seed=5)
    stream = tokenizer(" ".join(train), return_tensors="pt").input_ids
    assert ours.tokens.equal(transcriptions.sample_windows(stream, nsamples=4, seed=5, seqlen=32))
    ids, info = data.eval_tokens("wikitext2", tokenizer, seqlen=8)
    assert ids.equal(tokenizer("\n\n".join(test), return_tensors="pt").input_ids) and info["source"] == "hub"


@pytest.mark.slow
def test_a_model_in_a_hub_layout_cache_loads_by_id_offline(hf_home, tmp_path, tokenizer):
    """As a user's shell runs it: HF_HOME and HF_HUB_OFFLINE=1 in the environment, the model named by its hub id; the
    row's revision is the cached commit."""
    model = testing.tiny_opt()
    snapshot = rehearse.put_saved(hf_home, "tiny-org/tiny-opt", model, tokenizer)
    script = ("import json; from sds_bench import models; m, t = models.load_model('tiny-org/tiny-opt'); "
              "print(json.dumps({'revision': models.hub_revision('tiny-org/tiny-opt'), 'ids': t('a b').input_ids, "
              "'weight': m.model.decoder.layers[0].fc1.weight[0, :4].tolist()}))")
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "SDS_BENCH_PLUGINS": "none"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.splitlines()[-1])
    assert loaded["revision"] == snapshot.name == (snapshot.parents[1] / "refs" / "main").read_text()
    assert loaded["ids"] == tokenizer("a b").input_ids
    assert loaded["weight"] == model.model.decoder.layers[0].fc1.weight[0, :4].tolist()
    missing = subprocess.run([sys.executable, "-m", "sds_bench.cli", "eval", "tiny-org/absent", "--ppl", "embedded"],
                             env=env, capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "not in the local Hugging Face cache" in missing.stderr


@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "sds-sparsegpt"])
def test_float16_on_the_cpu_prunes_and_evaluates(tokenizer, method):
    """The paper suites run in float16; on the CPU too the model stays float16, gets its pattern, and evaluates."""
    model = testing.tiny_opt().to(torch.float16)
    calib = torch.randint(0, testing.VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
    options = {"iterations": 5} if method.startswith("sds") else {}
    record = api.prune(model, tokenizer, method, "2:4", data.Calibration(calib, "random", 0), options=options,
                       device="cpu", quiet=True)
    weight = model.model.decoder.layers[0].fc1.weight
    assert weight.dtype == torch.float16 and record["measured_sparsity"] == pytest.approx(0.5)
    assert (weight.reshape(-1, 4) == 0).sum(dim=1).eq(2).all()
    result = api.evaluate(model, tokenizer, "perplexity", {"dataset": "embedded", "seqlen": 32, "max_windows": 4,
                                                            "quiet": True})
    assert math.isfinite(result.metrics["ppl_embedded"])


def test_set_overrides_a_suite_key_and_the_suite_is_validated_whole():
    suite = load_suite("paper-opt", ["calibration.nsamples=8", "run.device=cpu", "run.dtype=float32",
                                     "evaluators.perplexity.options.max_windows=2",
                                     "methods.sds-wanda.options.iterations=20", 'sparsities=["2:4"]'])
    assert (suite.calibration.nsamples, suite.run.device, suite.run.dtype) == (8, "cpu", "float32")
    assert suite.evaluators[0].options == {"dataset": "wikitext2", "seqlen": 2048, "max_windows": 2}
    methods = {m.name: m for m in suite.methods}
    assert methods["sds-wanda"].options == {"iterations": 20} and methods["sds-wanda"].pruner == "sds-wanda"
    assert methods["wanda"].options == {} and suite.sparsities == ("2:4",)
    assert load_suite("paper-opt").calibration.nsamples == 128


def test_with_override_leaves_its_input_alone():
    raw = {"methods": ["wanda"], "calibration": {"nsamples": 128}}
    assert with_override(raw, "methods.wanda.options.x=1") == {"methods": [{"name": "wanda", "options": {"x": 1}}],
                                                                "calibration": {"nsamples": 128}}
    assert raw == {"methods": ["wanda"], "calibration": {"nsamples": 128}}


@pytest.mark.parametrize(("setting", "message"), [
    ("calibration.nsampels=8", "[calibration] has no key 'nsampels'"),
    ("calibration.nsamples=0", "[calibration] nsamples must be >= 1"),
    ("calibration.nsamples=many", "[calibration] nsamples must be a int; got 'many'"),
    ("run.dtype=float64", "[run] dtype 'float64' is not supported"),
    ("evaluators.perplexity.options.max_windows=0", "max_windows"),
    ("methods.sds-wanda.options.iterationz=5", "no option 'iterationz'"),
    ("methods.nope.options.x=1", "no entry named 'nope' in methods"),
    ("bogus=1", "unknown key 'bogus'"),
    ("name.part=1", "name is a str, not a table"),
    ("calibration.nsamples", "use KEY=VALUE"),
])
def test_a_bad_set_is_one_line_and_exit_2(setting, message, capsys):
    assert main(["run", "paper-opt", "--dry-run", "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_rehearsal_builds_the_published_opt_125m_architecture():
    """12 blocks of width 768, ffn 3072, 50272 tokens, tied head: the 125,239,296 parameters the hub model has."""
    with torch.device("meta"):
        model = OPTForCausalLM(OPTConfig(**rehearse.OPT_125M))
    assert sum(p.numel() for p in model.parameters()) == 125_239_296
