"""What a study can detect: the smallest change a paired comparison finds with 80% power, and
how many questions a target change needs.

A comparison of two arms is a sign-flip (permutation) test on the per-question panel
differences. Two things shape its power besides the spread and the number of questions:
- a question whose two answers are the same (small models and reference judges give many) has
  a difference of exactly 0, which no sign flip changes: with k questions that differ, the
  test's p-values come in steps of 2 / 2**k, so it can never clear a level below that step;
- Holm adjusts the p-values over every comparison of the study; the level used here is
  Holm's strictest step, alpha / m, so a comparison reaches the stated power whatever the
  other comparisons show.
So with a share z of identical answers, the number k of questions that differ is binomial
(n, 1 - z); given k, the test is taken as a t test on those k differences (the permutation
test of the mean has the t test's power to within Monte Carlo error on scores like the study's)
at the largest level it can attain, alpha / m rounded down to its step. Differences that are
not zero have SD `sd_nonzero` around the change / (1 - z). `scripts/calibrate_stats.py` checks
the figures against simulated studies (BENCHMARKS.md, issue 19).

Questions that share a source document (evaluate/clustered.py) are tested a document at a time:
the variance of the mean grows by the design effect (the noncentrality shrinks by its square
root), and the sign-flip test flips G clusters, so its steps are 2 / 2**G' and its degrees of
freedom G' - 1 for the G' clusters with a differing question (expected from the k differing
questions spread over G clusters of n / G questions each, at most k). Planning more questions
keeps this run's questions per document, and so its design effect.

The spreads come from an earlier run of the same kind of study (`--pilot RUN`) or, without
one, from DEFAULT_VARIANCE, which is stated wherever it is used.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

DEFAULT_POWER = 0.8
DEFAULT_ALPHA = 0.05
# The most questions `questions_needed` looks at before it says a target is out of reach.
MAX_QUESTIONS = 1_000_000
# Binomial counts of differing questions beyond this many standard deviations from the mean
# carry no weight worth computing.
_BINOMIAL_SPAN = 8.0


@dataclass(frozen=True)
class Spread:
    """How one comparison's per-question panel differences spread, in points of the judges' 0-10
    scale: the SD of the differences that are not zero, the share of exact zeros (identical
    answers), and the first arm's panel level (the base of a % change)."""

    sd_nonzero: float
    zero_share: float
    base_level: float
    design_effect: float = 1.0
    questions_per_cluster: float = 1.0


@dataclass(frozen=True)
class VarianceSource:
    """Where a plan's spreads come from: per comparison (arm_a, arm_b) when a pilot measured it,
    else `default`; `source` says which in words."""

    source: str
    default: Spread
    by_comparison: dict[tuple[str, str], Spread] = field(default_factory=dict)

    def spread(self, arm_a: str, arm_b: str) -> Spread:
        return self.by_comparison.get((arm_a, arm_b), self.default)


# Without a pilot: a spread a little above the demo's own comparisons (their differences have SDs
# of 1.1 to 1.9 points and no question answered alike by the two arms), and a mid-scale base.
DEFAULT_VARIANCE = VarianceSource(
    "a stated default (no pilot run): SD 2.0 points of the per-question differences, no question answered alike in both "
    "arms, a base level of 5.0 points",
    Spread(2.0, 0.0, 5.0),
)


def _differing_counts(n: int, zero_share: float) -> tuple[np.ndarray, np.ndarray]:
    """The numbers k of questions that differ worth weighing, and their binomial weights."""
    from scipy.stats import binom

    if zero_share <= 0:
        return np.array([n]), np.array([1.0])
    mean, sd = n * (1 - zero_share), math.sqrt(n * zero_share * (1 - zero_share))
    low, high = max(2, int(mean - _BINOMIAL_SPAN * sd)), min(n, int(math.ceil(mean + _BINOMIAL_SPAN * sd)))
    counts = np.arange(low, high + 1)
    return counts, binom.pmf(counts, n, 1 - zero_share)


def _test_units(counts: np.ndarray, n: int, n_clusters: int | None) -> np.ndarray:
    """The independent units the test flips when k = `counts` questions differ: k itself, or
    with G clusters of n / G questions the clusters expected to hold a differing one (at most k)."""
    if n_clusters is None or n_clusters >= n:
        return counts
    size = n / n_clusters
    holding = np.floor(n_clusters * (1.0 - (1.0 - counts / n) ** size) + 1e-9).astype(np.int64)
    return np.minimum(counts, holding)


def _attainable_levels(counts: np.ndarray, level: float) -> np.ndarray:
    """`level` rounded down to the step 2 / 2**k of a sign-flip test on k differences (0: it
    can never reject)."""
    steps = np.ldexp(2.0, -counts)  # 0 beyond a thousand questions: the level itself is attainable
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(steps > 0, np.floor(level / steps * (1 + 1e-12)) * steps, level)


def power(
    difference: float,
    sd_nonzero: float,
    n: int,
    n_comparisons: int = 1,
    zero_share: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
    design_effect: float = 1.0,
    n_clusters: int | None = None,
) -> float:
    """The probability that the paired test over n questions (in `n_clusters` clusters whose
    design effect is `design_effect`, when they share source documents), at level
    alpha / n_comparisons, finds a true mean change `difference` (see the module docstring)."""
    from scipy.stats import nct, t

    counts, weights = _differing_counts(n, zero_share)
    units = _test_units(counts, n, n_clusters)
    levels = _attainable_levels(units, alpha / n_comparisons)
    possible = (levels > 0) & (units >= 2)
    if not possible.any():
        return 0.0
    counts, weights, levels, units = counts[possible], weights[possible], levels[possible], units[possible]
    if sd_nonzero == 0:
        return float(weights.sum()) if difference != 0 else 0.0
    critical = t.isf(levels / 2.0, units - 1)
    noncentrality = difference / (1 - zero_share) * np.sqrt(counts / design_effect) / sd_nonzero
    # the lower tail as the upper tail of -T: scipy's nct.cdf returns NaN far in that tail
    rejected = nct.sf(critical, units - 1, noncentrality) + nct.sf(critical, units - 1, -noncentrality)
    return float(np.sum(weights * rejected))


def power_ceiling(
    n: int, n_comparisons: int = 1, zero_share: float = 0.0, alpha: float = DEFAULT_ALPHA, n_clusters: int | None = None
) -> float:
    """The power however large the change: the chance that enough questions (or clusters)
    differ for the test to clear alpha / n_comparisons at all."""
    counts, weights = _differing_counts(n, zero_share)
    units = _test_units(counts, n, n_clusters)
    return float(np.sum(weights[(_attainable_levels(units, alpha / n_comparisons) > 0) & (units >= 2)]))


@functools.cache
def _unit_detectable(
    n: int, n_comparisons: int, zero_share: float, target: float, alpha: float, design_effect: float, n_clusters: int | None
) -> float:
    """`detectable_difference` for sd_nonzero = 1 (it scales with the spread)."""
    from scipy.optimize import brentq

    if power_ceiling(n, n_comparisons, zero_share, alpha, n_clusters) < target:
        return math.inf

    def gap(d: float) -> float:
        return power(d, 1.0, n, n_comparisons, zero_share, alpha, design_effect, n_clusters) - target

    upper = 4.0
    while gap(upper) < 0:
        upper *= 2.0
    return float(brentq(gap, 0.0, upper, xtol=1e-9))


def detectable_difference(
    sd_nonzero: float,
    n: int,
    n_comparisons: int = 1,
    zero_share: float = 0.0,
    target_power: float = DEFAULT_POWER,
    alpha: float = DEFAULT_ALPHA,
    design_effect: float = 1.0,
    n_clusters: int | None = None,
) -> float:
    """The smallest true mean change (in the units of `sd_nonzero`) that the paired test over n
    questions (in `n_clusters` clusters of this `design_effect`, when they share documents)
    finds with probability `target_power` at level alpha / n_comparisons.

    math.inf when no change reaches that power (too few questions differ for the test ever to
    clear the level often enough: see `power_ceiling`), whatever the spread; NaN with fewer
    than 2 questions, no comparison, no valid zero share or otherwise an unknown spread; 0 when
    the differing questions all differ alike.
    """
    if n < 2 or n_comparisons < 1 or not 0 <= zero_share < 1 or not design_effect >= 1:  # False for NaN too
        return math.nan
    clusters = None if n_clusters is None or n_clusters >= n else int(n_clusters)
    unit = _unit_detectable(
        int(n), int(n_comparisons), round(float(zero_share), 6), float(target_power), float(alpha), round(float(design_effect), 6), clusters
    )
    if unit == math.inf or not math.isfinite(sd_nonzero):
        return unit if unit == math.inf else math.nan
    return unit * sd_nonzero


def questions_needed(
    sd_nonzero: float,
    target_diff: float,
    n_comparisons: int = 1,
    zero_share: float = 0.0,
    target_power: float = DEFAULT_POWER,
    alpha: float = DEFAULT_ALPHA,
    design_effect: float = 1.0,
    questions_per_cluster: float = 1.0,
) -> int | None:
    """The fewest questions (at least 2) whose `detectable_difference` is at most `target_diff`;
    None when the target is not positive or needs more than MAX_QUESTIONS. Questions that share
    documents keep `questions_per_cluster` and `design_effect` at every size."""
    if not (target_diff > 0 and math.isfinite(sd_nonzero)):
        return None

    def enough(n: int) -> bool:
        clusters = max(1, round(n / questions_per_cluster)) if questions_per_cluster > 1 else None
        found = detectable_difference(sd_nonzero, n, n_comparisons, zero_share, target_power, alpha, design_effect, clusters)
        return found <= target_diff

    high = 2
    while not enough(high):
        if high >= MAX_QUESTIONS:
            return None
        high = min(2 * high, MAX_QUESTIONS)
    low = high // 2  # not enough (or below 2)
    while high - low > 1:
        middle = (low + high) // 2
        if middle >= 2 and enough(middle):
            high = middle
        else:
            low = middle
    return high
