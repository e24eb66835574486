"""Zero-shot accuracy through the real, pinned lm-evaluation-harness, run on the in-memory (pruned) model.

Published zero-shot numbers of pruned models disagree mostly through the harness version and through acc vs
acc_norm, so every number is recorded with the metric it is, its stderr, the task version, n-shot, limit and
lm-eval version, and the average states which metric it took from each task.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from typing import Any

from sds_bench.errors import UserError
from sds_bench.eval.nextsentence import TASK as NEXT_SENTENCE
from sds_bench.eval.nextsentence import TASK_DIR
from sds_bench.hookspecs import hookimpl
from sds_bench.models import resolve_device
from sds_bench.plugin import EvalResult, Evaluator, option

PRESETS = {
    "sds-paper": ("copa", "lambada_openai", "openbookqa", "piqa", "rte", "storycloze_2016", "winogrande"),
    "wanda": ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"),
    "embedded": (NEXT_SENTENCE,),
}
"""Task lists by name: the SDS paper's seven (SparseGPT's set), Wanda's seven, and the suite's offline task."""

DEFAULT_METRIC = {
    # SDS / SparseGPT: one accuracy per task; LAMBADA contributes its accuracy, not its perplexity.
    **dict.fromkeys(PRESETS["sds-paper"], "acc"),
    # Wanda reports acc, not acc_norm (locuslab/wanda#31); its LLaMA-7B HellaSwag 56.92 is lm-eval's acc (acc_norm: 76.2).
    **dict.fromkeys(PRESETS["wanda"], "acc"),
    # The suite's task: its distractors are fluent sentences whose own likelihood swamps the raw score, so
    # log P(choice | context) - log P(choice), how much the context supports each choice.
    NEXT_SENTENCE: "acc_mutual_info",
}
"""The metric each task contributes to ``zeroshot:avg`` under ``metrics=default``; other tasks give acc."""

PREFIX = "zeroshot"


@dataclass
class ZeroShotOptions:
    tasks: str = "sds-paper"
    """A preset (sds-paper, wanda, embedded) or comma-separated lm-eval task names and presets."""
    metrics: str = "default"
    """Metric averaged per task: default (DEFAULT_METRIC), acc, acc_norm or any metric name, then TASK=METRIC overrides."""
    num_fewshot: int = option(0, ge=0)
    limit: int | None = option(None, ge=1)
    """Evaluate only the first examples of each task (quick checks; published numbers use all)."""
    batch_size: int = option(1, ge=1)
    device: str | None = None
    """Where lm-eval runs the model; default where it is (it is moved back afterwards)."""
    include_path: str | None = None
    """A directory of further lm-eval task YAMLs (your own local tasks)."""
    quiet: bool = False
    """Only lm-eval's errors are logged."""


def task_names(spec: str) -> list[str]:
    """The tasks of a comma-separated list of presets and lm-eval task names, in order, without repeats."""
    names = [name for item in spec.split(",") if item.strip() for name in PRESETS.get(item.strip(), (item.strip(),))]
    if not names:
        raise UserError(f"no zero-shot tasks in {spec!r}; give a preset ({', '.join(PRESETS)}) or lm-eval task names")
    return list(dict.fromkeys(names))


def metric_plan(spec: str, tasks: list[str]) -> tuple[str, dict[str, str]]:
    """Parse 'BASE[,TASK=METRIC...]' into the base choice and the per-task overrides."""
    base, overrides = "default", {}
    for item in (i.strip() for i in spec.split(",") if i.strip()):
        task, sep, metric = item.partition("=")
        if not sep:
            base = item
        elif task.strip() not in tasks:
            raise UserError(f"metric override {item!r} names a task that is not evaluated; tasks: {', '.join(tasks)}")
        else:
            overrides[task.strip()] = metric.strip()
    return base, overrides


def chosen_metric(task: str, reported: list[str], base: str, overrides: dict[str, str]) -> str:
    """The metric a task contributes to the average: its override, else the base choice, else acc, else its first."""
    if task in overrides:
        if overrides[task] not in reported:
            raise UserError(f"zero-shot task {task!r} reports no {overrides[task]!r}; it reports {', '.join(reported)}")
        return overrides[task]
    wanted = DEFAULT_METRIC.get(task, "acc") if base == "default" else base
    return next((m for m in (wanted, "acc") if m in reported), reported[0])


def task_manager(names: list[str], include_path: str | None):
    """An lm-eval TaskManager that knows the suite's tasks; lm-eval's own index (slow to build) only when needed."""
    from lm_eval.tasks import TaskManager

    paths = [str(TASK_DIR)] + ([include_path] if include_path else [])
    local = TaskManager(include_path=paths, include_defaults=False)
    manager = local if set(names) <= set(local.all_tasks) else TaskManager(include_path=paths)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown lm-eval task(s) {', '.join(map(repr, unknown))}; presets: {', '.join(PRESETS)}; "
                        f"list lm-eval's with `lm-eval ls tasks`")
    return manager


def load_tasks(manager, names: list[str]) -> dict[str, Any]:
    """Build each task (which loads its data), naming the task whose data cannot be loaded."""
    tasks = {}
    for name in names:
        try:
            tasks.update(manager.load([name])["tasks"])
        except Exception as e:  # lm-eval and datasets raise many kinds: offline, gated, missing file, bad YAML
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"zero-shot task {name!r}: cannot load its data: {detail}") from e
    return tasks


@contextmanager
def lm_eval_quiet(quiet: bool):
    """While quiet: only errors from lm-eval's loggers, and nothing on stderr, neither lm-eval's progress bars (most
    cannot be switched off) nor what its subprocesses print (its `git describe` outside a repository)."""
    if not quiet:
        yield
        return
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull, redirect_stderr(devnull):
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        logger.setLevel(level)


def task_record(task: str, out: dict, base: str, overrides: dict[str, str], limit: int | None) -> dict[str, Any]:
    """What one task measured: every metric with its stderr, the metric averaged, version, n-shot, limit, data."""
    row, config = out["results"][task], out["configs"][task]
    values = {}
    for key, value in row.items():
        metric, sep, filt = key.partition(",")
        if sep and not metric.endswith("_stderr"):
            stderr = row.get(f"{metric}_stderr,{filt}")
            values[metric if filt == "none" else key] = {
                "value": value, "stderr": stderr if isinstance(stderr, (int, float)) else None}
    return {"metrics": values, "metric": chosen_metric(task, list(values), base, overrides),
            "version": out["versions"].get(task), "n_shot": out["n-shot"].get(task), "limit": limit,
            "samples": out["n-samples"].get(task),
            "dataset": {k: config[k] for k in ("dataset_path", "dataset_name", "dataset_kwargs") if config.get(k)}}


def zeroshot(model, tokenizer, options: ZeroShotOptions) -> EvalResult:
    """lm-eval's zero-shot tasks on the model as it is in memory: per-task metrics and their average."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise UserError(f"the zeroshot evaluator needs lm-eval: pip install sds-bench[eval] ({e})") from None
    if tokenizer is None:
        raise UserError("the zeroshot evaluator needs the model's tokenizer, and none was loaded")
    names = task_names(options.tasks)
    base, overrides = metric_plan(options.metrics, names)
    manager = task_manager(names, options.include_path)
    home = next(model.parameters()).device
    device = resolve_device(options.device) if options.device else home
    with lm_eval_quiet(options.quiet):
        tasks = load_tasks(manager, names)
        model.to(device)
        try:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=options.batch_size)
            out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks.values()), task_manager=manager,
                                          num_fewshot=options.num_fewshot, limit=options.limit, log_samples=False)
        finally:
            model.to(home)
    records = {task: task_record(task, out, base, overrides, options.limit) for task in sorted(out["results"])}
    metrics = {f"{PREFIX}:{task}:{metric}": m["value"] for task, r in records.items() for metric, m in r["metrics"].items()}
    averaged = {task: r["metric"] for task, r in records.items()}
    metrics[f"{PREFIX}:avg"] = sum(records[t]["metrics"][m]["value"] for t, m in averaged.items()) / len(averaged)
    config = out["config"]
    return EvalResult(metrics, {
        "harness": "lm-eval", "lm_eval_version": lm_eval.__version__,
        "tasks": records, "task_spec": options.tasks, "metric_spec": options.metrics,
        "average": {"over": len(averaged), "metric_per_task": averaged},
        "num_fewshot": options.num_fewshot, "limit": options.limit, "batch_size": options.batch_size,
        "device": str(device), "bootstrap_iters": config.get("bootstrap_iters"),
        "seeds": {k: config.get(k) for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")}})


@hookimpl
def register_evaluators(register):
    register(Evaluator("zeroshot", "Zero-shot accuracy with lm-eval (presets sds-paper, wanda, embedded; metric per task)",
                       evaluate=zeroshot, options=ZeroShotOptions))
