"""Parity with the official locuslab/wanda and IST-DASLab/sparsegpt outputs in ../shared/fixtures/reference-pruning.

Magnitude and Wanda must match bit for bit; SparseGPT with identical masks and 1e-5 on the surviving weights
(the fixture README: the unmodified reference itself moves by ~1.1e-6 on CPUs without AVX-512, and with the thread count).
A second check beside tests/test_parity.py (which runs in every clone); every test here skips without ../shared.
"""

import pytest
import torch
from safetensors.torch import load_file

import sds_bench

CASES = [(m, p) for m in ("magnitude", "wanda", "sparsegpt") for p in ("unstructured50", "2of4", "4of8")]
SPEC = {"unstructured50": "0.5", "2of4": "2:4", "4of8": "4:8"}


@pytest.mark.slow
@pytest.mark.parametrize("method, pattern", CASES)
def test_matches_reference_implementation(fixture_dir, method, pattern):
    torch.set_num_threads(2)
    model, _ = sds_bench.load_model(str(fixture_dir / "dense"), attn_implementation="eager")
    sds_bench.prune(model, None, method, SPEC[pattern], str(fixture_dir / "calib_tokens.pt"), quiet=True)
    reference = load_file(fixture_dir / f"{method}-{pattern}.safetensors")
    ours = model.state_dict()
    assert reference.keys() <= ours.keys() and len(reference) == 12
    for key, ref in reference.items():
        assert torch.equal(ours[key] == 0, ref == 0), f"{key}: masks differ"
        if method == "sparsegpt":
            torch.testing.assert_close(ours[key], ref, rtol=0, atol=1e-5, msg=key)
        else:
            assert torch.equal(ours[key], ref), key


def test_npy_calibration_equals_pt(fixture_dir):
    a = sds_bench.calibration(str(fixture_dir / "calib_tokens.pt"))
    b = sds_bench.calibration(str(fixture_dir / "calib_tokens.npy"))
    assert torch.equal(a.tokens, b.tokens) and a.sha256 == b.sha256 and a.tokens.shape == (128, 128)
