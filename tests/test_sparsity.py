import pytest
import torch

from sds_bench.sparsity import Sparsity, SparsityError, count_mask, nm_mask, satisfies, threshold_mask


@pytest.mark.parametrize("spec, ratio, n, m", [
    ("0.5", 0.5, 0, 0), ("50%", 0.5, 0, 0), ("unstructured:0.5", 0.5, 0, 0), (0.7, 0.7, 0, 0),
    ("2:4", 0.5, 2, 4), ("4:8", 0.5, 4, 8), ("1:4", 0.25, 1, 4), (" 3:16 ", 3 / 16, 3, 16), ("0", 0.0, 0, 0),
])
def test_parse_accepts(spec, ratio, n, m):
    s = Sparsity.parse(spec)
    assert (s.ratio, s.n, s.m) == (pytest.approx(ratio), n, m)


@pytest.mark.parametrize("spec", ["3:2", "0:4", "4:4", "1.5", "-0.1", "abc", "", "100%", "2:", "1:2:3"])
def test_parse_rejects_with_accepted_forms(spec):
    with pytest.raises(SparsityError, match="accepted"):
        Sparsity.parse(spec)


def test_str_roundtrip_and_slug():
    assert str(Sparsity.parse("2:4")) == "2:4" and Sparsity.parse("2:4").slug == "2of4"
    assert Sparsity.parse(str(Sparsity.parse("50%"))) == Sparsity.parse("0.5")
    assert Sparsity.parse("0.5").slug == "unstructured50"
    assert (Sparsity.parse("50%").kind, Sparsity.parse("2:4").kind) == ("unstructured", "nm")


def test_nm_mask_prunes_n_lowest_per_group():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 7.0]])
    assert nm_mask(score, 2, 4).tolist() == [[False, True, False, True, True, False, False, True]]


def test_threshold_mask_is_reference_quirk_and_count_mask_exact():
    score = torch.arange(10.0).reshape(2, 5)
    assert int(threshold_mask(score, 0.5).sum()) == 6  # int(10*0.5)+1: `<=` the element at index 5
    assert int(count_mask(score, 0.5).sum()) == 5
    assert count_mask(score, 0.4, dim=-1).sum(-1).tolist() == [2, 2]


def test_count_mask_is_stable_on_ties():
    assert count_mask(torch.ones(1, 4), 0.5, dim=-1).tolist() == [[True, True, False, False]]


def test_satisfies_and_check():
    w = torch.tensor([[0.0, 1.0, 0.0, 2.0], [1.0, 1.0, 0.0, 0.0]])
    assert satisfies(w, Sparsity.parse("2:4")) and not satisfies(w, Sparsity.parse("3:4"))
    with pytest.raises(SparsityError, match="multiple of 8"):
        Sparsity.parse("4:8").check(torch.zeros(2, 12))
