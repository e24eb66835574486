"""How far our magnitude / Wanda / SparseGPT are from the official code's outputs in ../shared/fixtures/reference-pruning.

Prints, per method and pattern, whether every mask is identical and the largest absolute weight difference over the
decoder Linears (tests/test_reference_fixture.py asserts the same with the fixture README's tolerances). It also runs
the line-by-line transcription of the official code with its sequential loop (tests/transcriptions.py) on this
machine: ours against it tells our code's deviation, it against the files the CPU's.

    python benchmarks/parity_reference.py [--fixture ../shared/fixtures/reference-pruning] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import sds_bench
from sds_bench.sparsity import Sparsity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/transcriptions.py
from tests import transcriptions  # noqa: E402

PATTERNS = {"unstructured50": "0.5", "2of4": "2:4", "4of8": "4:8"}


def dense(fixture: Path):
    return sds_bench.load_model(str(fixture / "dense"), attn_implementation="eager")[0]


def ours(fixture: Path, method: str, spec: str) -> dict[str, torch.Tensor]:
    """The fixture's dense model pruned by our `method` on the fixture's calibration tokens."""
    model = dense(fixture)
    sds_bench.prune(model, None, method, spec, str(fixture / "calib_tokens.pt"), quiet=True)
    return model.state_dict()


def official(fixture: Path, method: str, spec: str) -> dict[str, torch.Tensor]:
    """The same, pruned by the transcription of the official code."""
    model = dense(fixture)
    tokens = torch.load(fixture / "calib_tokens.pt", weights_only=True)
    transcriptions.prune_official(method, model, tokens, Sparsity.parse(spec))
    return model.state_dict()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - ref).abs().max()) for k, ref in b.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/reference-pruning")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'method':10s} {'pattern':15s} {'masks':10s} {'max |ours - files|':>19s} {'ours - transcr.':>16s} "
          f"{'transcr. - files':>17s}")
    for method in ("magnitude", "wanda", "sparsegpt"):
        for name, spec in PATTERNS.items():
            files = load_file(args.fixture / f"{method}-{name}.safetensors")
            mine, theirs = ours(args.fixture, method, spec), official(args.fixture, method, spec)
            same = all(torch.equal(mine[k] == 0, ref == 0) for k, ref in files.items())
            print(f"{method:10s} {name:15s} {'identical' if same else 'DIFFER':10s} {max_diff(mine, files):19.3g} "
                  f"{max_diff(mine, {k: theirs[k] for k in files}):16.3g} {max_diff(theirs, files):17.3g}")


if __name__ == "__main__":
    main()
