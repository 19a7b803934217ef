"""Statistics checked against independent references: scipy's own bootstrap / permutation /
rank functions and hand-worked examples."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import combinations, product

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SCORES
from localnova.evaluate.comparisons import compare_arms
from localnova.evaluate.statistics import (
    bootstrap_ci,
    holm_adjust,
    interval_tails,
    paired_change,
    paired_tests,
    pct_change_vs_base,
    signed_rank_p,
)

# --- bootstrap intervals ---------------------------------------------------------------


def expanded_level(n: int, confidence: float = 0.95) -> float:
    """The confidence level of the percentile interval the expanded bootstrap takes, from
    Hesterberg's definition: the normal tail beyond sqrt(n / (n - 1)) * t_{n-1, (1 + c) / 2}."""
    z = math.sqrt(n / (n - 1)) * scipy.stats.t.ppf((1 + confidence) / 2, n - 1)
    return 1 - 2 * scipy.stats.norm.sf(z)


def test_interval_tails_by_hand():
    # n = 10: t_9(0.975) = 2.2622, times sqrt(10 / 9) = 2.3846, normal tail 0.00855
    assert interval_tails(10) == pytest.approx((0.00855, 0.99145), abs=2e-5)
    # n = 200: 1.9720 * sqrt(200 / 199) = 1.9769, tail 0.02403
    assert interval_tails(200) == pytest.approx((0.02403, 0.97597), abs=2e-5)
    assert interval_tails(10, 0.9)[0] > interval_tails(10)[0]
    assert all(math.isnan(v) for v in interval_tails(1))


def test_bootstrap_interval_matches_scipy_percentile_bootstrap_at_the_expanded_level():
    estimate, low, high = bootstrap_ci(SCORES, n_resamples=20000, seed=1)
    reference = scipy.stats.bootstrap(
        (SCORES,), np.mean, n_resamples=20000, method="percentile", confidence_level=expanded_level(SCORES.size), random_state=2
    ).confidence_interval
    assert estimate == pytest.approx(SCORES.mean())
    # Two independent Monte Carlo runs: endpoints agree to Monte Carlo error (~0.02 here).
    assert low == pytest.approx(reference.low, abs=0.08)
    assert high == pytest.approx(reference.high, abs=0.08)


def test_bootstrap_interval_for_other_statistics_and_levels():
    _, low90, high90 = bootstrap_ci(SCORES, n_resamples=5000, confidence=0.90)
    _, low99, high99 = bootstrap_ci(SCORES, n_resamples=5000, confidence=0.99)
    assert low99 <= low90 < high90 <= high99
    median, low, high = bootstrap_ci(SCORES, n_resamples=5000, statistic=np.median)
    reference = scipy.stats.bootstrap(
        (SCORES,), np.median, n_resamples=5000, method="percentile", confidence_level=expanded_level(SCORES.size), random_state=0
    ).confidence_interval
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


def test_pct_change_interval_is_the_delta_method_t_interval_of_the_ratio_of_means():
    base = {f"q{i}": s for i, s in enumerate(SCORES)}
    arm = {f"q{i}": min(10.0, s + (i % 3)) for i, s in enumerate(SCORES)}
    arm["only_in_arm"] = 0.0  # unpaired questions must not enter either mean
    pct, low, high = pct_change_vs_base(base, arm)
    b, a = SCORES, np.array([arm[f"q{i}"] for i in range(SCORES.size)])
    n, ratio = SCORES.size, a.mean() / b.mean()
    assert pct == pytest.approx(100 * (ratio - 1))
    # the delta method written with variances and the covariance of the two means
    covariance = np.cov(a, b, ddof=1)
    variance = (covariance[0, 0] - 2 * ratio * covariance[0, 1] + ratio**2 * covariance[1, 1]) / (n * b.mean() ** 2)
    half = scipy.stats.t.ppf(0.975, n - 1) * 100 * math.sqrt(variance)
    assert (low, high) == pytest.approx((pct - half, pct + half))
    assert low < pct < high


def test_pct_change_undefined_cases_are_nan_not_errors():
    assert all(math.isnan(v) for v in pct_change_vs_base({"a": 1.0}, {"b": 2.0}))
    pct, low, high = pct_change_vs_base({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 2.0})
    assert all(math.isnan(v) for v in (pct, low, high))
    pct, low, high = pct_change_vs_base({"a": 4.0}, {"a": 5.0})
    assert pct == pytest.approx(25.0) and math.isnan(low) and math.isnan(high)


def test_a_pct_change_near_a_zero_base_is_refused_and_the_change_in_points_stands():
    """Before: a base of 0.1 turned +2.9 points into +2900% [900, 2900]."""
    base = {f"q{i:02d}": 0.0 for i in range(29)} | {"q29": 3.0}
    arm = {f"q{i:02d}": 3.0 for i in range(30)}
    change = paired_change(base, arm)
    assert change.base_mean == pytest.approx(0.1) and change.arm_mean == 3.0
    assert math.isnan(change.pct) and math.isnan(change.pct_low) and math.isnan(change.pct_high)
    assert all(math.isnan(v) for v in pct_change_vs_base(base, arm))
    # the change in points: +2.9, differences 3 (29 times) and 0 (once)
    assert change.diff == pytest.approx(2.9) and change.diff_low < 2.9 < change.diff_high
    # at the threshold (a base mean of exactly 1 point) the % is given
    at_one = paired_change({"a": 0.0, "b": 2.0}, {"a": 1.0, "b": 3.0})
    assert at_one.pct == pytest.approx(100.0) and math.isfinite(at_one.pct_low)


def test_paired_change_in_points_is_scipys_paired_t_interval():
    base = {f"q{i}": s for i, s in enumerate(SCORES)}
    arm = {f"q{i}": min(10.0, s + (i % 4) - 1) for i, s in enumerate(SCORES)}
    change = paired_change(base, arm, confidence=0.9)
    a, b = np.array([arm[q] for q in base]), SCORES
    reference = scipy.stats.ttest_rel(a, b).confidence_interval(0.9)
    assert change.n == SCORES.size and change.diff == pytest.approx((a - b).mean())
    assert (change.diff_low, change.diff_high) == pytest.approx((reference.low, reference.high))
    assert (change.pct, change.pct_low, change.pct_high) == pct_change_vs_base(base, arm, confidence=0.9)


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


def signed_rank_p_by_enumeration(differences) -> float:
    """Wilcoxon's p from its definition: drop zeros, mid-rank |d|, and count the sign patterns
    of the ranks whose positive-rank sum is at least as far from its centre as the observed."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    ranks = scipy.stats.rankdata(np.abs(d))
    centre = ranks.sum() / 2
    observed = abs(ranks[d > 0].sum() - centre)
    sums = [sum(r for r, positive in zip(ranks, signs, strict=True) if positive) for signs in product((True, False), repeat=d.size)]
    return float(np.mean([abs(total - centre) >= observed - 1e-9 for total in sums]))


def test_wilcoxon_hand_worked_and_exact_with_ties():
    # All five differences positive: exact two-sided p = 2 / 2**5.
    result = paired_tests([0, 0, 0, 0, 0], [1, 2, 3, 4, 5])
    assert result.wilcoxon_p == pytest.approx(2 / 32)
    assert result.permutation_p == pytest.approx(2 / 32)
    a = SCORES
    b = np.clip(SCORES + np.array([1, 0, 2, -1, 3, 1, 0, 0, 2, 1] * 2), 0, 10)  # zeros and ties
    assert paired_tests(a, b).wilcoxon_p == pytest.approx(signed_rank_p_by_enumeration(b - a), abs=1e-12)


def test_wilcoxon_with_many_zero_differences_is_exact_not_the_normal_approximation():
    """Before: the zeros sent scipy to its normal approximation, p = 0.025."""
    result = paired_tests([0] * 30, [0] * 25 + [1] * 5)
    assert result.wilcoxon_p >= 0.06
    assert result.wilcoxon_p == pytest.approx(2 / 2**5, abs=1e-12)  # the 5 non-zero pairs, all positive


@pytest.mark.parametrize("seed", range(5))
def test_signed_rank_p_equals_enumeration_on_tied_data_with_zeros(seed):
    rng = np.random.default_rng(seed)
    differences = rng.integers(-3, 4, size=18).astype(float)  # about 2 in 7 are zero, the rest tie in threes
    assert np.count_nonzero(differences) <= 16
    assert signed_rank_p(differences) == pytest.approx(signed_rank_p_by_enumeration(differences), abs=1e-12)


def test_signed_rank_p_without_ties_matches_scipy_exact():
    differences = np.array([0.5, -1.2, 2.3, 3.1, -0.4, 1.7, 2.9, 4.4, -2.2, 0.9, 1.1])
    assert signed_rank_p(differences) == pytest.approx(scipy.stats.wilcoxon(differences, method="exact").pvalue, abs=1e-12)


def test_signed_rank_p_above_the_exact_limit_is_the_tie_corrected_normal_approximation():
    from localnova.evaluate.statistics import EXACT_SIGNED_RANK_MAX_N

    rng = np.random.default_rng(2)
    differences = rng.integers(-4, 6, size=EXACT_SIGNED_RANK_MAX_N + 60).astype(float)
    assert np.count_nonzero(differences) > EXACT_SIGNED_RANK_MAX_N
    reference = scipy.stats.wilcoxon(differences, zero_method="wilcox", correction=False, method="asymptotic").pvalue
    assert signed_rank_p(differences) == pytest.approx(reference, rel=1e-9)
    # and just below the limit the exact p is close to that approximation
    below = differences[np.flatnonzero(differences)[:EXACT_SIGNED_RANK_MAX_N]]
    approximate = scipy.stats.wilcoxon(below, correction=False, method="asymptotic").pvalue
    assert signed_rank_p(below) == pytest.approx(approximate, abs=0.005)


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
    for raw, adj in zip(pvalues, adjusted, strict=True):
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


# --- what mutation testing found untested (make mutation; BENCHMARKS.md) ---------------


def test_generation_rows_from_reads_dicts_and_objects_with_their_types():
    from types import SimpleNamespace

    from localnova.evaluate.statistics import GenerationRow, generation_rows_from

    fields = {"model": "m", "arm": "rag", "question_id": 7, "latency_ms": "12.5", "input_tokens": "30", "output_tokens": 4.0}
    from_dict, from_object = generation_rows_from([fields, SimpleNamespace(**fields)])
    expected = GenerationRow(model="m", arm="rag", question_id="7", latency_ms=12.5, input_tokens=30, output_tokens=4)
    assert from_dict == from_object == expected
    assert [type(getattr(from_dict, name)) for name in ("question_id", "latency_ms", "input_tokens", "output_tokens")] == [
        str,
        float,
        int,
        int,
    ]
    assert generation_rows_from([]) == []


def test_ordered_arms_moves_base_first_only_when_it_is_there():
    from localnova.evaluate.statistics import ordered_arms

    assert ordered_arms(["rag", "ft", "base", "rag"]) == ["base", "rag", "ft"]
    assert ordered_arms(["rag", "ft"]) == ["rag", "ft"]
    assert ordered_arms(["rag", "control"], base_arm="control") == ["control", "rag"]


def test_documented_defaults_are_the_ones_used():
    rng = np.random.default_rng(8)
    a = rng.normal(5, 2, size=20)
    b = a + rng.normal(0.4, 1.5, size=20)  # n > 16: the permutation test samples, so its defaults matter
    # continuous values: integer scores put the resampled means on a grid that hides n_resamples
    assert bootstrap_ci(a) == bootstrap_ci(a, n_resamples=2000, seed=0)
    assert bootstrap_ci(a) != bootstrap_ci(a, n_resamples=2001, seed=0) and bootstrap_ci(a) != bootstrap_ci(a, n_resamples=2000, seed=1)
    base, arm = dict(enumerate(a)), dict(enumerate(b))
    assert pct_change_vs_base(base, arm) == pct_change_vs_base(base, arm, confidence=0.95)
    assert paired_tests(a, b) == paired_tests(a, b, n_permutations=10000, seed=0)
    cells = {("m", "base"): dict(enumerate(a)), ("m", "rag"): dict(enumerate(b))}
    assert compare_arms(cells) == compare_arms(cells, n_permutations=10000, seed=0)


def test_bootstrap_vectorises_a_statistic_that_takes_axis_and_loops_over_one_that_does_not():
    calls = []

    def counted_mean(values, axis=None):
        calls.append(np.shape(values))
        return np.mean(values, axis=axis)

    assert bootstrap_ci(SCORES, n_resamples=300, seed=2, statistic=counted_mean) == bootstrap_ci(SCORES, n_resamples=300, seed=2)
    assert calls == [SCORES.shape, (300, SCORES.size)]  # the estimate, then every resample in one call
    by_row = bootstrap_ci(SCORES, n_resamples=300, seed=2, statistic=lambda values: float(np.median(values)))
    assert by_row == bootstrap_ci(SCORES, n_resamples=300, seed=2, statistic=np.median)


def test_pct_change_interval_from_two_questions_and_one():
    two = pct_change_vs_base({"q1": 4.0, "q2": 6.0}, {"q1": 5.0, "q2": 9.0})
    assert two[0] == pytest.approx(40.0) and math.isfinite(two[1]) and math.isfinite(two[2]) and two[1] < two[2]
    one = paired_change({"q1": 4.0}, {"q1": 5.0})
    assert (one.n, one.diff, one.pct) == (1, 1.0, 25.0) and all(math.isnan(v) for v in (one.diff_low, one.pct_high))


def test_wilcoxon_on_differences_that_are_all_one():
    result = paired_tests(np.zeros(10), np.ones(10))
    assert result.wilcoxon_p == pytest.approx(2 / 2**10)  # only the observed signs and their mirror


def test_sign_flip_ties_are_relative_to_the_sum_and_no_wider():
    # flipping the tiny difference moves |sum| by 1.5e-9 on a sum of 1: a real difference,
    # above the 1e-9 relative tolerance, so only the observed pattern and its mirror count
    assert paired_tests([0.0, 0.0], [1.0, 0.75e-9]).permutation_p == pytest.approx(0.5)
    # sums in the thousands: 5.5 + 5.9 - 11.4 is 0 in exact arithmetic, not in floats, so
    # patterns that tie exactly differ in their last bits; p must equal the exact count
    decimals = ["5.5", "5.9", "-11.4", "4256.6", "812.8", "2091.9"]
    exact = [Fraction(text) for text in decimals]
    reaching = [
        abs(sum(sign * value for sign, value in zip(signs, exact, strict=True))) >= abs(sum(exact)) for signs in product((1, -1), repeat=6)
    ]
    assert paired_tests(np.zeros(6), [float(text) for text in decimals]).permutation_p == np.mean(reaching) == 10 / 64


def test_sign_flip_is_exact_up_to_sixteen_pairs():
    differences = np.array([1.0, -2.0, 3.0, 0.5, 1.5, -1.0, 2.0, 2.5, -0.5, 1.0, 3.0, -1.5, 0.5, 2.0, 1.0, -3.0])
    observed = abs(differences.sum())
    sums = np.array([np.dot(signs, differences) for signs in product((1.0, -1.0), repeat=16)])
    exact = float(np.mean(np.abs(sums) >= observed - 1e-9))
    assert paired_tests(np.zeros(16), differences).permutation_p == exact  # enumerated: no Monte Carlo error


def test_sign_flip_monte_carlo_adds_one_and_counts_every_pattern():
    # 30 positive differences: only the observed pattern and its mirror reach |sum| (2 in 2**30),
    # so no sample hits and p is the (1 + 0) / (1 + N) floor, never 0
    assert paired_tests(np.zeros(30), np.ones(30), n_permutations=999, seed=0).permutation_p == pytest.approx(1 / 1000)
    # identical arms: every sampled pattern ties, over several chunks of 50,000 and a last one of 1
    assert paired_tests(np.zeros(20), np.zeros(20), n_permutations=100_001).permutation_p == 1.0
    # three differences of 1 among zeros: exact p is 2 / 2**3; the sample, over three chunks, agrees
    three = np.array([1.0, 1.0, 1.0] + [0.0] * 17)
    assert paired_tests(np.zeros(20), three, n_permutations=150_000, seed=4).permutation_p == pytest.approx(0.25, abs=0.005)


def test_sign_flip_monte_carlo_is_seeded():
    rng = np.random.default_rng(3)
    differences = rng.normal(0.3, 1.0, size=25)
    first = paired_tests(np.zeros(25), differences, n_permutations=4000, seed=9).permutation_p
    assert paired_tests(np.zeros(25), differences, n_permutations=4000, seed=9).permutation_p == first
    assert paired_tests(np.zeros(25), differences, n_permutations=4000, seed=10).permutation_p != first


def test_paired_tests_explain_bad_shapes_and_report_nan_without_pairs():
    with pytest.raises(ValueError, match=r"equal 1-d shapes, got \(2,\) and \(1,\)"):
        paired_tests([1, 2], [1])
    assert math.isnan(paired_tests([], []).mean_diff)


def test_holm_treats_a_missing_p_value_as_nan():
    adjusted = holm_adjust([0.01, None, 0.02])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_compare_arms_passes_its_settings_to_each_test():
    rng = np.random.default_rng(6)
    a = rng.normal(5, 2, size=20)
    b = a + rng.normal(0.5, 1.5, size=20)
    cells = {("m", "rag"): dict(enumerate(b)), ("m", "control"): dict(enumerate(a))}
    (comparison,) = compare_arms(cells, base_arm="control", n_permutations=3000, seed=5)
    assert (comparison.arm_a, comparison.arm_b, comparison.n) == ("control", "rag", 20)
    reference = paired_tests(a, b, n_permutations=3000, seed=5)
    assert comparison.permutation_p == reference.permutation_p and comparison.wilcoxon_p == reference.wilcoxon_p


def test_compare_arms_gives_each_comparison_its_spread_and_detectable_difference():
    from localnova.evaluate.power import detectable_difference

    rng = np.random.default_rng(7)
    base = rng.normal(5, 2, size=25)
    cells = {("m", "base"): dict(enumerate(base))}
    for arm, shift in (("rag", 0.5), ("ft", 1.0)):
        changed = base + rng.normal(shift, 1.0 + shift, size=25)
        changed[:6] = base[:6]  # six questions answered alike: differences of exactly 0
        cells[("m", arm)] = dict(enumerate(changed))
    comparisons = compare_arms(cells, n_permutations=500)
    assert len(comparisons) == 3
    for comparison in comparisons:
        a = np.array(list(cells[("m", comparison.arm_a)].values()))
        b = np.array(list(cells[("m", comparison.arm_b)].values()))
        differences = b - a
        assert comparison.sd_diff == pytest.approx(np.std(differences, ddof=1))
        assert comparison.zero_share == np.mean(differences == 0)
        assert comparison.sd_nonzero == pytest.approx(np.std(differences[differences != 0], ddof=1))
        # the family is 3 comparisons: each must clear Holm's strictest level, 0.05 / 3
        expected = detectable_difference(comparison.sd_nonzero, 25, 3, comparison.zero_share)
        assert comparison.detectable_diff == pytest.approx(expected)
    assert comparisons[0].zero_share == 6 / 25
