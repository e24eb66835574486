"""The dataset loaders on local files in the hub's formats, against the reference code's joining and sampling
(tests/transcriptions.py): a C4 shard, WikiText-2 rows, the PTB text file, and the SDS_BENCH_DATA_* variables."""

import gzip
import json
import pydoc_data.topics

import datasets
import pytest

from sds_bench import data
from sds_bench.errors import UserError

from . import transcriptions

TOPICS = list(pydoc_data.topics.topics.values())


def c4_shard(path, docs: list[str]):
    """A C4 shard as the hub stores it: gzip'd JSON lines with text, timestamp and url."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{i}"}) + "\n")
    return path


def test_c4_calibration_from_a_local_shard_samples_as_the_reference(tmp_path, tokenizer):
    """Short documents are redrawn, a window of a long one is cut: the same windows as Wanda's get_c4, same seed."""
    docs = [text if i % 3 else text[:40] for i, text in enumerate(TOPICS[:30])]  # every third too short
    shard = c4_shard(tmp_path / "c4-train.00000-of-01024.json.gz", docs)
    for seed in (0, 7):
        ours = data.calibration(str(shard), tokenizer, nsamples=6, seqlen=48, seed=seed)
        train = datasets.load_dataset("json", data_files=str(shard), split="train")
        theirs = transcriptions.get_c4_train(train, tokenizer, nsamples=6, seed=seed, seqlen=48)
        assert ours.tokens.equal(theirs) and ours.tokens.shape == (6, 48) and ours.source == str(shard)
    assert not data.calibration(str(shard), tokenizer, 6, 48, 0).tokens.equal(
        data.calibration(str(shard), tokenizer, 6, 48, 1).tokens)


def test_c4_perplexity_text_from_the_validation_shard_joins_as_the_reference(tmp_path, tokenizer, monkeypatch):
    """SparseGPT's C4 evaluation: the first 1100 documents joined by spaces, cut to 256 windows."""
    shard = c4_shard(tmp_path / "c4-validation.00000-of-00008.json.gz", TOPICS[:20])
    monkeypatch.setenv("SDS_BENCH_DATA_C4", str(shard))
    ids, _ = data.eval_tokens("c4", tokenizer, seqlen=8)
    assert ids.equal(tokenizer(" ".join(TOPICS[:20]), return_tensors="pt").input_ids[:, : 256 * 8])


def test_wikitext2_rows_from_the_environment_join_as_the_reference(tmp_path, tokenizer, monkeypatch):
    """A JSON list of the hub's `text` rows (empty rows included): "\\n\\n".join, as SparseGPT and Wanda do."""
    rows = ["", " = Robert Boulter = \n", "", " Robert Boulter is an English actor . \n", " He had a role . \n"]
    (tmp_path / "test_hf_rows.json").write_text(json.dumps(rows))
    monkeypatch.setenv("SDS_BENCH_DATA_WIKITEXT2", str(tmp_path / "test_hf_rows.json"))
    ids, info = data.eval_tokens("wikitext2", tokenizer, seqlen=8)
    assert ids.equal(tokenizer("\n\n".join(rows), return_tensors="pt").input_ids)
    assert info["source"] == str(tmp_path / "test_hf_rows.json") and info["split"] == "test"


def test_ptb_text_file_joins_its_rows_as_the_reference(tmp_path, tokenizer, monkeypatch):
    """ptb.test.txt, the file the hub's ptb_text_only reads: its rows are the stripped lines, joined by spaces."""
    lines = [" no it was n't black monday \n", " but while the new york stock exchange did n't fall apart \n",
             " some circuit breakers installed after the october N crash failed \n"]
    (tmp_path / "ptb.test.txt").write_text("".join(lines))
    monkeypatch.setenv("SDS_BENCH_DATA_PTB", str(tmp_path / "ptb.test.txt"))
    ids, _ = data.eval_tokens("ptb", tokenizer, seqlen=8)
    assert ids.equal(tokenizer(" ".join(line.strip() for line in lines), return_tensors="pt").input_ids)


def test_ptb_rows_exported_from_the_hub_join_as_the_reference(tmp_path, tokenizer, monkeypatch):
    """JSON Lines as `datasets` exports ptb_text_only (column `sentence`): SparseGPT's " ".join of the rows."""
    rows = ["no it was n't black monday", "but while the new york stock exchange did n't fall apart"]
    (tmp_path / "ptb.test.jsonl").write_text("".join(json.dumps({"sentence": r}) + "\n" for r in rows))
    monkeypatch.setenv("SDS_BENCH_DATA_PTB", str(tmp_path / "ptb.test.jsonl"))
    ids, _ = data.eval_tokens("ptb", tokenizer, seqlen=8)
    assert ids.equal(tokenizer(" ".join(rows), return_tensors="pt").input_ids)


def test_c4_calibration_stops_where_the_reference_would_redraw_forever(tmp_path, tokenizer):
    """The reference redraws a document until one is longer than seqlen; with none long enough it never ends."""
    shard = c4_shard(tmp_path / "c4-train.json.gz", ["short one", "short two", TOPICS[0][:30]])
    with pytest.raises(UserError, match="no calibration document has more than seqlen = 48 tokens"):
        data.calibration(str(shard), tokenizer, nsamples=2, seqlen=48, seed=0)


def test_text_calibration_samples_windows_as_the_reference(tmp_path, tokenizer):
    """A text file as calibration: SparseGPT's WikiText-2/PTB windows of the whole token stream, same seed."""
    (tmp_path / "train.txt").write_text(" ".join(TOPICS[:5]))
    ours = data.calibration(str(tmp_path / "train.txt"), tokenizer, nsamples=5, seqlen=32, seed=3)
    stream = tokenizer(" ".join(TOPICS[:5]), return_tensors="pt").input_ids
    assert ours.tokens.equal(transcriptions.sample_windows(stream, nsamples=5, seed=3, seqlen=32))


def test_an_explicit_data_file_wins_over_the_environment(tmp_path, tokenizer, monkeypatch):
    (tmp_path / "a.txt").write_text("alpha beta gamma delta " * 8)
    (tmp_path / "b.txt").write_text("one two three four " * 8)
    monkeypatch.setenv("SDS_BENCH_DATA_FILE", str(tmp_path / "a.txt"))
    ids, info = data.eval_tokens("file", tokenizer, seqlen=8, data_file=str(tmp_path / "b.txt"))
    assert ids.equal(tokenizer((tmp_path / "b.txt").read_text(), return_tensors="pt").input_ids)
    assert data.eval_tokens("file", tokenizer, seqlen=8)[0].equal(
        tokenizer((tmp_path / "a.txt").read_text(), return_tensors="pt").input_ids)
