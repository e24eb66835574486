"""The zeroshot evaluator: presets, metric choice, the suite's offline next-sentence task, and a real lm-eval run."""

import importlib.metadata
import json
import pydoc_data.topics

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from sds_bench import cli
from sds_bench.errors import UserError
from sds_bench.eval import nextsentence, zeroshot

TOPICS = "\n\n".join(text for _, text in sorted(pydoc_data.topics.topics.items()))
LIMIT = 12


def test_presets_expand_in_order_without_repeats():
    assert zeroshot.task_names("sds-paper") == ["copa", "lambada_openai", "openbookqa", "piqa", "rte",
                                                "storycloze_2016", "winogrande"]
    assert zeroshot.task_names("rte, embedded,wanda")[:3] == ["rte", "sds_nextsentence", "boolq"]
    assert zeroshot.task_names("rte,wanda").count("rte") == 1
    with pytest.raises(UserError, match="no zero-shot tasks"):
        zeroshot.task_names(" , ")


def test_metric_choice_default_table_base_and_overrides():
    base, overrides = zeroshot.metric_plan("default,hellaswag=acc_norm", ["hellaswag", "rte", "lambada_openai"])
    assert (base, overrides) == ("default", {"hellaswag": "acc_norm"})
    assert zeroshot.chosen_metric("hellaswag", ["acc", "acc_norm"], base, overrides) == "acc_norm"
    assert zeroshot.chosen_metric("lambada_openai", ["perplexity", "acc"], base, overrides) == "acc"
    assert zeroshot.chosen_metric("sds_nextsentence", ["acc", "acc_mutual_info"], base, overrides) == "acc_mutual_info"
    # a base choice a task does not report falls back to acc; an explicit override must exist
    assert zeroshot.chosen_metric("rte", ["acc"], "acc_norm", {}) == "acc"
    assert zeroshot.chosen_metric("piqa", ["acc", "acc_norm"], "acc_norm", {}) == "acc_norm"
    with pytest.raises(UserError, match="reports no 'acc_norm'"):
        zeroshot.chosen_metric("rte", ["acc"], "default", {"rte": "acc_norm"})
    with pytest.raises(UserError, match="not evaluated"):
        zeroshot.metric_plan("copa=acc", ["rte"])


def test_next_sentence_items_are_deterministic_and_well_formed():
    items = nextsentence.next_sentence_items(TOPICS, n=50, seed=3)
    assert items == nextsentence.next_sentence_items(TOPICS, n=50, seed=3)
    assert items != nextsentence.next_sentence_items(TOPICS, n=50, seed=4)
    runs = nextsentence.prose_sentences(TOPICS)
    follows = {(" ".join(run[max(0, i - 2): i]), run[i]) for run in runs for i in range(1, len(run))}
    assert len(items) == 50
    for item in items:
        assert len(item["choices"]) == len(set(item["choices"])) == 4
        assert (item["context"], item["choices"][item["label"]]) in follows
        assert not set(item["choices"]) & set(nextsentence.SENTENCE_END.split(item["context"]))
    assert len({item["label"] for item in items}) == 4


def test_task_data_round_trip_and_missing_file(tmp_path):
    path = nextsentence.write_task_data(TOPICS, tmp_path / "ns.json", n=20)
    record = json.loads(path.read_text())
    assert record["items"] == nextsentence.next_sentence_items(TOPICS, n=20)
    assert record["source"] == "argument" and len(record["text_sha256"]) == 64
    test = nextsentence.task_dataset(str(path))["test"]
    assert test.num_rows == 20 and test[0] == record["items"][0]
    shipped = nextsentence.task_dataset()["test"]
    assert shipped.num_rows > 100 and set(shipped.column_names) == {"context", "choices", "label"}
    with pytest.raises(UserError, match="cannot read next-sentence data"):
        nextsentence.task_dataset(str(tmp_path / "missing.json"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    """A tiny OPT with room for whole items (512 positions) and the test tokenizer, saved like a pruned model."""
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                     num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=32))
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def continuation_logprob(model, context: list[int], continuation: list[int]) -> float:
    """Sum of log P(continuation tokens | context and the tokens before them)."""
    whole = context + continuation
    logprobs = model(torch.tensor([whole])).logits[0].log_softmax(-1)
    return sum(logprobs[t - 1, whole[t]].item() for t in range(len(context), len(whole)))


@torch.no_grad()
def reference_scores(model, tokenizer, items) -> dict[str, float]:
    """acc, acc_norm (per character) and acc_mutual_info (minus the log-prob after BOS alone), computed directly."""
    hits = {"acc": 0, "acc_norm": 0, "acc_mutual_info": 0}
    for item in items:
        context = tokenizer.encode(item["context"])
        lls, unconditional = [], []
        for choice in item["choices"]:
            whole = tokenizer.encode(item["context"] + " " + choice)
            assert whole[: len(context)] == context
            lls.append(continuation_logprob(model, context, whole[len(context):]))
            unconditional.append(continuation_logprob(model, [tokenizer.bos_token_id], tokenizer.encode(" " + choice)))
        lls = torch.tensor(lls)
        lengths = torch.tensor([len(c) for c in item["choices"]])
        for metric, scores in (("acc", lls), ("acc_norm", lls / lengths), ("acc_mutual_info", lls - torch.tensor(unconditional))):
            hits[metric] += scores.argmax().item() == item["label"]
    return {metric: n / len(items) for metric, n in hits.items()}


@pytest.mark.slow
def test_cli_runs_lm_eval_on_the_local_task_and_records_the_protocol(model_dir, capsys):
    code = cli.main(["eval", str(model_dir), "--device", "cpu", "--evaluator", "zeroshot", "-o", "tasks=embedded",
                     "-o", f"limit={LIMIT}", "-o", "batch_size=4", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.strip().splitlines()
    assert "zeroshot\tzeroshot:sds_nextsentence:acc_mutual_info\t" in out
    result = json.loads(lines[-1])["zeroshot"]
    metrics, protocol = result["metrics"], result["protocol"]
    task = protocol["tasks"]["sds_nextsentence"]
    assert set(metrics) == {f"zeroshot:sds_nextsentence:{m}" for m in ("acc", "acc_norm", "acc_mutual_info")} | {
        "zeroshot:avg"}
    assert metrics["zeroshot:avg"] == metrics["zeroshot:sds_nextsentence:acc_mutual_info"]
    assert protocol["lm_eval_version"] == importlib.metadata.version("lm_eval")
    assert protocol["average"] == {"over": 1, "metric_per_task": {"sds_nextsentence": "acc_mutual_info"}}
    assert (task["metric"], task["version"], task["n_shot"], task["limit"]) == ("acc_mutual_info", 1.0, 0, LIMIT)
    assert task["samples"]["effective"] == LIMIT
    assert task["dataset"]["dataset_kwargs"] == {"data_file": "sds_nextsentence.json"}
    for m in task["metrics"].values():
        assert m["stderr"] == pytest.approx((m["value"] * (1 - m["value"]) / (LIMIT - 1)) ** 0.5)

    from sds_bench.models import load_model

    model, tokenizer = load_model(str(model_dir))
    items = nextsentence.task_dataset()["test"].to_list()[:LIMIT]
    for metric, value in reference_scores(model, tokenizer, items).items():
        assert metrics[f"zeroshot:sds_nextsentence:{metric}"] == pytest.approx(value), metric


@pytest.mark.slow
def test_task_whose_data_cannot_load_names_the_task(tmp_path, tiny_opt, tokenizer):
    (tmp_path / "broken.yaml").write_text((nextsentence.TASK_DIR / "sds_nextsentence" / "sds_nextsentence.yaml")
                                          .read_text().replace("task: sds_nextsentence", "task: broken_task")
                                          .replace("data_file: sds_nextsentence.json", "data_file: /nonexistent.json"))
    from sds_bench import api

    with pytest.raises(UserError, match="zero-shot task 'broken_task': cannot load its data"):
        api.evaluate(tiny_opt, tokenizer, "zeroshot", {"tasks": "broken_task", "include_path": str(tmp_path)})


@pytest.mark.slow
def test_quiet_run_writes_nothing_to_stderr(model_dir, capfd):
    """lm-eval's progress bars and its subprocesses' messages stay off the terminal under --quiet."""
    code = cli.main(["eval", str(model_dir), "--device", "cpu", "--zeroshot", "embedded", "-o", "limit=4", "--quiet"])
    out, err = capfd.readouterr()
    assert code == 0 and "zeroshot:avg" in out and err == "", err
