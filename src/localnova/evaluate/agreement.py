"""How far the judges of the headline panel agree: rank correlations and Krippendorff's alpha.

A panel is worth its mean only if its judges measure the same thing. Agreement is measured
over the headline judges only (a judge the gate left out says nothing about the panel's
figures), and on ranks, since the judges work on different scales (token F1 near 2, an LLM
judge near 8) and the panel compares answers, not scales. Three views:
- per answer: Spearman and Kendall between each pair of judges, on the answers both scored;
- per arm: the same correlations on each judge's mean score per model x arm, i.e. whether
  the judges would rank the arms (the study's conclusion) the same way;
- overall: Krippendorff's alpha at the interval level on each judge's ranks of the answers
  every judge scored (two judges that order the answers alike agree fully, whatever their
  scales), and, labelled as such, on the raw scores of all answers two judges scored, where
  judges on different scales disagree by their offset; computed here from its definition in
  memory linear in answers x judges (see `interval_alpha`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations, permutations
from typing import Any

import numpy as np

from localnova.evaluate.statistics import score_rows_from

AnswerKey = tuple[str, str, str]  # (model, arm, question_id)

# Up to this many items the Spearman p-value comes from all n! orderings: scipy's
# t-approximation is meaningless for the handful of model x arm cells a study has (it
# reports p = 0 for a perfect ranking of 3 arms, where the exact answer is 1/3).
EXACT_SPEARMAN_MAX_N = 7


@dataclass(frozen=True)
class JudgePairCorrelation:
    """Rank correlation between two judges over n shared items (NaN when undefined)."""

    judge_a: str
    judge_b: str
    n: int
    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float


@dataclass(frozen=True)
class JudgeAgreement:
    """Agreement of a panel; see the module docstring for what each field measures.

    krippendorff_alpha is on ranks over the n_answers_scored_by_all answers every judge scored;
    krippendorff_alpha_raw on raw scores over the n_answers_with_two_scores answers two or more
    judges scored, out of n_answers."""

    judges: list[str]
    per_answer: list[JudgePairCorrelation]
    arm_ranking: list[JudgePairCorrelation]
    krippendorff_alpha: float
    n_answers: int
    n_answers_with_two_scores: int
    krippendorff_alpha_raw: float = math.nan
    n_answers_scored_by_all: int = 0


def exact_spearman_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of Spearman's rho by enumerating every pairing of a with b.

    p is the share of the n! orderings of a whose |rho| reaches the observed |rho|.
    """
    from scipy.stats import rankdata

    rank_a = rankdata(a)
    rank_b = rankdata(b)
    centred_b = rank_b - rank_b.mean()
    orderings = np.array(list(permutations(rank_a)))
    centred = orderings - orderings.mean(axis=1, keepdims=True)
    rho = (centred @ centred_b) / (np.linalg.norm(centred, axis=1) * np.linalg.norm(centred_b))
    observed = abs(rho[0])  # permutations() yields the original order first
    return float(np.mean(np.abs(rho) >= observed - 1e-9))


def rank_correlation(judge_a: str, judge_b: str, a_by_item: Mapping[Any, float], b_by_item: Mapping[Any, float]) -> JudgePairCorrelation:
    """Spearman and Kendall (tau-b, scipy defaults) over the items both judges scored.

    Correlations are NaN with fewer than 2 shared items or when either side is constant
    (a judge that gives every answer the same score ranks nothing). Spearman's p is exact
    (`exact_spearman_p`) up to EXACT_SPEARMAN_MAX_N items, scipy's approximation above;
    Kendall's p is scipy's (exact for small samples without ties).
    """
    from scipy.stats import kendalltau, spearmanr

    shared = sorted(set(a_by_item) & set(b_by_item))
    a = np.array([a_by_item[k] for k in shared], dtype=float)
    b = np.array([b_by_item[k] for k in shared], dtype=float)
    if len(shared) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return JudgePairCorrelation(judge_a, judge_b, len(shared), *([math.nan] * 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny samples warn about approximate p-values
        spearman = spearmanr(a, b)
        kendall = kendalltau(a, b)
    spearman_p = float(spearman.pvalue)
    if len(shared) <= EXACT_SPEARMAN_MAX_N:
        spearman_p = exact_spearman_p(a, b)
    return JudgePairCorrelation(
        judge_a=judge_a,
        judge_b=judge_b,
        n=len(shared),
        spearman=float(spearman.statistic),
        spearman_p=spearman_p,
        kendall=float(kendall.statistic),
        kendall_p=float(kendall.pvalue),
    )


def interval_alpha(reliability: np.ndarray) -> float:
    """Krippendorff's alpha (interval) of a judges x answers matrix with NaN for missing.

    alpha = 1 - D_o / D_e over the pairable values: those of answers that two or more judges
    scored (an answer with one score cannot disagree with anything and drops out). In the
    coincidence-matrix definition every unit u with m_u values adds 1 / (m_u - 1) for each
    ordered pair of its values; with the interval metric (c - k)^2 the sums over value pairs
    collapse, because the squared differences of all ordered pairs of a set of m values are
    2 m times their sum of squares about its mean. So, with n pairable values in all:

        D_o = (2 / n) * sum_u m_u * SS_u / (m_u - 1)      D_e = 2 * SS / (n - 1)

    where SS_u is unit u's sum of squares about its own mean and SS the pooled one. Memory is
    a few arrays the size of the matrix; nothing grows with the number of distinct values
    (the `krippendorff` package builds units x V x V and needs gigabytes for a few hundred
    answers with continuous scores).

    NaN when alpha is undefined: no answer scored by two judges, or a single value overall
    (no disagreement is possible, so there is nothing to be reliable about).
    """
    data = np.asarray(reliability, dtype=float)
    if data.ndim != 2 or data.shape[0] < 2:
        return math.nan
    scored = ~np.isnan(data)
    values_per_answer = scored.sum(axis=0)
    pairable = values_per_answer >= 2
    if not pairable.any():
        return math.nan
    units = data[:, pairable]
    present = scored[:, pairable]
    counts = values_per_answer[pairable].astype(float)
    pooled = units[present]
    if np.ptp(pooled) == 0:
        return math.nan
    filled = np.where(present, units, 0.0)
    unit_means = filled.sum(axis=0) / counts
    # Squares about each unit's own mean (two passes: subtracting first keeps the sums exact
    # enough for scores that sit far from zero).
    unit_squares = np.where(present, (units - unit_means) ** 2, 0.0).sum(axis=0)
    pooled_squares = float(np.sum((pooled - pooled.mean()) ** 2))
    n_pairable = float(counts.sum())
    observed = 2.0 * float(np.sum(counts * unit_squares / (counts - 1.0))) / n_pairable
    expected = 2.0 * pooled_squares / (n_pairable - 1.0)
    return 1.0 - observed / expected


def rank_alpha(reliability: np.ndarray) -> tuple[float, int]:
    """Interval alpha on ranks: over the answers (columns) every judge (row) scored, each
    judge's scores replaced by their mid-ranks among those answers. Returns (alpha, answers)."""
    from scipy.stats import rankdata

    data = np.asarray(reliability, dtype=float)
    complete = data[:, ~np.isnan(data).any(axis=0)] if data.ndim == 2 else np.empty((0, 0))
    if complete.size == 0:
        return math.nan, 0
    return interval_alpha(np.vstack([rankdata(row) for row in complete])), int(complete.shape[1])


def judge_agreement(score_rows: Iterable[Any], judges: Sequence[str] | None = None) -> JudgeAgreement | None:
    """Agreement between `judges` (every judge named in the rows, in order of first appearance,
    when None) on ScoreRow-like rows, or None if fewer than 2 judges.

    A judge whose judgments all failed is kept (its correlations are then NaN). Failed
    judgments (score None) are missing values, never zeros. For the arm ranking each judge's
    cell mean is over the answers that judge scored.
    """
    rows = score_rows_from(score_rows)
    named = list(dict.fromkeys(row.judge for row in rows))
    judges = named if judges is None else [judge for judge in named if judge in set(judges)]
    if len(judges) < 2:
        return None
    answers: list[AnswerKey] = list(dict.fromkeys((r.model, r.arm, r.question_id) for r in rows))
    by_judge: dict[str, dict[AnswerKey, float]] = {judge: {} for judge in judges}
    for row in rows:
        if row.score is not None and row.judge in by_judge:
            by_judge[row.judge][(row.model, row.arm, row.question_id)] = row.score

    cell_means: dict[str, dict[tuple[str, str], float]] = {}
    for judge, scores in by_judge.items():
        per_cell: dict[tuple[str, str], list[float]] = {}
        for (model, arm, _), score in scores.items():
            per_cell.setdefault((model, arm), []).append(score)
        cell_means[judge] = {cell: float(np.mean(v)) for cell, v in per_cell.items()}

    reliability = np.array(
        [[by_judge[judge].get(answer, math.nan) for answer in answers] for judge in judges],
        dtype=float,
    )
    alpha_on_ranks, scored_by_all = rank_alpha(reliability)
    return JudgeAgreement(
        judges=judges,
        per_answer=[rank_correlation(a, b, by_judge[a], by_judge[b]) for a, b in combinations(judges, 2)],
        arm_ranking=[rank_correlation(a, b, cell_means[a], cell_means[b]) for a, b in combinations(judges, 2)],
        krippendorff_alpha=alpha_on_ranks,
        n_answers=len(answers),
        n_answers_with_two_scores=int(np.sum(np.sum(~np.isnan(reliability), axis=0) >= 2)),
        krippendorff_alpha_raw=interval_alpha(reliability),
        n_answers_scored_by_all=scored_by_all,
    )
