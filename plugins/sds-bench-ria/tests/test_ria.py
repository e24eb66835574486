"""RIA's own tests, run by its author: the paper's score, and the sds-bench contract kit."""

import pytest
import torch
from sds_bench_ria import RIAOptions, ria

from sds_bench import LayerStats, Sparsity
from sds_bench.testing import check_pruner


def test_score_is_relative_importance_times_activation():
    w = torch.tensor([[1.0, -2.0, 3.0, 4.0], [4.0, 3.0, -2.0, 1.0]])
    col_sq = torch.tensor([256.0, 1.0, 1.0, 1.0])
    # RI = |w|/colsum + |w|/rowsum: row 0 [.3 .6 .9 1.2], row 1 [1.2 .9 .6 .3]; column 0's activation norm 16
    # scales it x4 with a = 0.5, so row 0 keeps column 0 (score 1.2) and loses its two lowest, columns 1 and 2
    out = ria(w, LayerStats("l", col_sq=col_sq), Sparsity.parse("0.5"), RIAOptions(a=0.5))
    assert (out == 0).tolist() == [[False, True, True, False], [False, False, True, True]]


def test_a_zero_ignores_activations():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = ria(w, LayerStats("l", col_sq=torch.tensor([1e6, 1.0, 1.0, 1.0])), Sparsity.parse("2:4"), RIAOptions(a=0.0))
    assert (out == 0).tolist() == [[True, True, False, False]]


@pytest.mark.slow
def test_contract():
    check_pruner("ria")
