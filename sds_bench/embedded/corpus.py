"""The embedded corpus: the running Python's own documentation, present on every machine that can run the suite.

Documents are the pydoc topics (``pydoc_data.topics``, the language reference as ``help()`` shows it) and the
docstrings of the standard library's source (read with ``ast``, nothing imported). Each distinct document goes to
train / validation / test by a hash of its text, so the splits are deterministic and disjoint, and a document
keeps its split when other documents change between Python versions. The text can still differ between Python
versions: every result records ``corpus_sha256()``. Parsing the standard library takes seconds, so the splits are
cached per Python installation under ``$SDS_BENCH_CACHE`` (default ``~/.cache/sds-bench``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path

from sds_bench.errors import UserError
from sds_bench.record import write_json_atomic

RECIPE = 1
"""Version of the recipe below: part of the cache key, bumped whenever the documents or splits change."""
SPLITS = {"train": range(0, 90), "validation": range(90, 95), "test": range(95, 100)}
"""Split of a document by sha256(text) mod 100: 90 % / 5 % / 5 %."""
SKIPPED_PACKAGES = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "idlelib", "lib2to3",
                              "turtledemo"})
"""Third-party code and the standard library's own test suites (deliberately odd text) are not documentation."""


def pydoc_topics() -> list[str]:
    """The language reference topics of ``help()``, in sorted topic order."""
    try:
        import pydoc_data.topics
    except ImportError:  # some distributions package the topics separately
        return []
    return [text.strip() for _, text in sorted(pydoc_data.topics.topics.items())]


def stdlib_sources(root: Path) -> list[Path]:
    """The standard library's .py files outside SKIPPED_PACKAGES, in sorted path order."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in SKIPPED_PACKAGES and d != "__pycache__"]
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return sorted(files)


def stdlib_docstrings(root: Path | None = None) -> list[str]:
    """Module, class and function docstrings of the standard library's .py files, by path then source order."""
    docs = []
    for path in stdlib_sources(root or Path(sysconfig.get_paths()["stdlib"])):
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in [tree, *sorted(nodes, key=lambda n: (n.lineno, n.col_offset))]:
            text = ast.get_docstring(node)
            if text and text.strip():
                docs.append(text.strip())
    return docs


def split_of(document: str) -> str:
    """The split a document belongs to, from the hash of its text."""
    bucket = int(hashlib.sha256(document.encode()).hexdigest(), 16) % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


def build_splits() -> dict[str, str]:
    """The three splits' texts: distinct documents in first-seen order, joined by blank lines."""
    documents = dict.fromkeys(pydoc_topics() + stdlib_docstrings())
    texts = {name: [] for name in SPLITS}
    for doc in documents:
        texts[split_of(doc)].append(doc)
    if not texts["test"]:
        raise UserError("the embedded corpus is empty: this Python has neither pydoc_data nor standard-library sources")
    return {name: "\n\n".join(docs) for name, docs in texts.items()}


def cache_path() -> Path:
    """Where this Python installation's splits are cached: one file per interpreter, stdlib location and recipe."""
    key = hashlib.sha256(f"{RECIPE}|{sys.version}|{sysconfig.get_paths()['stdlib']}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("SDS_BENCH_CACHE") or Path.home() / ".cache" / "sds-bench")
    return root / f"embedded-corpus-{key}.json"


@functools.cache
def corpus_splits() -> dict[str, str]:
    """build_splits(), read from the cache when this installation has built it before."""
    path = cache_path()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    splits = build_splits()
    try:
        write_json_atomic(path, splits)
    except OSError:
        pass
    return splits


def corpus_text(split: str) -> str:
    """Text of one split of the embedded corpus: train, validation or test."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} of the embedded corpus; use {', '.join(SPLITS)}")
    return corpus_splits()[split]


@functools.cache
def corpus_sha256() -> str:
    """sha256 of the whole corpus (the three splits in order): identifies the text every number was measured on."""
    digest = hashlib.sha256()
    for name, text in corpus_splits().items():
        digest.update(f"{name}\0{len(text)}\0".encode())
        digest.update(text.encode())
    return digest.hexdigest()
