"""The power model checked against a simulated t test, the textbook normal formula, the
binomial arithmetic of identical answers by hand, and the sign-flip test itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from localnova.evaluate.power import (
    DEFAULT_VARIANCE,
    Spread,
    VarianceSource,
    detectable_difference,
    power,
    power_ceiling,
    questions_needed,
)


@pytest.mark.parametrize(("n", "comparisons"), [(20, 1), (30, 6)])
def test_without_identical_answers_the_detectable_difference_has_the_stated_power_in_a_simulated_t_test(n, comparisons):
    delta = detectable_difference(2.0, n, comparisons)
    rng = np.random.default_rng(n + comparisons)
    samples = rng.normal(delta, 2.0, size=(40_000, n))
    t = samples.mean(axis=1) / (samples.std(axis=1, ddof=1) / math.sqrt(n))
    critical = scipy.stats.t.isf(0.05 / comparisons / 2, n - 1)
    assert np.mean(np.abs(t) > critical) == pytest.approx(0.8, abs=0.006)  # 40,000 draws: Monte Carlo SE 0.002


def test_detectable_difference_approaches_the_normal_formula_for_many_questions():
    # (z_{1 - alpha / 2} + z_{power}) * sd / sqrt(n): 2.8016 * 2 / 100 at n = 10,000
    assert detectable_difference(2.0, 10_000) == pytest.approx((1.959964 + 0.841621) * 2.0 / 100, rel=2e-4)
    # Holm's strictest step over 6 comparisons is alpha / 6
    assert detectable_difference(2.0, 10_000, 6) == pytest.approx((2.638257 + 0.841621) * 2.0 / 100, rel=2e-4)


def test_ten_questions_with_a_quarter_answered_alike_cannot_reach_eighty_percent_after_holm():
    # over 6 comparisons the level is 0.05 / 6 = 0.0083; a sign-flip test on k differing
    # questions has p-values in steps of 2 / 2**k, so it needs 2 / 2**k <= 0.0083: k >= 8
    by_hand = sum(math.comb(10, k) * 0.75**k * 0.25 ** (10 - k) for k in (8, 9, 10))
    assert by_hand == pytest.approx(0.5256, abs=1e-4)
    assert power_ceiling(10, 6, 0.25) == pytest.approx(by_hand, abs=1e-12)
    assert power(1e6, 1.0, 10, 6, 0.25) == pytest.approx(by_hand, abs=1e-9)
    assert detectable_difference(2.0, 10, 6, 0.25) == math.inf
    # the seed's design: 2 models x 6 pairs of arms = 12 comparisons need 9 of 10 to differ
    assert power_ceiling(10, 12, 0.0) == 1.0 and power_ceiling(10, 12, 0.1) == pytest.approx(0.9**10 + 10 * 0.1 * 0.9**9)
    assert power_ceiling(8, 12) == 0.0 and detectable_difference(2.0, 8, 12) == math.inf  # 2 / 2**8 > 0.05 / 12


def test_identical_answers_cost_power_and_the_level_is_rounded_down_to_what_the_test_can_attain():
    # with n = 10 and no ties the step is 2 / 1024: alpha / 6 = 0.00833 rounds down to 4 steps
    critical = scipy.stats.t.isf(4 * 2 / 1024 / 2, 9)
    noncentrality = 1.5 * math.sqrt(10) / 1.0
    expected = scipy.stats.nct.sf(critical, 9, noncentrality) + scipy.stats.nct.sf(critical, 9, -noncentrality)
    assert power(1.5, 1.0, 10, 6) == pytest.approx(expected, rel=1e-9)
    # the same differences, and then 30% more questions answered alike: less power
    assert power(0.5, 2.0, 60, 6, 0.0) > power(0.5 * 60 / 86, 2.0, 86, 6, 0.3)


def test_the_model_predicts_the_sign_flip_tests_power_on_answers_partly_alike():
    from localnova.evaluate.statistics import paired_tests

    n, comparisons, zero_share, sd = 40, 3, 0.3, 1.5
    delta = detectable_difference(sd, n, comparisons, zero_share)
    rng = np.random.default_rng(11)
    draws = 600
    alike = rng.random((draws, n)) < zero_share
    differences = np.where(alike, 0.0, rng.normal(delta / (1 - zero_share), sd, size=(draws, n)))
    found = [
        paired_tests(np.zeros(n), row, n_permutations=2000, seed=i).permutation_p < 0.05 / comparisons for i, row in enumerate(differences)
    ]
    assert np.mean(found) == pytest.approx(0.8, abs=0.05)  # 600 draws: Monte Carlo SE 0.016


def test_detectable_difference_edges():
    assert math.isnan(detectable_difference(2.0, 1)) and math.isnan(detectable_difference(math.nan, 30))
    assert detectable_difference(math.nan, 10, 6, 0.25) == math.inf  # out of reach whatever the spread
    assert math.isnan(detectable_difference(2.0, 30, 1, math.nan))
    assert math.isnan(detectable_difference(2.0, 30, 0)) and math.isnan(detectable_difference(2.0, 30, 1, 1.0))
    assert detectable_difference(0.0, 30) == 0.0
    assert detectable_difference(1.0, 30, 2, 0.1) == pytest.approx(detectable_difference(2.0, 30, 2, 0.1) / 2)
    assert detectable_difference(2.0, 5, 1) > detectable_difference(2.0, 6, 1) > 0  # few questions: finite, large


def test_questions_needed_is_the_first_count_that_reaches_the_target():
    needed = questions_needed(2.0, 0.5, 6, 0.2)
    assert detectable_difference(2.0, needed, 6, 0.2) <= 0.5 < detectable_difference(2.0, needed - 1, 6, 0.2)
    # however large the change, a sign-flip test on 5 questions cannot go below p = 2 / 32
    assert questions_needed(2.0, 100.0) == 6
    assert questions_needed(2.0, 0.0) is None and questions_needed(math.nan, 1.0) is None
    assert questions_needed(2.0, 1e-6) is None  # beyond a million questions


def test_variance_source_falls_back_to_its_default():
    pilot = VarianceSource("pilot", Spread(1.0, 0.1, 4.0), {("base", "rag"): Spread(2.5, 0.3, 3.0)})
    assert pilot.spread("base", "rag") == Spread(2.5, 0.3, 3.0) and pilot.spread("base", "ft") == Spread(1.0, 0.1, 4.0)
    assert DEFAULT_VARIANCE.spread("rag", "ft") == Spread(2.0, 0.0, 5.0) and "default" in DEFAULT_VARIANCE.source
