"""Parity with the official code in every clone: our engine and pruners against the line-by-line transcriptions of
SparseGPT, Wanda and magnitude (tests/transcriptions.py) run with the official sequential loop, on tiny OPT and
Llama models built here. tests/test_reference_fixture.py checks the same against the official outputs themselves,
where ../shared is present.
"""

import pytest
import torch

import sds_bench
from sds_bench.sparsity import Sparsity
from sds_bench.testing import VOCAB, decoder_weights

from . import transcriptions

PATTERNS = ["0.5", "2:4", "4:8"]


def tokens(nsamples: int = 8, seqlen: int = 32) -> torch.Tensor:
    return torch.randint(0, VOCAB, (nsamples, seqlen), generator=torch.Generator().manual_seed(1))


def official(method: str, model, calib: torch.Tensor, spec: str) -> None:
    """Prune `model` in place with the transcription of the official code for `method`."""
    transcriptions.prune_official(method, model, calib, Sparsity.parse(spec))


def pruned_both_ways(build, method: str, spec: str, dtype: torch.dtype = torch.float32, **prune_kwargs):
    """Decoder weights pruned by us (engine + pruner) and by the transcription, from the same dense model."""
    torch.set_num_threads(2)
    calib = tokens()
    ours, theirs = build(dtype), build(dtype)
    sds_bench.prune(ours, None, method, spec, sds_bench.Calibration(calib, "test", 0), quiet=True, **prune_kwargs)
    official(method, theirs, calib, spec)
    return decoder_weights(ours), decoder_weights(theirs)


@pytest.mark.parametrize("spec", PATTERNS)
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_equals_the_official_code_bit_for_bit(build_wide, method, spec):
    """Bit for bit for all three: on one machine, with the same thread count, the official operations in the
    official order give the same floats (SparseGPT's 1e-6 against the shared fixture files is the other CPU's)."""
    ours, theirs = pruned_both_ways(build_wide, method, spec)
    assert ours.keys() == theirs.keys() and len(ours) >= 12
    for key, ref in theirs.items():
        assert (ref == 0).any(), f"{key}: the transcription pruned nothing"
        assert torch.equal(ours[key], ref), f"{method} {spec} {key}: max |diff| {(ours[key] - ref).abs().max():.3g}"


def test_transcription_detects_a_wrong_pruner(build_wide):
    """The comparison can fail: SparseGPT with 2% damping instead of the official 1% is not the official result."""
    ours, theirs = pruned_both_ways(build_wide, "sparsegpt", "2:4", options={"percdamp": "0.02"})
    assert any(not torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("spec", ["0.5", "2:4"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_half_precision_equals_the_official_mixed_precision_recipe(build_wide, method, spec, dtype):
    """A model held in float16 / bfloat16, statistics and the SparseGPT solve in float32, the result cast back: the
    official recipe (its `inps` in the model's dtype, `H` and `scaler_row` in float32, `W.float()`), bit for bit."""
    ours, theirs = pruned_both_ways(build_wide, method, spec, dtype)
    for key, ref in theirs.items():
        assert ours[key].dtype == ref.dtype == dtype, key
        assert torch.equal(ours[key], ref), f"{method} {spec} {dtype} {key}"
