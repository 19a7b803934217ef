"""Questions that share a source document are not independent: statistics over clusters.

An eval set that records where each question comes from (`doc_ids`) puts several questions on
one document, and what makes one of them easy for an arm (retrieval finds the document, the
adapter saw it in training) tends to hold for its neighbours. Treating such questions as
independent makes intervals too narrow and tests too bold: 6 documents of 10 questions each,
with an intra-document correlation of 0.12 in the arm differences, gave 19% false positives
at a nominal 5% (issue 27). So a study clusters its questions by source document, and:

- a change is read with a cluster-robust t interval: the bias-reduced (CR2) variance of a mean
  over clusters, sum_g S_g**2 / (1 - m_g / n) / n**2 for cluster sums S_g of the residuals and
  cluster sizes m_g, with G - 1 degrees of freedom (Bell and McCaffrey, 2002); with every cluster
  a single question it is the plain paired t interval, to the last digit;
- a paired test flips the sign of a whole cluster at once (the sign-flip test of the cluster
  sums) and ranks cluster means (the signed-rank test), so under the null it is exact at the
  cluster level;
- a level is bootstrapped by resampling clusters;
- power and "questions needed" take the design effect 1 + (sum m_g**2 / n - 1) * ICC, the
  factor by which clustering inflates the variance of a mean (ICC: the one-way ANOVA estimate
  of the intra-cluster correlation, truncated at 0).

A question's cluster is the first document its `doc_ids` names (the one it was written from);
when any question of a run has none, the run's questions are treated as independent, and the
report says so. Pure numpy and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# What a summary says it clustered by, and what it says without a source recorded.
CLUSTER_UNIT = "source document"
INDEPENDENT = "none: the eval set records no source document for its questions, so they are treated as independent"


def clusters_from_items(items: Iterable[Any]) -> dict[str, str] | None:
    """{question_id: its first doc_id} for eval items (EvalItem-like, or dicts with
    question_id and doc_ids); None when any item names no document, or there are no items."""
    clusters: dict[str, str] = {}
    for item in items:
        question_id = item["question_id"] if isinstance(item, Mapping) else item.question_id
        doc_ids = (item.get("doc_ids") if isinstance(item, Mapping) else item.doc_ids) or ()
        if not doc_ids:
            return None
        clusters[str(question_id)] = str(doc_ids[0])
    return clusters or None


def cluster_labels(question_ids: Sequence[str], clusters: Mapping[str, str] | None) -> np.ndarray | None:
    """Integer cluster labels for `question_ids` (a question `clusters` does not know is its own
    cluster); None when there are no clusters or every cluster holds one question, so callers
    can take the independent path, which gives the same numbers."""
    if not clusters:
        return None
    names = [clusters.get(q, f"\0{q}") for q in question_ids]
    codes = {name: index for index, name in enumerate(dict.fromkeys(names))}
    if len(codes) == len(names):
        return None
    return np.array([codes[name] for name in names], dtype=np.int64)


def cluster_sums(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum of the values in each cluster, each cluster's size), clusters in label order."""
    sizes = np.bincount(labels)
    return np.bincount(labels, weights=values)[sizes > 0], sizes[sizes > 0]


def mean_variance(values: np.ndarray, labels: np.ndarray | None) -> tuple[float, int]:
    """(the CR2 cluster-robust variance of the mean of `values`, the number of clusters G);
    without labels, the plain s**2 / n with G = n. NaN variance below 2 clusters."""
    n = values.size
    if labels is None:
        return (float(np.var(values, ddof=1)) / n if n >= 2 else math.nan), n
    sums, sizes = cluster_sums(values - values.mean(), labels)
    if sums.size < 2:
        return math.nan, int(sums.size)
    return float(np.sum(sums**2 / (1.0 - sizes / n))) / n**2, int(sums.size)


@dataclass(frozen=True)
class DesignEffect:
    """How much clustering inflates the variance of a mean: the intra-cluster correlation, the
    size-weighted mean cluster size sum m_g**2 / n, and 1 + (that - 1) * icc."""

    n_clusters: int
    icc: float
    weighted_size: float
    design_effect: float


def design_effect(values: np.ndarray, labels: np.ndarray | None) -> DesignEffect:
    """The one-way ANOVA estimate of the ICC of `values` in their clusters, truncated to
    [0, 1], and the design effect it gives; ICC 0 and design effect 1 without clusters (or
    with no spread within them to measure one against)."""
    n = values.size
    if labels is None or n < 2:
        return DesignEffect(n, 0.0, 1.0, 1.0)
    sums, sizes = cluster_sums(values, labels)
    groups = sizes.size
    weighted = float(np.sum(sizes.astype(float) ** 2)) / n
    if groups < 2 or groups == n:
        return DesignEffect(groups, 0.0, weighted, 1.0)
    means = sums / sizes
    with np.errstate(invalid="ignore", divide="ignore"):  # labels no question has are never read
        own_mean = (np.bincount(labels, weights=values) / np.bincount(labels))[labels]
    within = float(np.sum((values - own_mean) ** 2)) / (n - groups)
    between = float(np.sum(sizes * (means - values.mean()) ** 2)) / (groups - 1)
    size_0 = (n - weighted) / (groups - 1)
    denominator = between + (size_0 - 1.0) * within
    icc = 0.0 if denominator <= 0 else min(1.0, max(0.0, (between - within) / denominator))
    return DesignEffect(groups, icc, weighted, 1.0 + (weighted - 1.0) * icc)


def interval_p(estimate: float, low: float, high: float, df: int, confidence: float = 0.95, null: float = 0.0, beyond: int = 0) -> float:
    """The p-value of the t test whose `confidence` interval, on `df` degrees of freedom, is
    [low, high] around `estimate` (so p < 1 - confidence exactly when the interval leaves `null`
    out). `beyond` +1 (or -1) asks only whether the interval stops short below (above) `null`:
    twice the one-sided p, so that p < 1 - confidence exactly when the interval's upper (lower)
    end is short of it. NaN without a finite interval of some width."""
    from scipy.stats import t

    if not (math.isfinite(low) and math.isfinite(high) and high > low and df >= 1):
        return math.nan
    standard_error = (high - low) / (2.0 * float(t.ppf((1.0 + confidence) / 2.0, df)))
    statistic = (estimate - null) / standard_error
    if beyond:
        return float(min(1.0, 2.0 * t.cdf(beyond * statistic, df)))
    return float(2.0 * t.sf(abs(statistic), df))


def mean_interval(
    values_by_question: Mapping[str, float], confidence: float = 0.95, clusters: Mapping[str, str] | None = None
) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of the mean of the values, cluster-robust (CR2, G - 1
    degrees of freedom) where `clusters` put several questions together; NaN bounds below 2
    units."""
    from scipy.stats import t

    questions = sorted(values_by_question)
    values = np.array([values_by_question[q] for q in questions], dtype=float)
    if values.size == 0:
        return (math.nan, math.nan, math.nan)
    variance, units = mean_variance(values, cluster_labels(questions, clusters))
    mean = float(values.mean())
    if units < 2 or not math.isfinite(variance):
        return (mean, math.nan, math.nan)
    half = float(t.ppf((1.0 + confidence) / 2.0, units - 1)) * math.sqrt(variance)
    return (mean, mean - half, mean + half)
