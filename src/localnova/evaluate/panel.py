"""How a panel of judges becomes one score per arm, and one paired difference per question.

Judges work on different scales (token F1 near 2, an LLM judge near 8), and any of them can
fail on some answers. Averaging whichever judges happened to score each answer would let
those failures move an answer from one scale to another and make an effect out of nothing. So:

- an arm's level is the mean over judges of each judge's own mean over the answers it scored,
  with a bootstrap interval over questions;
- two arms are compared question by question on the judges that scored *both* answers of that
  question: each side is the mean over those shared judges, and a question no judge scored in
  both arms drops out of the comparison.

With no failures both are the plain mean over judges, the panel score everyone expects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from localnova.evaluate.statistics import score_rows_from

# Resamples per block in `level_ci`: keeps the (resamples x questions) arrays small for
# thousand-question studies.
RESAMPLE_BLOCK = 250

# {question_id: {judge: score}} for one model x arm; only scored judgments appear
CellScores = dict[str, dict[str, float]]

PANEL_RULE = (
    "an arm's panel score is the mean over judges of each judge's mean; arm comparisons use, per question, "
    "only the judges that scored both answers, so one judge's failures cannot shift an answer to another judge's scale"
)


def cell_scores(score_rows: Iterable[Any], judges: Sequence[str] | None = None) -> dict[tuple[str, str], CellScores]:
    """{(model, arm): {question_id: {judge: score}}} over `judges` (all when None); failed
    judgments (score None) are left out, and a question no judge scored is absent."""
    keep = None if judges is None else set(judges)
    cells: dict[tuple[str, str], CellScores] = {}
    for row in score_rows_from(score_rows):
        cell = cells.setdefault((row.model, row.arm), {})
        if row.score is None or (keep is not None and row.judge not in keep):
            continue
        cell.setdefault(row.question_id, {})[row.judge] = float(row.score)
    return cells


def _matrix(cell: CellScores) -> np.ndarray:
    """(questions x judges) array, NaN where a judge did not score the question."""
    judges = sorted({judge for scores in cell.values() for judge in scores})
    return np.array([[cell[q].get(judge, math.nan) for judge in judges] for q in sorted(cell)], dtype=float).reshape(len(cell), len(judges))


def _level(matrix: np.ndarray) -> np.ndarray | float:
    """Mean over judges of each judge's mean over the rows it scored; over the last two axes."""
    scored = ~np.isnan(matrix)
    counts = scored.sum(axis=-2)
    sums = np.where(scored, matrix, 0.0).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        judge_means = sums / counts
    judged = counts > 0
    n_judges = judged.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(judged, judge_means, 0.0).sum(axis=-1) / n_judges


def level_ci(cell: CellScores, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """The arm's panel level and its percentile bootstrap interval over questions.

    Resampling draws question indices from numpy's default_rng(seed) exactly as
    `statistics.bootstrap_ci` does, so with one judge (or none failing) the figures equal
    `bootstrap_ci` of the per-answer panel means."""
    matrix = _matrix(cell)
    n = matrix.shape[0]
    if n == 0:
        return (math.nan, math.nan, math.nan)
    estimate = float(_level(matrix))
    if n < 2:
        return (estimate, math.nan, math.nan)
    indices = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    resampled = np.concatenate([_level(matrix[indices[start : start + RESAMPLE_BLOCK]]) for start in range(0, n_resamples, RESAMPLE_BLOCK)])
    resampled = resampled[np.isfinite(resampled)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return (estimate, float(low), float(high))


def paired_scores(a: CellScores, b: CellScores) -> tuple[dict[str, float], dict[str, float]]:
    """Per question scored in both arms by at least one common judge: each arm's mean over the
    judges that scored both of that question's answers. Returns ({q: a}, {q: b})."""
    a_scores, b_scores = {}, {}
    for question in sorted(set(a) & set(b)):
        shared = sorted(set(a[question]) & set(b[question]))
        if shared:
            a_scores[question] = float(np.mean([a[question][judge] for judge in shared]))
            b_scores[question] = float(np.mean([b[question][judge] for judge in shared]))
    return a_scores, b_scores


def answer_scores(cell: CellScores) -> dict[str, float]:
    """Per question, the mean over the judges that scored it (for per-question figures)."""
    return {question: float(np.mean(list(scores.values()))) for question, scores in cell.items() if scores}
