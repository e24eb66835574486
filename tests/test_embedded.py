"""The embedded default: corpus splits, the shipped model and tokenizer, the build, and their use through the suite."""

import json
import platform
import re

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from sds_bench import api, calibration, embedded, load_model
from sds_bench.cli import main
from sds_bench.embedded import build, corpus
from sds_bench.errors import UserError

SHIPPED = [name for name in embedded.ARCHITECTURES if (embedded.ASSETS / name / "config.json").is_file()]


@pytest.fixture(scope="module")
def opt_tiny():
    return load_model("embedded:opt-tiny")


@pytest.fixture(scope="module")
def test_ids(opt_tiny):
    return build.token_stream(opt_tiny[1], embedded.corpus_text("test"))


@pytest.fixture(scope="module")
def train_ids(opt_tiny):
    return build.token_stream(opt_tiny[1], embedded.corpus_text("train"))


def test_opt_tiny_is_shipped():
    assert "opt-tiny" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_load_and_are_small(name):
    path = embedded.model_dir(name)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    info = embedded.build_info(name)
    assert model.config.model_type == info["architecture"]
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == info["vocab_size"]
    assert next(model.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    assert model.config.max_position_embeddings == info["eval_seqlen"] == embedded.CONTEXT
    assert sum(f.stat().st_size for f in path.iterdir()) < 10e6
    assert all(m.in_features % 8 == 0 for m in model.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_was_built_from_this_corpus(name):
    """The corpus this interpreter parses from its standard library is the one build_info says the model was trained
    and measured on: same sha256, characters per split, and test tokens under the shipped tokenizer."""
    info = embedded.build_info(name)
    if platform.python_version() != info["environment"]["python"]:
        pytest.skip(f"built on Python {info['environment']['python']}, whose standard library the corpus is parsed from")
    assert embedded.corpus_sha256() == info["corpus_sha256"]
    assert {split: len(embedded.corpus_text(split)) for split in corpus.SPLITS} == info["corpus_chars"]
    tokenizer = AutoTokenizer.from_pretrained(embedded.model_dir(name))
    assert len(build.token_stream(tokenizer, embedded.corpus_text("test"))) == info["corpus_tokens"]["test"]


def test_unknown_embedded_model_lists_known_names():
    with pytest.raises(UserError, match="opt-tiny"):
        embedded.model_dir("gpt-5")
    with pytest.raises(UserError, match="unknown embedded model"):
        load_model("embedded:nope")


def test_corpus_splits_are_disjoint_by_document():
    texts = {split: embedded.corpus_text(split) for split in corpus.SPLITS}
    for topic in corpus.pydoc_topics():
        home = corpus.split_of(topic)
        assert [split for split, text in texts.items() if topic in text] == [home]
    assert len(texts["train"]) > 10 * len(texts["test"]) > 0
    with pytest.raises(UserError, match="unknown split"):
        embedded.corpus_text("dev")


def test_split_of_is_a_pure_function_of_the_text():
    docs = [f"document {i}" for i in range(300)]
    first = [corpus.split_of(d) for d in docs]
    assert first == [corpus.split_of(d) for d in docs]
    assert set(first) == set(corpus.SPLITS) and first.count("train") > 200


@pytest.mark.slow
def test_corpus_is_deterministic_and_its_cache_faithful(tmp_path, monkeypatch):
    """A fresh parse of the standard library reproduces the cached splits exactly, and the cache file is written."""
    cached = {split: embedded.corpus_text(split) for split in corpus.SPLITS}
    assert corpus.build_splits() == cached
    monkeypatch.setenv("SDS_BENCH_CACHE", str(tmp_path))
    corpus.corpus_splits.cache_clear()
    try:
        assert corpus.corpus_splits() == cached
        assert json.loads(corpus.cache_path().read_text()) == cached
    finally:
        corpus.corpus_splits.cache_clear()


def test_corpus_sha256_identifies_the_text(monkeypatch):
    """One more character, or one character moved across a split boundary, gives another sha256."""
    sha = embedded.corpus_sha256()
    assert re.fullmatch(r"[0-9a-f]{64}", sha)
    splits = corpus.corpus_splits()
    for changed in ({**splits, "test": splits["test"] + "."},
                    {**splits, "validation": splits["validation"] + splits["test"][:1], "test": splits["test"][1:]}):
        monkeypatch.setattr(corpus, "corpus_splits", lambda changed=changed: changed)
        assert corpus.corpus_sha256.__wrapped__() != sha


def test_splits_hold_enough_tokens(opt_tiny, test_ids):
    _, tokenizer = opt_tiny
    assert len(test_ids) // 128 >= 40
    assert len(build.token_stream(tokenizer, embedded.corpus_text("validation"))) // 128 >= 40


def test_dense_perplexity_far_below_unigram(opt_tiny, train_ids, test_ids):
    model, tokenizer = opt_tiny
    assert len(train_ids) > 128 * embedded.CONTEXT
    dense = build.model_perplexity(model, test_ids, embedded.CONTEXT)
    unigram = build.unigram_perplexity(train_ids, test_ids, len(tokenizer), embedded.CONTEXT)
    assert dense < unigram / 5
    assert dense == pytest.approx(embedded.build_info("opt-tiny")["ppl"]["test"], rel=0.05)


def test_embedded_model_and_dataset_work_through_the_suite(opt_tiny):
    model, tokenizer = opt_tiny
    calib = calibration("embedded", tokenizer, nsamples=4, seqlen=64, seed=0)
    assert calib.tokens.shape == (4, 64) and calib.tokens.max() < len(tokenizer)
    result = api.evaluate(model, tokenizer, "perplexity", {"dataset": "embedded", "max_windows": 4, "quiet": True})
    assert result.protocol["windows"] == 4 and result.protocol["seqlen"] == embedded.CONTEXT
    assert 1 < result.metrics["ppl_embedded"] < 1000


def test_magnitude_2_4_through_the_suite():
    model, tokenizer = load_model("embedded:opt-tiny")
    record = api.prune(model, tokenizer, "magnitude", "2:4", quiet=True)
    assert record["measured_sparsity"] == pytest.approx(0.5)


def test_training_lowers_the_loss():
    tokenizer = AutoTokenizer.from_pretrained(embedded.model_dir("opt-tiny"))
    ids = build.token_stream(tokenizer, embedded.corpus_text("validation"))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(embedded.ARCHITECTURES["opt-tiny"](len(tokenizer)))
    recipe = build.Recipe(steps=10, batch_size=2, seqlen=64, lr=1e-2, warmup=2)
    losses = build.train_language_model(model, ids, recipe, quiet=True)
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < losses[0] - 0.5
    assert not model.training


def test_trained_tokenizer_round_trips(tmp_path):
    tokenizer = build.train_tokenizer(embedded.corpus_text("validation"), vocab_size=512)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "def f(x):\n    return x ** 2  # é"
    assert len(loaded) == 512 and loaded.decode(loaded(text).input_ids) == text
    assert loaded.convert_tokens_to_ids(list(build.SPECIAL_TOKENS)) == [0, 1, 2, 3]
    assert loaded("a b").input_ids == tokenizer("a b").input_ids


@pytest.mark.slow
@pytest.mark.parametrize("name", list(embedded.ARCHITECTURES))
def test_build_writes_a_loadable_model(name, tmp_path):
    info = build.build(name, tmp_path, build.Recipe(steps=3, batch_size=2, seqlen=64, warmup=1), quiet=True)
    assert info["corpus_sha256"] == embedded.corpus_sha256() and info["recipe"]["steps"] == 3
    assert json.loads((tmp_path / "build_info.json").read_text())["name"] == name
    model, tokenizer = load_model(str(tmp_path))
    assert model.config.max_position_embeddings == embedded.CONTEXT and len(tokenizer) == build.VOCAB_SIZE


@pytest.mark.slow
def test_build_is_reproducible(tmp_path):
    """Same recipe and seed, same weights: what lets `sds-bench embedded build` reproduce the shipped files."""
    recipe = build.Recipe(steps=2, batch_size=2, seqlen=32, warmup=1)
    for run in ("a", "b"):
        build.build("opt-tiny", tmp_path / run, recipe, quiet=True)
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


@pytest.mark.slow
def test_calibrated_pruning_beats_magnitude_at_2_4(test_ids):
    """The pruning comparison the embedded model exists for: SparseGPT 2:4 is clearly better than magnitude 2:4."""
    ppl = {}
    for method in ("magnitude", "sparsegpt"):
        model, tokenizer = load_model("embedded:opt-tiny")
        api.prune(model, tokenizer, method, "2:4", "embedded", nsamples=32, quiet=True)
        ppl[method] = build.model_perplexity(model, test_ids, embedded.CONTEXT)
    assert ppl["sparsegpt"] < 0.9 * ppl["magnitude"]


def test_cli_build_rejects_an_unknown_name(capsys):
    assert main(["embedded", "build", "--name", "gpt-9", "--output", "unused"]) == 2
    assert "known: opt-tiny" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_build_writes_the_model(tmp_path, capsys):
    assert main(["embedded", "build", "--steps", "2", "--output", str(tmp_path), "--quiet"]) == 0
    assert re.match(r"opt-tiny: [\d,]+ parameters, test perplexity", capsys.readouterr().out)
    assert json.loads((tmp_path / "build_info.json").read_text())["recipe"]["steps"] == 2
