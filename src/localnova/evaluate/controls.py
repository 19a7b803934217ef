"""The judge controls, and the gate they make: which judges the headline panel keeps.

Every judge also scores, per question, the ground truth itself, an empty answer and another
question's ground truth. A judge that gives the truth a low mean, or the empty answer or the
wrong truth a high one, cannot tell a right answer from a wrong one, and averaging it into the
headline would only blur (or, through its failures, bias) the arms' differences. Such a judge
stays in the per-judge tables, marked; the headline panel is made of the judges that pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from localnova.config import ControlGate
from localnova.evaluate.judges import CONTROL_SUBJECTS, SUBJECT_ANSWER


@dataclass(frozen=True)
class JudgeControls:
    """One judge's mean score on real answers and on each control, and what the gate says."""

    judge: str
    answers: float
    truth: float
    empty: float
    other: float
    n_control_failures: int
    passed: bool
    verdict: str


def gate_rule(gate: ControlGate) -> str:
    return (
        f"A judge passes its controls when it gives the ground truth itself a mean of at least {gate.truth_min:g}, "
        f"an empty answer at most {gate.empty_max:g}, and another question's ground truth at most {gate.other_max:g}."
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _verdict(truth: float, empty: float, other: float, gate: ControlGate) -> tuple[bool, str]:
    if not all(math.isfinite(v) for v in (truth, empty, other)):
        return False, "fails: some controls were never scored"
    problems = []
    if truth < gate.truth_min:
        problems.append(f"gives the ground truth only {truth:.1f}")
    if empty > gate.empty_max:
        problems.append(f"gives an empty answer {empty:.1f}")
    if other > gate.other_max:
        problems.append(f"gives another question's truth {other:.1f}")
    return (True, "passes") if not problems else (False, "fails: " + "; ".join(problems))


def judge_controls(judgments: Iterable[Any], judges: Sequence[str], gate: ControlGate) -> list[JudgeControls]:
    """Per judge (in `judges` order), from judgment rows with .judge, .subject and .score
    (None: a failed judgment, left out of the means and counted when it is a control)."""
    scores: dict[tuple[str, str], list[float]] = {}
    failures: dict[str, int] = {}
    for judgment in judgments:
        if judgment.score is None:
            if judgment.subject != SUBJECT_ANSWER:
                failures[judgment.judge] = failures.get(judgment.judge, 0) + 1
            continue
        scores.setdefault((judgment.judge, judgment.subject), []).append(float(judgment.score))
    found = []
    for judge in judges:
        truth, empty, other = (_mean(scores.get((judge, subject), [])) for subject in CONTROL_SUBJECTS)
        passed, verdict = _verdict(truth, empty, other, gate)
        answers = _mean(scores.get((judge, SUBJECT_ANSWER), []))
        found.append(JudgeControls(judge, answers, truth, empty, other, failures.get(judge, 0), passed, verdict))
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
    controls: then there is nothing to gate on, and every judge counts (the note says so)."""
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
