"""The detectable difference checked against a simulation of the paired t test and against the
textbook normal approximation, and the questions a target needs at its edge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from localnova.evaluate.power import DEFAULT_VARIANCE, Spread, VarianceSource, detectable_difference, questions_needed


@pytest.mark.parametrize(("n", "comparisons"), [(10, 1), (10, 6), (30, 6)])
def test_detectable_difference_has_the_stated_power_in_a_simulated_t_test(n, comparisons):
    delta = detectable_difference(2.0, n, comparisons)
    rng = np.random.default_rng(n + comparisons)
    samples = rng.normal(delta, 2.0, size=(40_000, n))
    t = samples.mean(axis=1) / (samples.std(axis=1, ddof=1) / math.sqrt(n))
    critical = scipy.stats.t.isf(0.05 / comparisons / 2, n - 1)
    power = np.mean(np.abs(t) > critical)
    assert power == pytest.approx(0.8, abs=0.006)  # 40,000 draws: Monte Carlo SE 0.002


def test_detectable_difference_approaches_the_normal_formula_for_many_questions():
    # (z_{1 - alpha / 2} + z_{power}) * sd / sqrt(n): 2.8016 * 2 / 100 at n = 10,000
    assert detectable_difference(2.0, 10_000) == pytest.approx((1.959964 + 0.841621) * 2.0 / 100, rel=2e-4)
    # Holm's strictest step over 6 comparisons is alpha / 6
    assert detectable_difference(2.0, 10_000, 6) == pytest.approx((2.638257 + 0.841621) * 2.0 / 100, rel=2e-4)


def test_detectable_difference_edges():
    assert math.isnan(detectable_difference(2.0, 1)) and math.isnan(detectable_difference(math.nan, 30))
    assert math.isnan(detectable_difference(2.0, 30, 0))
    assert detectable_difference(0.0, 30) == 0.0
    assert detectable_difference(1.0, 30) == pytest.approx(detectable_difference(2.0, 30) / 2)
    assert detectable_difference(2.0, 2, 12) > detectable_difference(2.0, 3, 12) > 0  # few questions: finite, large


def test_questions_needed_is_the_first_count_that_reaches_the_target():
    needed = questions_needed(2.0, 0.5, 6)
    assert detectable_difference(2.0, needed, 6) <= 0.5 < detectable_difference(2.0, needed - 1, 6)
    assert questions_needed(2.0, 100.0) == 2
    assert questions_needed(2.0, 0.0) is None and questions_needed(math.nan, 1.0) is None
    assert questions_needed(2.0, 1e-6) is None  # beyond a million questions


def test_variance_source_falls_back_to_its_default():
    pilot = VarianceSource("pilot", Spread(1.0, 4.0), {("base", "rag"): Spread(2.5, 3.0)})
    assert pilot.spread("base", "rag") == Spread(2.5, 3.0) and pilot.spread("base", "ft") == Spread(1.0, 4.0)
    assert DEFAULT_VARIANCE.spread("rag", "ft") == Spread(2.0, 5.0) and "default" in DEFAULT_VARIANCE.source
