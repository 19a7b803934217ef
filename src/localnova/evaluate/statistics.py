"""Statistics on judge scores: bootstrap intervals, paired tests, Holm correction.

Pure functions on numbers (numpy and scipy only, no model code), so each one can be checked
against an independent reference. The unit of resampling everywhere is the *question*: the
study's population is the set of questions a team might ask, so intervals and tests say how
far the result would move with another draw of questions, not another draw of judge noise.

A level (one arm's mean) gets an *expanded* percentile bootstrap interval (`interval_tails`):
the plain percentile interval covers about 90% instead of 95% at 10 questions. A change
between two arms gets a paired t interval (`paired_change`): with many questions answered
alike, the bootstrap's discrete resamples made even the expanded interval too narrow. Both
paired tests are exact or permutation-referenced, never a normal approximation that zeros or
ties would make too optimistic. `scripts/calibrate_stats.py` checks all of it on simulated
studies (BENCHMARKS.md, issue 19).

Input rows (`ScoreRow`, `GenerationRow`) may be these dataclasses, any object with the same
attribute names, or dicts with the same keys; `score_rows_from` and `generation_rows_from`
turn any of them into the dataclasses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from localnova.config import BASE_ARM
from localnova.evaluate.clustered import cluster_labels, cluster_sums, mean_variance

# Above this many pairs the sign-flip test samples sign patterns instead of enumerating all
# 2**n of them (2**16 = 65,536 patterns is still instant).
EXACT_PERMUTATION_MAX_N = 16

# Relative tolerance when comparing a permuted statistic to the observed one: sign patterns
# that give mathematically equal sums can differ in the last bit, and must count as ties.
_TIE_TOLERANCE = 1e-9

# Up to this many non-zero differences the signed-rank p comes from the statistic's exact
# distribution (a convolution over the ranks, about n**3 / 2 operations); above it, from the
# normal approximation with the tie correction, whose error there is far below any p that
# would change a conclusion.
EXACT_SIGNED_RANK_MAX_N = 400

# Below this base level (points on the judges' 0-10 scale, a tenth of it) a % change mostly
# measures how small the base is (a base of 0.1 turns +2.9 points into +2900%): the report then
# gives the change in points only.
PCT_MIN_BASE = 1.0


@dataclass(frozen=True)
class ScoreRow:
    """One judge's verdict on one answer; `score` None means the reply failed to parse."""

    model: str
    arm: str
    question_id: str
    judge: str
    score: float | None


@dataclass(frozen=True)
class GenerationRow:
    """One generated answer's cost: end-to-end latency and token counts."""

    model: str
    arm: str
    question_id: str
    latency_ms: float
    input_tokens: int
    output_tokens: int


def _get(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


class ScoreRows(list):
    """A list of `ScoreRow` that `score_rows_from` made (checked for duplicates): handed back to
    it, it is returned as it is, so the stages of a summary do not coerce the rows again."""


def score_rows_from(rows: Iterable[Any]) -> ScoreRows:
    """Coerce dicts or attribute objects to `ScoreRow`; NaN scores count as failures (None).

    Raises ValueError on two rows for the same (model, arm, question_id, judge): one answer
    has one verdict per judge, and a duplicate would silently weigh a question twice.
    """
    if isinstance(rows, ScoreRows):
        return rows
    out = ScoreRows()
    seen: set[tuple[str, str, str, str]] = set()
    for row in rows:
        # attributes read directly from a ScoreRow: the generic lookup was most of the time here
        fields = (row.model, row.arm, row.question_id, row.judge, row.score) if isinstance(row, ScoreRow) else None
        model, arm, question_id, judge, raw = fields or (_get(row, name) for name in ("model", "arm", "question_id", "judge", "score"))
        score = None if raw is None else float(raw)
        item = ScoreRow(str(model), str(arm), str(question_id), str(judge), None if score is None or math.isnan(score) else score)
        key = (item.model, item.arm, item.question_id, item.judge)
        if key in seen:
            raise ValueError(f"duplicate score row for model/arm/question/judge {key}")
        seen.add(key)
        out.append(item)
    return out


def generation_rows_from(rows: Iterable[Any]) -> list[GenerationRow]:
    """Coerce dicts or attribute objects to `GenerationRow`."""
    return [
        GenerationRow(
            model=str(_get(row, "model")),
            arm=str(_get(row, "arm")),
            question_id=str(_get(row, "question_id")),
            latency_ms=float(_get(row, "latency_ms")),
            input_tokens=int(_get(row, "input_tokens")),
            output_tokens=int(_get(row, "output_tokens")),
        )
        for row in rows
    ]


def ordered_arms(arms: Iterable[str], base_arm: str = BASE_ARM) -> list[str]:
    """Arms in order of first appearance, with `base_arm` moved to the front if present."""
    unique = list(dict.fromkeys(arms))
    return ([base_arm] if base_arm in unique else []) + [a for a in unique if a != base_arm]


def _resample_statistic(samples: np.ndarray, statistic: Callable[..., Any]) -> np.ndarray:
    """Apply `statistic` to each row of a (n_resamples, n) array, vectorised when it can be."""
    try:
        values = np.asarray(statistic(samples, axis=-1), dtype=float)
        if values.shape == samples.shape[:1]:
            return values
    except TypeError:
        pass
    return np.array([float(statistic(row)) for row in samples])


@functools.cache
def interval_tails(n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The quantile levels (low, high) of the expanded percentile bootstrap interval for n values.

    A percentile interval from n values is too narrow by about the factors that separate a
    normal interval from Student's t with n - 1 degrees of freedom and the plug-in variance
    from the unbiased one (Hesterberg, "What teachers should know about the bootstrap", 2015).
    So the tail taken is the normal tail beyond z = sqrt(n / (n - 1)) * t_{n-1}((1 + confidence) / 2)
    instead of (1 - confidence) / 2: 0.0086 instead of 0.025 at n = 10, 0.024 at n = 200. The
    interval keeps the bootstrap's asymmetry. NaN for n < 2.
    """
    from scipy.stats import norm, t

    if n < 2:
        return (math.nan, math.nan)
    tail = float(norm.sf(math.sqrt(n / (n - 1)) * t.ppf((1.0 + confidence) / 2.0, n - 1)))
    return (tail, 1.0 - tail)


def bootstrap_ci(
    values: Sequence[float],
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    statistic: Callable[..., Any] = np.mean,
) -> tuple[float, float, float]:
    """Expanded percentile bootstrap interval: (estimate, low, high).

    `estimate` is `statistic(values)`; low/high are the `interval_tails(n, confidence)`
    quantiles (linear interpolation) of the statistic over `n_resamples` resamples of the
    values with replacement, drawn from numpy's default_rng(seed), so equal inputs give equal
    intervals. With fewer than 2 values the interval is undefined: low and high are NaN
    (and the estimate too when there are no values).
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (math.nan, math.nan, math.nan)
    estimate = float(statistic(data))
    if data.size < 2:
        return (estimate, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, data.size, size=(n_resamples, data.size))
    resampled = _resample_statistic(data[indices], statistic)
    low, high = np.quantile(resampled, interval_tails(data.size, confidence))
    return (estimate, float(low), float(high))


def cluster_bootstrap_ci(
    values_by_question: Mapping[str, float],
    clusters: Mapping[str, str] | None,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """The mean of the values with the expanded percentile bootstrap interval over clusters
    (`interval_tails` at the number of clusters): each resample draws G clusters
    with replacement and takes the mean of all their questions. Without clusters (or only
    single-question ones) it is `bootstrap_ci` over the values, exactly."""
    questions = list(values_by_question)
    values = np.array([values_by_question[q] for q in questions], dtype=float)
    labels = cluster_labels(questions, clusters)
    if labels is None:
        return bootstrap_ci(values, n_resamples, seed, confidence)
    sums, sizes = cluster_sums(values, labels)
    estimate = float(values.mean())
    if sums.size < 2:
        return (estimate, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, sums.size, size=(n_resamples, sums.size))
    resampled = sums[drawn].sum(axis=1) / sizes[drawn].sum(axis=1)
    low, high = np.quantile(resampled, interval_tails(int(sums.size), confidence))
    return (estimate, float(low), float(high))


def shared_questions(a_by_question: Mapping[str, float], b_by_question: Mapping[str, float]) -> list[str]:
    """The questions present in both maps, in the stable (sorted id) order `paired_arrays` uses."""
    return sorted(set(a_by_question) & set(b_by_question))


def paired_arrays(a_by_question: Mapping[str, float], b_by_question: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Values of the questions present in both maps, in a stable (sorted id) order."""
    shared = shared_questions(a_by_question, b_by_question)
    a = np.array([a_by_question[q] for q in shared], dtype=float)
    b = np.array([b_by_question[q] for q in shared], dtype=float)
    return a, b


@dataclass(frozen=True)
class PairedChange:
    """An arm against the base on the same questions: the change in points (arm - base) and in
    % of the base mean, each with its paired t interval; pct is NaN below PCT_MIN_BASE.
    n_clusters is the number of independent units the intervals rest on (n when the questions
    are independent, else their source documents)."""

    n: int
    base_mean: float
    arm_mean: float
    diff: float
    diff_low: float
    diff_high: float
    pct: float
    pct_low: float
    pct_high: float
    n_clusters: int = 0


def paired_change(
    base_by_question: Mapping[str, float],
    arm_by_question: Mapping[str, float],
    confidence: float = 0.95,
    clusters: Mapping[str, str] | None = None,
) -> PairedChange:
    """The arm's change against the base, over the questions present in both maps.

    diff = mean(arm) - mean(base), with the paired t interval: diff +/- t_{n-1} * SD(d) / sqrt(n)
    over the per-question differences d. pct = 100 * (r - 1) for the ratio of means
    r = mean(arm) / mean(base), with the t interval on r's linearised standard error,
    SD(arm - r * base) / (mean(base) * sqrt(n)). On studies shaped like the store's (many
    questions answered alike, a few questions in all) these cover 94-96%, where percentile
    bootstrap intervals of the same changes covered 89-93% (BENCHMARKS.md, issue 19). pct and
    its interval are NaN when the base mean is below PCT_MIN_BASE (a % of almost nothing; the
    change in points still stands). Everything is NaN without shared questions, the intervals
    with fewer than 2.

    With `clusters` ({question_id: cluster}, e.g. source documents) that put several questions
    together, both intervals are cluster-robust (`clustered.mean_variance`, CR2) with G - 1
    degrees of freedom for G clusters; NaN below 2 clusters.
    """
    from scipy.stats import t

    shared = shared_questions(base_by_question, arm_by_question)
    base, arm = paired_arrays(base_by_question, arm_by_question)
    n = base.size
    if n == 0:
        return PairedChange(0, *([math.nan] * 8))
    base_mean, arm_mean = float(base.mean()), float(arm.mean())
    with_pct = base_mean >= PCT_MIN_BASE
    diff = arm_mean - base_mean
    pct = 100.0 * diff / base_mean if with_pct else math.nan
    diff_variance, units = mean_variance(arm - base, cluster_labels(shared, clusters))
    if units < 2:
        return PairedChange(n, base_mean, arm_mean, diff, math.nan, math.nan, pct, math.nan, math.nan, units)
    quantile = float(t.ppf((1.0 + confidence) / 2.0, units - 1))
    diff_half = quantile * math.sqrt(diff_variance)
    pct_half = math.nan
    if with_pct:
        residual_variance, _ = mean_variance(arm - arm_mean / base_mean * base, cluster_labels(shared, clusters))
        pct_half = 100.0 * quantile * math.sqrt(residual_variance) / base_mean
    return PairedChange(n, base_mean, arm_mean, diff, diff - diff_half, diff + diff_half, pct, pct - pct_half, pct + pct_half, units)


def pct_change_vs_base(
    base_by_question: Mapping[str, float],
    arm_by_question: Mapping[str, float],
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(pct, low, high) of `paired_change`: the % change of the arm's mean against the base's
    over the questions both have, with its paired t interval; NaN where undefined or refused."""
    change = paired_change(base_by_question, arm_by_question, confidence)
    return (change.pct, change.pct_low, change.pct_high)


@dataclass(frozen=True)
class PairedTest:
    """Two paired tests of b against a; mean_diff = mean(b - a) over the n pairs, n_clusters the
    independent units the tests flip and rank (n without clusters)."""

    n: int
    mean_diff: float
    wilcoxon_p: float
    permutation_p: float
    n_clusters: int = 0


def signed_rank_p(differences: Sequence[float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test, exact and conditional on the data's ties.

    Zero differences are dropped (Wilcoxon's rule) and the rest ranked by |d|, ties sharing
    their mid-rank. Under the null each non-zero difference is as likely to be negative as
    positive, so the sum of the positive ranks is the sum of a random half-chance subset of the
    observed ranks: its distribution is computed exactly by convolution (mid-ranks are
    multiples of 1/2, so twice a rank is an integer), and p is the probability of a sum at least
    as far from its centre as the observed one. This is the sign-flip permutation test of the
    signed ranks: no normal approximation, which zeros and ties made too optimistic (five +1s
    among 25 zeros gave 0.025 where the exact answer is 2 / 2**5 = 0.0625). Above
    EXACT_SIGNED_RANK_MAX_N non-zero differences: the normal approximation, mean sum(r) / 2 and
    variance sum(r**2) / 4 (the tie-corrected variance), without continuity correction.
    All differences zero: p = 1 (no evidence of any difference).
    """
    from scipy.stats import norm, rankdata

    values = np.asarray(differences, dtype=float)
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return 1.0
    doubled_ranks = np.rint(2.0 * rankdata(np.abs(nonzero))).astype(np.int64)
    total = int(doubled_ranks.sum())
    observed = int(doubled_ranks[nonzero > 0].sum())
    if nonzero.size > EXACT_SIGNED_RANK_MAX_N:
        variance = float(np.sum(doubled_ranks.astype(float) ** 2)) / 4.0
        return float(min(1.0, 2.0 * norm.sf(abs(observed - total / 2.0) / math.sqrt(variance))))
    probabilities = np.zeros(total + 1)
    probabilities[0] = 1.0
    reach = 0  # the largest sum reachable so far
    for rank in doubled_ranks:
        shifted = probabilities[: reach + 1] * 0.5
        probabilities[: reach + 1] *= 0.5
        probabilities[rank : rank + reach + 1] += shifted
        reach += int(rank)
    # twice each sum's distance from the centre, in integers: ties with the observed are exact
    distance = np.abs(2 * np.arange(total + 1) - total)
    return float(min(1.0, probabilities[distance >= abs(2 * observed - total)].sum()))


def _sign_flip_p(differences: np.ndarray, n_permutations: int, seed: int) -> float:
    """Two-sided paired permutation p-value for the mean difference (sign flips).

    Under the null each difference is as likely to have either sign. p is the share of sign
    patterns whose |sum| reaches the observed |sum|: over all 2**n patterns when
    n <= EXACT_PERMUTATION_MAX_N, else (1 + hits) / (1 + n_permutations) over random patterns,
    which never reports p = 0 from a finite sample.
    """
    n = differences.size
    total = differences.sum()
    observed = abs(total)
    threshold = observed - _TIE_TOLERANCE * max(1.0, observed)
    if n <= EXACT_PERMUTATION_MAX_N:
        # Row k of the table is the binary expansion of k: every sign pattern exactly once.
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        signs = 1.0 - 2.0 * bits
        return float(np.mean(np.abs(np.einsum("ij,j->i", signs, differences)) >= threshold))
    rng = np.random.default_rng(seed)
    hits = 0
    remaining = n_permutations
    chunk_rows = max(1, 1_000_000 // n)  # bound memory for large n
    while remaining > 0:
        rows = min(chunk_rows, remaining)
        # a flipped sign takes 2 d away from the sum: sum(s * d) = sum(d) - 2 * sum(flipped * d).
        # einsum rather than @: BLAS spreads the product over threads that, on a machine whose
        # cores are busy, wait for each other (22 ms against einsum's 0.3, BENCHMARKS.md issue 19)
        flipped = rng.random((rows, n)) < 0.5
        hits += int(np.sum(np.abs(total - 2.0 * np.einsum("ij,j->i", flipped, differences)) >= threshold))
        remaining -= rows
    return (1 + hits) / (1 + n_permutations)


def paired_tests(
    a: Sequence[float], b: Sequence[float], n_permutations: int = 10000, seed: int = 0, labels: np.ndarray | None = None
) -> PairedTest:
    """Wilcoxon signed-rank and sign-flip permutation test on paired samples a and b.

    Both tests are two-sided on the differences b - a. The Wilcoxon p is exact, conditional on
    ties, with zero differences dropped (`signed_rank_p`); all-zero differences give p = 1. The
    permutation test of the mean difference is described in `_sign_flip_p` (exact for n <= 16,
    else Monte Carlo with `seed`). With no pairs every field but n is NaN.

    With cluster `labels` (`clustered.cluster_labels`, one per pair), a cluster is the unit:
    the permutation test flips the sign of each cluster's sum of differences (exact up to 16
    clusters), and the signed-rank test ranks the clusters' mean differences.
    """
    a_values = np.asarray(a, dtype=float)
    b_values = np.asarray(b, dtype=float)
    if a_values.shape != b_values.shape or a_values.ndim != 1:
        raise ValueError(f"paired samples need equal 1-d shapes, got {a_values.shape} and {b_values.shape}")
    differences = b_values - a_values
    if differences.size == 0:
        return PairedTest(n=0, mean_diff=math.nan, wilcoxon_p=math.nan, permutation_p=math.nan)
    if labels is not None:
        sums, sizes = cluster_sums(differences, labels)
        return PairedTest(
            n=int(differences.size),
            mean_diff=float(differences.mean()),
            wilcoxon_p=signed_rank_p(sums / sizes),
            permutation_p=_sign_flip_p(sums, n_permutations, seed),
            n_clusters=int(sums.size),
        )
    return PairedTest(
        n=int(differences.size),
        mean_diff=float(differences.mean()),
        wilcoxon_p=signed_rank_p(differences),
        permutation_p=_sign_flip_p(differences, n_permutations, seed),
        n_clusters=int(differences.size),
    )


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m finite p-values sorted ascending, the k-th (k from 0) becomes
    max over j <= k of min(1, (m - j) * p_j): step-down, monotone, capped at 1, and never
    below the raw p. NaN entries are not part of the family and stay NaN.
    """
    raw = np.asarray(pvalues, dtype=float)
    adjusted = np.full(raw.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(raw))
    m = finite.size
    if m == 0:
        return adjusted.tolist()
    order = finite[np.argsort(raw[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * raw[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()
