"""The report's statistics against hand-computed values, and the reproduced-or-not verdict on a synthetic baseline."""

import math

import pandas as pd
import pytest

from sds_bench.report.significance import (
    SEEDS,
    STDERR,
    difference_stderr,
    paired_differences,
    paired_interval,
    reproduced,
    seed_summary,
    spread,
    verdict_line,
)
from sds_bench.report.tables import load_baselines, with_paper
from sds_bench.runner.suite import ToleranceSpec

T_975_2DF = 4.302652729749464  # Student t, 97.5% quantile, 2 degrees of freedom (tables: 4.303)
Z_975 = 1.959963984540054


def test_spread_is_the_sample_standard_deviation():
    mean, std, n = spread([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4) and std == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, over n - 1 = 3
    assert math.isnan(spread([7.0])[1]) and spread([7.0])[0] == 7.0


def test_paired_interval_is_the_student_t_interval_of_the_differences():
    # differences 1, 2, 1: mean 4/3, sd sqrt(1/3), half width t(0.975, 2) * sd / sqrt(3) = t / 3
    wide = paired_interval([10.0, 12.0, 11.0], [9.0, 10.0, 10.0])
    assert (wide.mean, wide.n, wide.basis) == (pytest.approx(4 / 3), 3, SEEDS)
    assert (wide.low, wide.high) == (pytest.approx(4 / 3 - T_975_2DF / 3), pytest.approx(4 / 3 + T_975_2DF / 3))
    assert wide.low < 0 and wide.significant is False
    # differences 1.0, 1.1, 0.9: sd 0.1, half width 0.1 t / sqrt(3) = 0.248 > 0 everywhere: significant
    tight = paired_interval([2.0, 2.1, 1.9], [1.0, 1.0, 1.0])
    assert tight.low == pytest.approx(1 - 0.1 * T_975_2DF / math.sqrt(3)) and tight.significant is True
    negative = paired_interval([1.0, 1.0, 1.0], [2.0, 2.1, 1.9])
    assert negative.high < 0 and negative.significant is True


def test_one_draw_uses_the_evaluators_stderr_or_has_no_interval():
    assert difference_stderr(0.03, 0.04) == pytest.approx(0.05)
    one = paired_interval([0.55], [0.50], stderr=0.05)
    assert one.basis == STDERR and one.low == pytest.approx(0.05 - Z_975 * 0.05) and one.significant is False
    assert paired_interval([0.70], [0.50], stderr=0.05).significant is True  # 0.2 > 1.96 x 0.05
    bare = paired_interval([60.0], [62.0])
    assert bare.basis is None and bare.significant is None and bare.mean == -2.0


def test_reproduced_within_the_tolerance_ends_included():
    assert reproduced(37.85, 36.85, 1.0) is True  # exactly the tolerance, despite float rounding
    assert reproduced(37.86, 36.85, 1.0) is False
    assert reproduced(35.90, 36.85, 1.0) is True
    assert reproduced(36.0, math.nan, 1.0) is None
    assert verdict_line(pd.Series([True, False, None, True]), "±1 perplexity") == (
        "2 of 3 published values reproduced (within ±1 perplexity)")
    assert verdict_line(pd.Series([None, None]), "±1 perplexity") == ""


def test_seed_summary_and_paired_differences_over_the_common_seeds():
    long = pd.DataFrame([{"model": "m", "method": method, "pattern": "2:4", "metric": "ppl", "seed": seed,
                          "value": value, "stderr": math.nan, "measured_sparsity": 0.5}
                         for method, seed, value in [("p", 0, 10.0), ("p", 1, 12.0), ("p", 2, 11.0),
                                                     ("sds-p", 0, 9.0), ("sds-p", 1, 10.0), ("sds-p", 2, 10.0),
                                                     ("q", 0, 30.0), ("q", 1, 31.0)]])
    summary = seed_summary(long, ["model", "method", "pattern", "metric"]).set_index("method")
    assert summary.loc["p", "value"] == 11.0 and summary.loc["p", "std"] == pytest.approx(1.0)
    assert summary.loc["q", "n"] == 2 and summary.loc["sds-p", "measured_sparsity"] == 0.5
    paired = paired_differences(long, [("sds-p", "p"), ("sds-p", "q")]).set_index("base")
    assert paired.loc["p", "value"] == pytest.approx(-4 / 3) and paired.loc["p", "n"] == 3
    assert paired.loc["p", "high"] == pytest.approx(-4 / 3 + T_975_2DF / 3)
    assert paired.loc["q", "n"] == 2 and paired.loc["q", "value"] == pytest.approx(-21.0)  # seeds 0 and 1 only


def test_verdict_on_a_synthetic_baseline_file(tmp_path):
    rows = [("m", "sparsegpt", "50%", "ppl_wikitext2", "36.85", ""), ("m", "wanda", "2:4", "ppl_wikitext2", "80", ""),
            ("m", "sparsegpt", "2:4", "zeroshot:avg", "47.56", "%"), ("m", "wanda", "50%", "zeroshot:avg", "47.56", "%")]
    pd.DataFrame([dict(zip(["model", "method", "sparsity", "metric", "value", "unit"], r), source="P", location="T1",
                       version="v1", secondary="no") for r in rows]).to_csv(tmp_path / "paper.csv", index=False)
    ours = pd.DataFrame([{"model": "m", "method": method, "pattern": pattern, "metric": metric, "value": value}
                         for method, pattern, metric, value in [
                             ("sparsegpt", "50%", "ppl_wikitext2", 37.5),  # 0.65 from 36.85
                             ("wanda", "2:4", "ppl_wikitext2", 82.0),  # 2 from 80
                             ("sparsegpt", "2:4", "zeroshot:avg", 0.4850),  # 0.94 points from 47.56 %
                             ("wanda", "50%", "zeroshot:avg", 0.4650),  # 1.06 points
                             ("magnitude", "50%", "ppl_wikitext2", 50.0)]])  # not published
    verdicts = with_paper(ours, load_baselines(tmp_path), ToleranceSpec()).set_index(["method", "pattern"])
    assert verdicts["reproduced"].dropna().to_dict() == {("sparsegpt", "50%"): "yes", ("wanda", "2:4"): "no",
                                                         ("sparsegpt", "2:4"): "yes", ("wanda", "50%"): "no"}
    assert pd.isna(verdicts.loc[("magnitude", "50%"), "reproduced"])
    assert verdicts.loc[("wanda", "50%"), "diff"] == pytest.approx(0.4650 - 0.4756)
    loose = with_paper(ours, load_baselines(tmp_path), ToleranceSpec(perplexity=2.5, accuracy=1.1))
    assert list(loose["reproduced"].fillna("unpublished")) == ["yes", "yes", "yes", "yes", "unpublished"]
