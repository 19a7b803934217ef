"""The judge controls, and the gate they make: which judges the headline panel keeps.

Every judge also scores, per question, the ground truth itself, an empty answer and another
question's ground truth (the decoy). A judge worth reading scores the truth above both, question
by question, on its own scale: a similarity judge on a narrow corpus may give every decoy 4 out
of 10 and still rank the truth first every time, while a judge that gives the truth 8 on
average can still fail to tell it from the decoy. So the gate asks, per question, whether the
truth came strictly first, and it counts failures: a judge that fails its controls or its
answers too often cannot be trusted on the few it scored. Such a judge stays in the per-judge
tables, marked; the headline panel is made of the judges that pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from localnova.config import ControlGate
from localnova.evaluate.judges import CONTROL_SUBJECTS, SUBJECT_ANSWER
from localnova.evaluate.panel import answer_failures
from localnova.evaluate.statistics import ScoreRow

TRUTH, EMPTY, OTHER = CONTROL_SUBJECTS


@dataclass(frozen=True)
class JudgeControls:
    """One judge's controls and what the gate says.

    answers/truth/empty/other are mean scores (for reading; the gate does not use them).
    n_ranked of n_questions: questions on which the judge scored the truth strictly above both
    the empty answer and the decoy (a question with a failed or missing control is not ranked).
    Failures: of the judge's controls, and of its answers in its worst model x arm."""

    judge: str
    answers: float
    truth: float
    empty: float
    other: float
    n_questions: int
    n_ranked: int
    n_controls: int
    n_control_failures: int
    worst_answer_cell: str
    n_cell_answers: int
    n_cell_answer_failures: int
    passed: bool
    verdict: str


def gate_rule(gate: ControlGate) -> str:
    return (
        f"A judge passes its controls when, on at least {gate.min_ranked_share:.0%} of the questions, it scores the ground truth "
        "strictly above both the empty answer and another question's ground truth (on its own scale: no absolute threshold), "
        f"at most {gate.max_control_failure_rate:.0%} of its controls fail, and in no model x arm do more than "
        f"{gate.max_answer_failure_rate:.0%} of its answers fail. That last rule holds whatever eval.headline_panel says: a "
        "comparison needs the same judges on every question."
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _rate(count: int, total: int) -> float:
    return count / total if total else 1.0


def _verdict(controls: JudgeControls, gate: ControlGate) -> tuple[bool, str]:
    problems = []
    if controls.n_questions == 0:
        problems.append("no control was judged")
    elif _rate(controls.n_ranked, controls.n_questions) < gate.min_ranked_share:
        problems.append(
            f"ranks the truth first on {controls.n_ranked} of {controls.n_questions} questions "
            f"({controls.n_ranked / controls.n_questions:.0%}, needs {gate.min_ranked_share:.0%})"
        )
    if controls.n_controls and _rate(controls.n_control_failures, controls.n_controls) > gate.max_control_failure_rate:
        problems.append(
            f"failed {controls.n_control_failures} of {controls.n_controls} controls "
            f"({controls.n_control_failures / controls.n_controls:.0%}, at most {gate.max_control_failure_rate:.0%})"
        )
    if _rate(controls.n_cell_answer_failures, controls.n_cell_answers) > gate.max_answer_failure_rate:
        problems.append(
            f"failed {controls.n_cell_answer_failures} of {controls.n_cell_answers} answers of {controls.worst_answer_cell} "
            f"(at most {gate.max_answer_failure_rate:.0%})"
        )
    if problems:
        return False, "fails: " + "; ".join(problems)
    return True, f"passes: truth first on {controls.n_ranked} of {controls.n_questions} questions"


def judge_controls(judgments: Iterable[Any], judges: Sequence[str], gate: ControlGate) -> list[JudgeControls]:
    """Per judge (in `judges` order), from judgment rows with .judge, .model, .arm,
    .question_id, .subject and .score (None: a failed judgment, left out of the means and
    counted as a failure)."""
    judgments = list(judgments)
    control_scores: dict[tuple[str, str], dict[str, float | None]] = {}  # (judge, question) -> subject -> score
    answer_rows = []
    for judgment in judgments:
        if judgment.subject == SUBJECT_ANSWER:
            answer_rows.append(ScoreRow(judgment.model, judgment.arm, judgment.question_id, judgment.judge, judgment.score))
        else:
            control_scores.setdefault((judgment.judge, judgment.question_id), {})[judgment.subject] = judgment.score
    worst_cells = answer_failures(answer_rows, judges)
    found = []
    for judge in judges:
        questions = [scores for (name, _), scores in control_scores.items() if name == judge]
        controls = [score for scores in questions for score in scores.values()]
        ranked = 0
        for scores in questions:
            truth, empty, other = (scores.get(subject) for subject in CONTROL_SUBJECTS)
            ranked += truth is not None and empty is not None and other is not None and truth > empty and truth > other
        means = [_mean([s[subject] for s in questions if s.get(subject) is not None]) for subject in CONTROL_SUBJECTS]
        worst = worst_cells.get(judge)
        draft = JudgeControls(
            judge=judge,
            answers=_mean([row.score for row in answer_rows if row.judge == judge and row.score is not None]),
            truth=means[0],
            empty=means[1],
            other=means[2],
            n_questions=len(questions),
            n_ranked=ranked,
            n_controls=len(controls),
            n_control_failures=sum(score is None for score in controls),
            worst_answer_cell=worst.cell if worst else "",
            n_cell_answers=worst.n_answers if worst else 0,
            n_cell_answer_failures=worst.n_answers - worst.n_scored if worst else 0,
            passed=False,
            verdict="",
        )
        passed, verdict = _verdict(draft, gate)
        found.append(replace(draft, passed=passed, verdict=verdict))
    return found


@dataclass(frozen=True)
class HeadlinePanel:
    """The judges whose scores make the headline, the ones left out, and why, in a sentence."""

    judges: list[str]
    excluded: list[str]
    note: str


def headline_panel(
    judges: Sequence[str], controls: Sequence[JudgeControls], mode: Literal["gated", "all"], controls_judged: bool
) -> HeadlinePanel:
    """Which judges make the headline. `controls_judged` is False when the study ran without
    controls: then there is nothing to gate on, and every judge counts (the note says so).
    Judges that failed too many answers leave later, in `summarize`, in every mode."""
    if mode == "all":
        return HeadlinePanel(list(judges), [], "Headline panel: every judge (eval.headline_panel: all), whatever its controls say.")
    if not controls_judged:
        return HeadlinePanel(list(judges), [], "Headline panel: every judge; the study ran without controls, so none could be gated.")
    passed = {c.judge for c in controls if c.passed}
    kept = [judge for judge in judges if judge in passed]
    excluded = [judge for judge in judges if judge not in passed]
    if not kept:
        note = "Headline panel: empty. No judge passed its controls, so no headline score is given; see the per-judge tables."
    elif excluded:
        note = f"Headline panel: {', '.join(kept)}. Left out for failing their controls: {', '.join(excluded)}."
    else:
        note = f"Headline panel: {', '.join(kept)}; every judge passed its controls."
    return HeadlinePanel(kept, excluded, note)
