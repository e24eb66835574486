"""The embedded default: small language models trained by the suite on its own corpus, shipped inside the package.

`embedded:opt-tiny` (and `embedded:llama-tiny`) load like any model and the dataset `embedded` like any dataset, on
any machine, offline; `sds-bench embedded build` reproduces the shipped files (see `build.py`, configs in `configs.py`, corpus in `corpus.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sds_bench.embedded.configs import ARCHITECTURES, CONTEXT, config_factory
from sds_bench.embedded.corpus import corpus_sha256, corpus_text
from sds_bench.errors import UserError

ASSETS = Path(__file__).parent / "assets"

__all__ = ["ARCHITECTURES", "ASSETS", "CONTEXT", "config_factory", "build_info", "corpus_sha256", "corpus_text", "model_dir"]


def model_dir(name: str) -> Path:
    """The directory of a shipped embedded model (weights, tokenizer, build_info.json)."""
    config_factory(name)
    path = ASSETS / name
    if not (path / "config.json").is_file():
        raise UserError(f"embedded model {name!r} is not built in {path}; run `sds-bench embedded build --name {name}`")
    return path


def build_info(name: str) -> dict[str, Any]:
    """How a shipped model was built: the corpus sha256 it was trained on, its recipe, the perplexities it reached."""
    return json.loads((model_dir(name) / "build_info.json").read_text())
