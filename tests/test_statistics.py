"""Statistics checked against independent references: scipy's own bootstrap / permutation /
rank functions and hand-worked examples."""

from __future__ import annotations

import math
from itertools import combinations, product

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SCORES
from localnova.evaluate.statistics import (
    bootstrap_ci,
    compare_arms,
    holm_adjust,
    paired_tests,
    pct_change_vs_base,
)

# --- bootstrap intervals ---------------------------------------------------------------


def test_bootstrap_interval_matches_scipy_percentile_bootstrap():
    estimate, low, high = bootstrap_ci(SCORES, n_resamples=20000, seed=1)
    reference = scipy.stats.bootstrap((SCORES,), np.mean, n_resamples=20000, method="percentile", random_state=2).confidence_interval
    assert estimate == pytest.approx(SCORES.mean())
    # Two independent Monte Carlo runs: endpoints agree to Monte Carlo error (~0.02 here).
    assert low == pytest.approx(reference.low, abs=0.08)
    assert high == pytest.approx(reference.high, abs=0.08)


def test_bootstrap_interval_for_other_statistics_and_levels():
    _, low90, high90 = bootstrap_ci(SCORES, n_resamples=5000, confidence=0.90)
    _, low99, high99 = bootstrap_ci(SCORES, n_resamples=5000, confidence=0.99)
    assert low99 <= low90 < high90 <= high99
    median, low, high = bootstrap_ci(SCORES, n_resamples=5000, statistic=np.median)
    reference = scipy.stats.bootstrap((SCORES,), np.median, n_resamples=5000, method="percentile", random_state=0).confidence_interval
    assert median == np.median(SCORES)
    assert low == pytest.approx(reference.low, abs=0.5)
    assert high == pytest.approx(reference.high, abs=0.5)


def test_bootstrap_is_reproducible_and_undefined_below_two_values():
    assert bootstrap_ci(SCORES, seed=3) == bootstrap_ci(SCORES, seed=3)
    estimate, low, high = bootstrap_ci([6.0])
    assert estimate == 6.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10), min_size=2, max_size=30))
def test_bootstrap_interval_contains_the_mean_of_scores(scores):
    estimate, low, high = bootstrap_ci(scores, n_resamples=500, seed=0)
    assert low - 1e-9 <= estimate <= high + 1e-9
    assert 0 <= low and high <= 10


def test_pct_change_matches_scipy_paired_bootstrap():
    base = {f"q{i}": s for i, s in enumerate(SCORES)}
    arm = {f"q{i}": min(10.0, s + (i % 3)) for i, s in enumerate(SCORES)}
    arm["only_in_arm"] = 0.0  # unpaired questions must not enter either mean
    pct, low, high = pct_change_vs_base(base, arm, n_resamples=20000, seed=0)
    base_values = SCORES
    arm_values = np.array([arm[f"q{i}"] for i in range(SCORES.size)])
    assert pct == pytest.approx(100 * (arm_values.mean() - base_values.mean()) / base_values.mean())

    def pct_statistic(b, a, axis=-1):
        return 100 * (a.mean(axis=axis) - b.mean(axis=axis)) / b.mean(axis=axis)

    reference = scipy.stats.bootstrap(
        (base_values, arm_values),
        pct_statistic,
        paired=True,
        n_resamples=20000,
        method="percentile",
        random_state=5,
    ).confidence_interval
    assert low == pytest.approx(reference.low, abs=0.5)
    assert high == pytest.approx(reference.high, abs=0.5)
    assert low < pct < high


def test_pct_change_undefined_cases_are_nan_not_errors():
    assert all(math.isnan(v) for v in pct_change_vs_base({"a": 1.0}, {"b": 2.0}))
    pct, low, high = pct_change_vs_base({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 2.0})
    assert all(math.isnan(v) for v in (pct, low, high))
    pct, low, high = pct_change_vs_base({"a": 4.0}, {"a": 5.0})
    assert pct == pytest.approx(25.0) and math.isnan(low) and math.isnan(high)


# --- paired tests ----------------------------------------------------------------------


def test_exact_sign_flip_p_by_enumeration_in_the_test():
    a = [5.0, 3.0, 6.0, 2.0]
    b = [6.0, 5.0, 5.5, 5.0]  # differences 1, 2, -0.5, 3
    differences = np.subtract(b, a)
    observed = abs(differences.sum())
    extreme = sum(abs(np.dot(signs, differences)) >= observed - 1e-12 for signs in product((1, -1), repeat=4))
    result = paired_tests(a, b)
    # |sum| >= 5.5 only for the observed signs (5.5) and the one with -0.5 flipped (6.5),
    # each with its mirror image: 4 of the 16 patterns.
    assert extreme == 4
    assert result.permutation_p == pytest.approx(extreme / 16)
    assert result.n == 4 and result.mean_diff == pytest.approx(differences.mean())


def test_permutation_p_matches_scipy_permutation_test_exact_and_monte_carlo():
    rng = np.random.default_rng(0)
    for n in (10, 17):
        a = rng.integers(0, 11, size=n).astype(float)
        b = np.clip(a + rng.integers(-2, 4, size=n), 0, 10)
        reference = scipy.stats.permutation_test(
            (a, b),
            lambda x, y, axis: np.mean(y - x, axis=axis),
            vectorized=True,
            permutation_type="samples",
            n_resamples=np.inf,
        ).pvalue
        ours = paired_tests(a, b, n_permutations=20000, seed=1).permutation_p
        # n = 10 is enumerated exactly on both sides; n = 17 is Monte Carlo on ours.
        assert ours == pytest.approx(reference, abs=1e-12 if n == 10 else 0.01)


def test_wilcoxon_hand_worked_and_matches_scipy():
    # All five differences positive: exact two-sided p = 2 / 2**5.
    result = paired_tests([0, 0, 0, 0, 0], [1, 2, 3, 4, 5])
    assert result.wilcoxon_p == pytest.approx(2 / 32)
    assert result.permutation_p == pytest.approx(2 / 32)
    a = SCORES
    b = np.clip(SCORES + np.array([1, 0, 2, -1, 3, 1, 0, 0, 2, 1] * 2), 0, 10)
    assert paired_tests(a, b).wilcoxon_p == pytest.approx(scipy.stats.wilcoxon(b - a).pvalue)


def test_identical_arms_give_p_one_and_empty_pairs_nan():
    result = paired_tests([3, 4, 5], [3, 4, 5])
    assert (result.wilcoxon_p, result.permutation_p, result.mean_diff) == (1.0, 1.0, 0.0)
    empty = paired_tests([], [])
    assert empty.n == 0 and math.isnan(empty.wilcoxon_p) and math.isnan(empty.permutation_p)
    with pytest.raises(ValueError):
        paired_tests([1, 2], [1])


# --- Holm ------------------------------------------------------------------------------


def test_holm_hand_worked_examples():
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # 3 * 0.02 = 0.06; 2 * 0.6 = 1.2 capped at 1; monotone step keeps the last at 1.
    assert holm_adjust([0.6, 0.02, 0.7]) == pytest.approx([1.0, 0.06, 1.0])
    adjusted = holm_adjust([0.01, math.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])
    assert holm_adjust([]) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=20))
def test_holm_properties(pvalues):
    adjusted = holm_adjust(pvalues)
    for raw, adj in zip(pvalues, adjusted):
        assert raw - 1e-12 <= adj <= 1.0
    for i, j in combinations(range(len(pvalues)), 2):
        if pvalues[i] <= pvalues[j]:
            assert adjusted[i] <= adjusted[j] + 1e-12


def test_compare_arms_covers_every_pair_with_one_holm_family():
    rng = np.random.default_rng(4)
    # 14 questions: scipy's Wilcoxon enumerates permutations below 14 tied pairs (slow here).
    cells = {}
    for model in ("small", "large"):
        for shift, arm in enumerate(("rag", "base", "ft")):
            cells[(model, arm)] = {f"q{i}": float(np.clip(rng.integers(2, 8) + shift, 0, 10)) for i in range(14)}
    comparisons = compare_arms(cells, n_permutations=2000)
    pairs = [(c.model, c.arm_a, c.arm_b) for c in comparisons]
    assert pairs == [
        ("small", "base", "rag"),
        ("small", "base", "ft"),
        ("small", "rag", "ft"),
        ("large", "base", "rag"),
        ("large", "base", "ft"),
        ("large", "rag", "ft"),
    ]
    assert [c.wilcoxon_p_holm for c in comparisons] == pytest.approx(holm_adjust([c.wilcoxon_p for c in comparisons]))
    assert [c.permutation_p_holm for c in comparisons] == pytest.approx(holm_adjust([c.permutation_p for c in comparisons]))
    first = comparisons[0]
    a = [cells[("small", "base")][f"q{i}"] for i in range(14)]
    b = [cells[("small", "rag")][f"q{i}"] for i in range(14)]
    assert first.mean_diff == pytest.approx(np.mean(b) - np.mean(a))
    assert compare_arms({("m", "base"): {"q": 1.0}}) == []
