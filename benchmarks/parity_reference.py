"""How far our magnitude / Wanda / SparseGPT are from the official code's outputs in ../shared/fixtures/reference-pruning.

Prints, per method and pattern, whether every mask is identical and the largest absolute weight difference over the
decoder Linears (tests/test_reference_fixture.py asserts the same with the fixture README's tolerances). For
SparseGPT it also runs bench_pruners.transcription, the official algorithm written out line for line, through the
same engine on this machine: ours against it tells our code's deviation, it against the files the CPU's.

    python benchmarks/parity_reference.py [--fixture ../shared/fixtures/reference-pruning] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from bench_pruners import transcription
from safetensors.torch import load_file

import sds_bench
from sds_bench.registry import registry

PATTERNS = {"unstructured50": "0.5", "2of4": "2:4", "4of8": "4:8"}


def pruned(fixture: Path, method: str, spec: str) -> dict[str, torch.Tensor]:
    """The fixture's dense model pruned by `method` on the fixture's calibration tokens."""
    model, _ = sds_bench.load_model(str(fixture / "dense"), attn_implementation="eager")
    sds_bench.prune(model, None, method, spec, str(fixture / "calib_tokens.pt"), quiet=True)
    return model.state_dict()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - ref).abs().max()) for k, ref in b.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/reference-pruning")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reg = registry()
    print(f"{'method':10s} {'pattern':15s} {'masks':10s} {'max |ours - files|':>19s} {'ours - transcr.':>16s} "
          f"{'transcr. - files':>17s}")
    for method in ("magnitude", "wanda", "sparsegpt"):
        for name, spec in PATTERNS.items():
            ours, files = pruned(args.fixture, method, spec), load_file(args.fixture / f"{method}-{name}.safetensors")
            same = all(torch.equal(ours[k] == 0, ref == 0) for k, ref in files.items())
            line = f"{method:10s} {name:15s} {'identical' if same else 'DIFFER':10s} {max_diff(ours, files):19.3g}"
            if method == "sparsegpt":
                reg.pruners["transcription"] = dataclasses.replace(
                    reg.pruners["sparsegpt"], name="transcription",
                    prune=lambda w, stats, sp, o: transcription(w, stats.gram, sp.ratio, sp.n, sp.m))
                reg.origins["Pruner:transcription"] = "benchmarks/bench_pruners.py"
                theirs = pruned(args.fixture, "transcription", spec)
                line += f" {max_diff(ours, theirs):16.3g} {max_diff(theirs, files):17.3g}"
            print(line)


if __name__ == "__main__":
    main()
