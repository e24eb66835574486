"""The suite's own zero-shot task: pick the sentence that truly follows a context among distractors.

lm-eval's published tasks download their data from the Hugging Face hub; this one is built from local text
(the embedded corpus's test split), so the whole zero-shot path runs offline. Items are consecutive sentences
inside one prose paragraph: the context is up to `context` sentences, the answer the next one, the distractors
sentences drawn from elsewhere in the text. Everything is a function of the text and the seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

from sds_bench import embedded
from sds_bench.errors import UserError
from sds_bench.record import write_json_atomic

TASK = "sds_nextsentence"
TASK_DIR = Path(__file__).parent / "tasks"
"""The include path of the suite's lm-eval tasks (shipped as package data)."""
DATA_FILE = TASK_DIR / TASK / f"{TASK}.json"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def prose_sentences(text: str, min_words: int = 4, max_words: int = 50) -> list[list[str]]:
    """Runs of consecutive well-formed sentences of prose (blank, indented and '>>>' lines end a run)."""
    runs = []
    for block in re.split(r"\n(?:\s*\n|[ \t]+[^\n]*\n|>>>[^\n]*\n)+", text + "\n"):
        run = []
        for sentence in SENTENCE_END.split(" ".join(block.split())):
            if sentence[:1].isupper() and sentence[-1:] in ".!?" and min_words <= len(sentence.split()) <= max_words:
                run.append(sentence)
            else:
                runs.append(run)
                run = []
        runs.append(run)
    return [run for run in runs if run]


def next_sentence_items(text: str, n: int = 500, choices: int = 4, context: int = 2, seed: int = 0) -> list[dict]:
    """Up to n items {context, choices, label}: the true next sentence among choices - 1 distractors."""
    runs = prose_sentences(text)
    pool = sorted({s for run in runs for s in run})
    positions = [(r, i) for r, run in enumerate(runs) for i in range(1, len(run))]
    if len(pool) < choices + context or not positions:
        raise UserError(f"text too short for a next-sentence task: {len(positions)} sentence pairs, {len(pool)} sentences")
    rng = random.Random(seed)
    items = []
    for r, i in sorted(rng.sample(positions, min(n, len(positions)))):
        run = runs[r]
        answer, seen = run[i], set(run[max(0, i - context): i + 1])
        distractors = []
        while len(distractors) < choices - 1:
            candidate = rng.choice(pool)
            if candidate not in seen:
                distractors.append(candidate)
                seen.add(candidate)
        options = [answer, *distractors]
        rng.shuffle(options)
        items.append({"context": " ".join(run[max(0, i - context): i]), "choices": options,
                      "label": options.index(answer)})
    return items


def write_task_data(text: str | None = None, path: str | Path = DATA_FILE, n: int = 500, choices: int = 4,
                    context: int = 2, seed: int = 0) -> Path:
    """Write the task's JSON (items and where they came from); text defaults to the embedded corpus's test split."""
    source = "argument"
    if text is None:
        text, source = embedded.corpus_text("test"), "embedded:test"
    record = {"task": TASK, "source": source, "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
              "max_items": n, "choices": choices, "context": context, "seed": seed,
              "items": next_sentence_items(text, n, choices, context, seed)}
    write_json_atomic(path, record)
    return Path(path)


def task_dataset(data_file: str = DATA_FILE.name, **metadata):
    """The task's test split, for lm-eval's ``custom_dataset`` (which also passes the task's metadata, unused).

    A relative data_file is looked up next to the task's YAML.
    """
    from datasets import Dataset, DatasetDict

    path = Path(data_file) if Path(data_file).is_absolute() else DATA_FILE.parent / data_file
    try:
        items = json.loads(path.read_text())["items"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot read next-sentence data {path}: {e}") from e
    return DatasetDict({"test": Dataset.from_list(items)})
