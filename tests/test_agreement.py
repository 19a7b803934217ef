"""Judge agreement checked against independent references: scipy's rank correlations and
permutation test, Krippendorff's published reliability example, the `krippendorff` package
(a dev dependency, kept for this check) and a small alpha implementation written here from
the definition."""

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


def random_reliability(seed: int, judges: int, answers: int, integer: bool, missing_share: float) -> np.ndarray:
    """Scores 0-10 around a per-answer truth (so alpha is neither 0 nor 1), with NaN holes;
    integer scores tie often, continuous ones are rounded to 0.25 so some tie too."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 10, size=answers)
    scores = np.clip(truth + rng.normal(0, 2.0, size=(judges, answers)), 0, 10)
    scores = np.round(scores) if integer else np.round(scores * 4) / 4
    scores[rng.random(size=scores.shape) < missing_share] = np.nan
    return scores


def _rows_from_matrix(matrix: np.ndarray, judges: list[str]) -> list[ScoreRow]:
    return [
        ScoreRow("m", "base", f"u{u}", judge, None if np.isnan(v) else float(v))
        for judge, row in zip(judges, matrix, strict=True)
        for u, v in enumerate(row)
    ]


def test_krippendorff_alpha_matches_published_example_and_definition():
    assert reference_interval_alpha(KRIPPENDORFF_EXAMPLE) == pytest.approx(0.849, abs=5e-4)
    assert interval_alpha(KRIPPENDORFF_EXAMPLE) == pytest.approx(reference_interval_alpha(KRIPPENDORFF_EXAMPLE), abs=1e-9)
    agreement = judge_agreement(_rows_from_matrix(KRIPPENDORFF_EXAMPLE, ["A", "B", "C", "D"]))
    assert agreement.krippendorff_alpha_raw == pytest.approx(0.849, abs=5e-4)
    assert agreement.n_answers == 12 and agreement.n_answers_with_two_scores == 11
    # on ranks: the 8 answers every observer rated, each observer's mid-ranks among them
    complete = KRIPPENDORFF_EXAMPLE[:, ~np.isnan(KRIPPENDORFF_EXAMPLE).any(axis=0)]
    ranks = np.vstack([scipy.stats.rankdata(row) for row in complete])
    assert agreement.n_answers_scored_by_all == complete.shape[1] == 8
    assert agreement.krippendorff_alpha == pytest.approx(reference_interval_alpha(ranks), abs=1e-9)


def test_judges_that_rank_alike_on_scales_six_points_apart_agree_fully():
    """Before: two judges with identical rankings, one 6 points above the other, got alpha
    -0.74: the interval metric read the offset as disagreement."""
    low = [1.0, 2.0, 2.0, 3.0, 0.5, 1.5, 2.5, 3.5, 1.0, 2.0]
    rows = _rows_from_matrix(np.array([low, [v + 6.0 for v in low]]), ["token-f1", "llm"])
    agreement = judge_agreement(rows)
    assert agreement.krippendorff_alpha == pytest.approx(1.0)
    raw = reference_interval_alpha(np.array([low, [v + 6.0 for v in low]]))
    assert raw < -0.5 and agreement.krippendorff_alpha_raw == pytest.approx(raw)  # the raw figure, shown labelled
    assert agreement.per_answer[0].spearman == pytest.approx(1.0)


def test_agreement_is_over_the_headline_judges_only():
    matrix = random_reliability(4, judges=3, answers=20, integer=True, missing_share=0.0)
    rows = _rows_from_matrix(matrix, ["a", "gated-out", "c"])
    agreement = judge_agreement(rows, ["c", "a"])
    assert agreement.judges == ["a", "c"] and [(p.judge_a, p.judge_b) for p in agreement.per_answer] == [("a", "c")]
    assert agreement.krippendorff_alpha_raw == pytest.approx(reference_interval_alpha(matrix[[0, 2]]))
    assert judge_agreement(rows, ["a"]) is None


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("integer", [True, False])
def test_interval_alpha_equals_the_krippendorff_package(seed, integer):
    krippendorff = pytest.importorskip("krippendorff")
    data = random_reliability(seed, judges=2 + seed % 3, answers=15 + 7 * seed, integer=integer, missing_share=0.25)
    # the case this test is about: some answers keep one score (they must drop out), some none
    assert (np.sum(~np.isnan(data), axis=0) == 1).any()
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="interval")
    assert interval_alpha(data) == pytest.approx(expected, abs=1e-9)
    assert interval_alpha(data) == pytest.approx(reference_interval_alpha(data), abs=1e-9)


def test_interval_alpha_ignores_answers_with_one_score_and_far_offsets():
    data = random_reliability(11, judges=3, answers=30, integer=True, missing_share=0.1)
    alpha = interval_alpha(data)
    lone = np.full((3, 2), np.nan)
    lone[0, 0], lone[2, 1] = 0.0, 10.0  # one score each: no pair, so no say in alpha
    assert interval_alpha(np.hstack([data, lone])) == pytest.approx(alpha, abs=1e-12)
    # the interval metric sees only differences: shifting every score changes nothing
    assert interval_alpha(data + 1e6) == pytest.approx(alpha, abs=1e-9)
    # the order of judges and of answers is irrelevant
    assert interval_alpha(data[::-1, ::-1]) == pytest.approx(alpha, abs=1e-12)


def test_interval_alpha_perfect_agreement_and_undefined_cases():
    agree = np.array([[1.0, 4.0, 7.0, np.nan], [1.0, 4.0, 7.0, 9.0]])
    assert interval_alpha(agree) == pytest.approx(1.0)
    assert math.isnan(interval_alpha(np.array([[5.0, 5.0], [5.0, 5.0]])))  # one value: nothing to agree on
    assert math.isnan(interval_alpha(np.array([[1.0, np.nan], [np.nan, 2.0]])))  # no answer with two scores
    assert math.isnan(interval_alpha(np.array([[1.0, 2.0]])))  # one judge
    # disagreement as large as chance: alpha near 0; systematic disagreement: below 0
    assert interval_alpha(np.array([[0.0, 10.0], [10.0, 0.0]])) < 0


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


def test_interval_alpha_takes_none_for_missing_and_a_single_answer():
    krippendorff = pytest.importorskip("krippendorff")
    with_none = [[1, 2, None, 4], [1, 3, 3, None], [2, 2, 3, 5]]
    as_nan = np.array(with_none, dtype=float)
    assert (
        interval_alpha(with_none)
        == interval_alpha(as_nan)
        == pytest.approx(krippendorff.alpha(reliability_data=as_nan, level_of_measurement="interval"), abs=1e-9)
    )
    # one answer that two judges scored differently: alpha is defined, and 0, as the package says
    one_answer = np.array([[1.0], [3.0]])
    assert interval_alpha(one_answer) == pytest.approx(krippendorff.alpha(reliability_data=one_answer, level_of_measurement="interval"))
    assert interval_alpha(one_answer) == 0.0
    assert math.isnan(interval_alpha(np.array([1.0, 2.0, 3.0])))  # not a judges x answers matrix


def test_rank_correlation_edges_two_items_constant_judge_and_range_one():
    from localnova.evaluate.agreement import rank_correlation

    two = rank_correlation("a", "b", {"x": 1.0, "y": 2.0}, {"x": 5.0, "y": 9.0})
    assert (two.n, two.spearman, two.kendall) == (2, pytest.approx(1.0), pytest.approx(1.0))
    # one judge constant: it ranks nothing, so every figure is NaN (never a p of 0)
    constant = rank_correlation("a", "b", {k: 5.0 for k in "wxyz"}, {"w": 1.0, "x": 2.0, "y": 3.0, "z": 4.0})
    assert (constant.judge_a, constant.judge_b, constant.n) == ("a", "b", 4)
    assert all(math.isnan(v) for v in (constant.spearman, constant.spearman_p, constant.kendall, constant.kendall_p))
    flipped = rank_correlation("a", "b", {"w": 1.0, "x": 2.0, "y": 3.0, "z": 4.0}, {k: 5.0 for k in "wxyz"})
    assert math.isnan(flipped.spearman_p)
    # scores spanning exactly 1 point are not constant
    narrow = rank_correlation("a", "b", {"w": 1.0, "x": 2.0, "y": 1.0, "z": 2.0}, {"w": 1.0, "x": 2.0, "y": 2.0, "z": 2.0})
    assert narrow.spearman == pytest.approx(scipy.stats.spearmanr([1, 2, 1, 2], [1, 2, 2, 2]).statistic)


def test_spearman_p_is_exact_at_seven_items():
    from localnova.evaluate.agreement import EXACT_SPEARMAN_MAX_N, rank_correlation

    a = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0]
    b = [2.0, 1.0, 5.0, 3.0, 4.0, 8.0, 6.0]
    assert len(a) == EXACT_SPEARMAN_MAX_N
    reference = scipy.stats.permutation_test(
        (np.array(a),),
        lambda x: abs(scipy.stats.spearmanr(x, b).statistic),
        permutation_type="pairings",
        n_resamples=np.inf,
        alternative="greater",
    ).pvalue
    ours = rank_correlation("a", "b", dict(enumerate(a)), dict(enumerate(b)))
    assert ours.spearman_p == pytest.approx(reference, abs=1e-12)
    assert ours.spearman_p != pytest.approx(scipy.stats.spearmanr(a, b).pvalue, abs=1e-6)  # not the t approximation


def test_arm_ranking_pairs_name_their_judges():
    rows = [
        ScoreRow("m", arm, "q", judge, score)
        for judge, scores in (("j1", (2, 5, 7)), ("j2", (3, 4, 8)))
        for arm, score in zip(("base", "rag", "ft"), scores, strict=True)
    ]
    agreement = judge_agreement(rows)
    assert [(p.judge_a, p.judge_b) for p in agreement.arm_ranking] == [("j1", "j2")]
    assert [(p.judge_a, p.judge_b) for p in agreement.per_answer] == [("j1", "j2")]
