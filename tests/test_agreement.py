"""Judge agreement checked against independent references: scipy's rank correlations and
permutation test, Krippendorff's published reliability example and a small alpha
implementation written here from the definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from localnova.evaluate.agreement import exact_spearman_p, interval_alpha, judge_agreement
from localnova.evaluate.statistics import ScoreRow

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the example with
# 4 observers, 12 units and missing values; he reports alpha = 0.849 at the interval level.
KRIPPENDORFF_EXAMPLE = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
        [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
    ]
)


def reference_interval_alpha(data: np.ndarray) -> float:
    """alpha = 1 - D_o / D_e from the definition, over units with two or more values."""
    units = [col[~np.isnan(col)] for col in data.T]
    units = [u for u in units if u.size >= 2]
    pooled = np.concatenate(units)
    n = pooled.size
    observed = sum(np.sum((u[:, None] - u[None, :]) ** 2) / (u.size - 1) for u in units) / n
    expected = np.sum((pooled[:, None] - pooled[None, :]) ** 2) / (n * (n - 1))
    return 1.0 - observed / expected


def _rows_from_matrix(matrix: np.ndarray, judges: list[str]) -> list[ScoreRow]:
    return [
        ScoreRow("m", "base", f"u{u}", judge, None if np.isnan(v) else float(v))
        for judge, row in zip(judges, matrix)
        for u, v in enumerate(row)
    ]


def test_krippendorff_alpha_matches_published_example_and_definition():
    assert reference_interval_alpha(KRIPPENDORFF_EXAMPLE) == pytest.approx(0.849, abs=5e-4)
    assert interval_alpha(KRIPPENDORFF_EXAMPLE) == pytest.approx(reference_interval_alpha(KRIPPENDORFF_EXAMPLE), abs=1e-9)
    agreement = judge_agreement(_rows_from_matrix(KRIPPENDORFF_EXAMPLE, ["A", "B", "C", "D"]))
    assert agreement.krippendorff_alpha == pytest.approx(0.849, abs=5e-4)
    assert agreement.n_answers == 12 and agreement.n_answers_with_two_scores == 11


def test_pairwise_correlations_match_scipy_on_shared_answers():
    agreement = judge_agreement(_rows_from_matrix(KRIPPENDORFF_EXAMPLE, ["A", "B", "C", "D"]))
    pair = next(p for p in agreement.per_answer if (p.judge_a, p.judge_b) == ("B", "C"))
    both = ~np.isnan(KRIPPENDORFF_EXAMPLE[1]) & ~np.isnan(KRIPPENDORFF_EXAMPLE[2])
    b, c = KRIPPENDORFF_EXAMPLE[1][both], KRIPPENDORFF_EXAMPLE[2][both]
    assert pair.n == int(both.sum()) == 9
    assert pair.spearman == pytest.approx(scipy.stats.spearmanr(b, c).statistic)
    assert pair.spearman_p == pytest.approx(scipy.stats.spearmanr(b, c).pvalue)
    assert pair.kendall == pytest.approx(scipy.stats.kendalltau(b, c).statistic)
    assert pair.kendall_p == pytest.approx(scipy.stats.kendalltau(b, c).pvalue)
    assert len(agreement.per_answer) == 6


def test_arm_ranking_correlation_uses_cell_means_with_exact_small_sample_p():
    rows = []
    j1_means = {"base": 3.0, "rag": 7.0, "ft": 5.0, "ft_rag": 8.0}
    j2_means = {"base": 4.0, "rag": 6.0, "ft": 6.5, "ft_rag": 9.0}
    for arm in j1_means:
        for q, offset in enumerate((-1.0, 0.0, 1.0)):
            rows.append(ScoreRow("m", arm, f"q{q}", "j1", j1_means[arm] + offset))
            rows.append(ScoreRow("m", arm, f"q{q}", "j2", j2_means[arm] - offset))
    ranking = judge_agreement(rows).arm_ranking[0]
    a, b = list(j1_means.values()), list(j2_means.values())
    assert ranking.n == 4
    assert ranking.spearman == pytest.approx(scipy.stats.spearmanr(a, b).statistic)
    assert ranking.kendall == pytest.approx(scipy.stats.kendalltau(a, b).statistic)
    reference = scipy.stats.permutation_test(
        (np.array(a),),
        lambda x: abs(scipy.stats.spearmanr(x, b).statistic),
        permutation_type="pairings",
        n_resamples=np.inf,
        alternative="greater",
    ).pvalue
    assert ranking.spearman_p == pytest.approx(reference)
    # A perfect ranking of 3 arms: exactly 2 of 3! orderings are as extreme.
    assert exact_spearman_p(np.array([1.0, 2, 3]), np.array([2.0, 5, 9])) == pytest.approx(1 / 3)


def test_agreement_with_one_judge_is_none_and_failed_judge_is_nan():
    one_judge = [ScoreRow("m", "base", f"q{i}", "j1", float(i)) for i in range(5)]
    assert judge_agreement(one_judge) is None
    failed = one_judge + [ScoreRow("m", "base", f"q{i}", "dead", None) for i in range(5)]
    agreement = judge_agreement(failed)
    assert agreement.judges == ["j1", "dead"]
    assert agreement.per_answer[0].n == 0 and math.isnan(agreement.per_answer[0].spearman)
    assert math.isnan(agreement.krippendorff_alpha)
