"""What a study can detect: the smallest change a paired comparison finds with 80% power, and
how many questions a target change needs.

A comparison of two arms is a paired test on the per-question panel differences. Its power is
computed as the paired t test's, from the noncentral t distribution with n - 1 degrees of
freedom: the permutation test the report shows tests the same mean difference and has, on
scores like the study's, the same power to within Monte Carlo error (`scripts/calibrate_stats.py`
checks it, BENCHMARKS.md issue 19). Holm adjusts the report's p-values over every comparison of
the study; the level used here is Holm's strictest step, alpha / m, so a comparison reaches the
stated power whatever the other comparisons show.

The spread of the differences comes from an earlier run of the same kind of study (`--pilot
RUN`) or, without one, from DEFAULT_VARIANCE, which is stated wherever it is used.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

DEFAULT_POWER = 0.8
DEFAULT_ALPHA = 0.05
# The most questions `questions_needed` looks at before it says a target is out of reach.
MAX_QUESTIONS = 1_000_000


@dataclass(frozen=True)
class Spread:
    """The standard deviation of the per-question panel differences of one comparison, and the
    base arm's panel level, in points of the judges' 0-10 scale."""

    sd_diff: float
    base_level: float


@dataclass(frozen=True)
class VarianceSource:
    """Where a plan's spreads come from: per comparison (arm_a, arm_b) when a pilot measured it,
    else `default`; `source` says which in words."""

    source: str
    default: Spread
    by_comparison: dict[tuple[str, str], Spread] = field(default_factory=dict)

    def spread(self, arm_a: str, arm_b: str) -> Spread:
        return self.by_comparison.get((arm_a, arm_b), self.default)


# Without a pilot: per-question differences with an SD of 2 points around a base of 5 (the demo's
# rag against base, 60 questions, has an interval of +/- 0.5 points, i.e. an SD near 2).
DEFAULT_VARIANCE = VarianceSource(
    "a stated default (no pilot run): SD of the per-question differences 2.0 points, base level 5.0 points",
    Spread(2.0, 5.0),
)


def _power(noncentrality: float, df: int, critical: float) -> float:
    """P(|T| > critical) for T noncentral t; the lower tail as the upper tail of -T (scipy's
    nct.cdf returns NaN far in that tail, its sf does not)."""
    from scipy.stats import nct

    return float(nct.sf(critical, df, noncentrality) + nct.sf(critical, df, -noncentrality))


@functools.cache
def _noncentrality(n: int, n_comparisons: int, power: float, alpha: float) -> float:
    """The noncentrality at which a two-sided t test with n - 1 degrees of freedom at level
    alpha / n_comparisons rejects with probability `power`."""
    from scipy.optimize import brentq
    from scipy.stats import t

    df = n - 1
    critical = float(t.isf(alpha / n_comparisons / 2.0, df))
    # for a power above about 1/2 the noncentrality lies above the critical value, and below it
    # plus a few standard deviations of T; the bracket widens until it holds the root
    lower = critical if _power(critical, df, critical) < power else 0.0
    upper = critical + 4.0
    while _power(upper, df, critical) < power:
        lower, upper = upper, 2.0 * upper
    return float(brentq(lambda nc: _power(nc, df, critical) - power, lower, upper, xtol=1e-9))


def detectable_difference(
    sd_diff: float, n: int, n_comparisons: int = 1, power: float = DEFAULT_POWER, alpha: float = DEFAULT_ALPHA
) -> float:
    """The smallest true mean difference a paired two-sided test over n questions finds with
    probability `power` at level alpha / n_comparisons, in the units of `sd_diff`.

    It solves P(|T| > t_crit) = power for T noncentral t with n - 1 degrees of freedom and
    noncentrality delta * sqrt(n) / sd_diff, t_crit the two-sided critical value. NaN with
    fewer than 2 questions, no comparison or an unknown spread; 0 when the differences do not
    vary at all (any change would show).
    """
    if n < 2 or n_comparisons < 1 or not math.isfinite(sd_diff):
        return math.nan
    if sd_diff == 0:
        return 0.0
    return _noncentrality(int(n), int(n_comparisons), float(power), float(alpha)) * sd_diff / math.sqrt(n)


def questions_needed(
    sd_diff: float, target_diff: float, n_comparisons: int = 1, power: float = DEFAULT_POWER, alpha: float = DEFAULT_ALPHA
) -> int | None:
    """The fewest questions (at least 2) whose `detectable_difference` is at most `target_diff`;
    None when the target is not positive or needs more than MAX_QUESTIONS."""
    if not (target_diff > 0 and math.isfinite(sd_diff)):
        return None

    def enough(n: int) -> bool:
        return detectable_difference(sd_diff, n, n_comparisons, power, alpha) <= target_diff

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
