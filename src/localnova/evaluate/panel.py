"""How a panel of judges becomes one score per answer, on the same questions in every arm.

Judges work on different scales (token F1 near 2, an LLM judge near 8), and any of them can
fail on some answers. If each answer were scored by whichever judges happened to score it, a
judge's failures would move answers from one scale to another, and a bootstrap resample that
drew none of a sparse judge's answers would silently average one judge fewer: an effect out of
nothing. So everything the summary says about a model holds its judges and questions fixed:

- the panel is a fixed set of judges: the headline judges, less any that failed more than a
  set share of the answers of some model x arm (`sparse_judges`; they leave the headline with
  a note, and stay in the per-judge tables);
- a model's questions are those every panel judge scored in every arm of the model
  (`model_panels`), and an answer's panel score is the mean of the panel judges' scores.

Every level, interval, change and test of a model is then computed on these questions and
judges, so the panel score column and the comparison beside it always agree. Without failures
it is the plain mean over judges, over all questions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from localnova.config import BASE_ARM
from localnova.evaluate.statistics import ordered_arms, score_rows_from

# {question_id: {judge: score}} for one model x arm; only scored judgments appear
CellScores = dict[str, dict[str, float]]

PANEL_RULE = (
    "an answer's panel score is the mean of the headline judges' scores; every figure of a model (levels, changes, tests) "
    "is over the questions every headline judge scored in every arm of that model, so the judges and questions stay "
    "fixed across arms and resamples"
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


@dataclass(frozen=True)
class AnswerFailures:
    """A judge's worst model x arm: the share of its answers the judge did not score."""

    judge: str
    cell: str  # "model / arm"
    n_answers: int
    n_scored: int

    @property
    def failure_rate(self) -> float:
        return 1.0 - self.n_scored / self.n_answers if self.n_answers else 1.0


def answer_failures(score_rows: Iterable[Any], judges: Sequence[str]) -> dict[str, AnswerFailures]:
    """Per judge, its model x arm with the highest share of answers it failed on or never
    judged (an answer is a question with any judgment in that model x arm)."""
    answered: dict[tuple[str, str], set[str]] = {}
    scored: dict[tuple[str, str, str], int] = {}
    for row in score_rows_from(score_rows):
        answered.setdefault((row.model, row.arm), set()).add(row.question_id)
        if row.score is not None:
            scored[(row.judge, row.model, row.arm)] = scored.get((row.judge, row.model, row.arm), 0) + 1
    worst: dict[str, AnswerFailures] = {}
    for judge in judges:
        for (model, arm), questions in answered.items():
            found = AnswerFailures(judge, f"{model} / {arm}", len(questions), scored.get((judge, model, arm), 0))
            if judge not in worst or found.failure_rate > worst[judge].failure_rate:
                worst[judge] = found
    return worst


def sparse_judges(score_rows: Iterable[Any], judges: Sequence[str], max_failure_rate: float) -> dict[str, str]:
    """{judge: why} for the judges that failed more than `max_failure_rate` of the answers of
    some model x arm: they cannot be held fixed across a comparison."""
    return {
        judge: f"scored {f.n_scored} of {f.n_answers} answers of {f.cell}; at most {max_failure_rate:.0%} may fail"
        for judge, f in answer_failures(score_rows, judges).items()
        if f.failure_rate > max_failure_rate
    }


@dataclass(frozen=True)
class ModelPanel:
    """One model's panel scores: `questions` are the ones every panel judge scored in every
    arm, out of `n_questions` the model answered; scores[arm][question] is the mean of the
    panel judges' scores of that answer."""

    model: str
    arms: list[str]
    questions: list[str]
    n_questions: int
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


def model_panels(score_rows: Iterable[Any], judges: Sequence[str], base_arm: str = BASE_ARM) -> dict[str, ModelPanel]:
    """Per model, in order of first appearance: its arms (base first), the questions every judge
    of `judges` scored in every arm, and each answer's panel score on them. With no judges
    there are no questions."""
    rows = score_rows_from(score_rows)
    cells = cell_scores(rows, judges)
    asked: dict[str, set[str]] = {}
    for row in rows:
        asked.setdefault(row.model, set()).add(row.question_id)
    panels = {}
    for model in dict.fromkeys(row.model for row in rows):
        arms = ordered_arms((arm for m, arm in cells if m == model), base_arm)
        questions = [
            question
            for question in sorted(asked[model])
            if judges and all(judge in cells[(model, arm)].get(question, {}) for arm in arms for judge in judges)
        ]
        scores = {arm: {q: float(np.mean([cells[(model, arm)][q][judge] for judge in judges])) for q in questions} for arm in arms}
        panels[model] = ModelPanel(model, arms, questions, len(asked[model]), scores)
    return panels


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


# The family-wise level at which a judge's failures count as depending on the answer's score
# (Bonferroni over the model x arm cells where it failed at least twice).
SCORE_LINKED_LEVEL = 0.05


def score_linked_failures(score_rows: Iterable[Any], judges: Sequence[str], level: float = SCORE_LINKED_LEVEL) -> dict[str, str]:
    """{judge: why} for the judges whose failures depend on the score: in some model x arm, the
    answers the judge failed on score differently, by the mean of the other judges of `judges`,
    from the answers it scored (a two-sided rank-sum test, Bonferroni over the judge's cells
    with two failures or more, at `level`).

    Such failures bias a comparison that the panel's fixed questions would otherwise keep
    fair: a judge that fails on the rag answers it would have scored highest takes exactly those
    questions out of every arm, and rag - base falls (-0.11 points under a true null, an
    interval excluding 0 in 11% of studies at a nominal 5%: issue 27). A single failure is
    never flagged (it cannot bias a mean by much, nor a rank test find it); a judge alone in
    the panel has no one to be checked against."""
    from scipy.stats import mannwhitneyu

    rows = score_rows_from(score_rows)
    cells = cell_scores(rows, judges)
    failed: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        if row.score is None and row.judge in judges:
            failed.setdefault((row.judge, row.model, row.arm), []).append(row.question_id)
    found: dict[str, str] = {}
    for judge in judges:
        others = [other for other in judges if other != judge]
        tests = []
        for (who, model, arm), questions in failed.items():
            cell = cells.get((model, arm), {})
            by_others = {q: float(np.mean([s for j, s in cell[q].items() if j in others])) for q in cell if set(others) & set(cell[q])}
            lost = [by_others[q] for q in questions if q in by_others]
            kept = [value for q, value in by_others.items() if judge in cell[q]]
            if who == judge and others and len(lost) >= 2 and len(kept) >= 2:
                p = float(mannwhitneyu(lost, kept, alternative="two-sided").pvalue)
                tests.append((p, f"{model} / {arm}", float(np.mean(lost)), float(np.mean(kept)), len(lost)))
        flagged = [test for test in tests if test[0] < level / len(tests)]
        if flagged:
            p, cell_name, lost_mean, kept_mean, count = min(flagged)
            found[judge] = (
                f"its {count} failures in {cell_name} were answers the other judges scored {lost_mean:.2f} on average against "
                f"{kept_mean:.2f} for those it scored (rank-sum p = {p:.2g}); failures that depend on the score bias the comparison"
            )
    return found
