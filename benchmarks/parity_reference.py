"""How far our magnitude / Wanda / SparseGPT are from the official code's outputs in ../shared/fixtures/reference-pruning.

Prints, per method and pattern, whether every mask is identical and the largest absolute weight difference over the
decoder Linears (tests/test_reference_fixture.py asserts the same with the fixture README's tolerances).

    python benchmarks/parity_reference.py [--fixture ../shared/fixtures/reference-pruning] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

import sds_bench

PATTERNS = {"unstructured50": "0.5", "2of4": "2:4", "4of8": "4:8"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/reference-pruning")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'method':10s} {'pattern':15s} {'masks':10s} max |ours - reference|")
    for method in ("magnitude", "wanda", "sparsegpt"):
        for name, spec in PATTERNS.items():
            model, _ = sds_bench.load_model(str(args.fixture / "dense"), attn_implementation="eager")
            sds_bench.prune(model, None, method, spec, str(args.fixture / "calib_tokens.pt"), quiet=True)
            ours, reference = model.state_dict(), load_file(args.fixture / f"{method}-{name}.safetensors")
            same = all(torch.equal(ours[k] == 0, ref == 0) for k, ref in reference.items())
            diff = max(float((ours[k] - ref).abs().max()) for k, ref in reference.items())
            print(f"{method:10s} {name:15s} {'identical' if same else 'DIFFER':10s} {diff:.3g}")


if __name__ == "__main__":
    main()
