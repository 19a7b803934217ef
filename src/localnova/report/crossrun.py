"""Two runs compared question by question: what makes a Bedrock run and a local run comparable.

Putting two runs' panel scores side by side says little when their judges or their questions
differ. Here each later run is paired with the first (the reference) on the questions both
asked alike (the same id, question text and ground truth: two runs may number different
questions q00-q11), and scored only by the judges both share and both keep in their headline
panel (report/crossrun_judges.py: the same judge, perhaps under another name, or one judge on
two hosts whose scores were shown to agree on the same answers). Per arm, each model of one run
against each model of the other: the paired % change with a bootstrap interval, and the paired
Wilcoxon and sign-flip tests, Holm-adjusted across every comparison in the report. With no
shared judge there is no delta to give, and the section says so instead of printing one.

Then each published finding, the reference run's change beside the other's on that shared
panel, and their difference paired by question (report/mirror.py): answer models differ
between a local run and a cloud run by design, so effects are compared, never levels. A run
answered by the simulated backend (the Bedrock dry run) is marked so on every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from localnova.config import ARMS
from localnova.evaluate.judge_settings import differences, hosted_twice
from localnova.evaluate.panel import cell_scores, paired_scores
from localnova.evaluate.statistics import holm_adjust, paired_tests, pct_change_vs_base
from localnova.evaluate.summary import StudySummary
from localnova.findings import FindingsSet
from localnova.report.collect import RunData
from localnova.report.crossrun_judges import JudgePair, SharedPanel, judge_identities, shared_judges, shared_panel
from localnova.report.mirror import SIMULATED_MARK, host_blocks, mirror_blocks
from localnova.report.tables import Paragraph, Table, number, p_value, percent

# re-exported: the tests and other readers of the cross-run section find them here
__all__ = ["CrossRunComparison", "compare_runs", "cross_run_blocks", "judge_identities", "match_questions", "shared_judges"]


@dataclass(frozen=True)
class CrossRunComparison:
    """`other`'s model against the reference's model on one arm, paired by question."""

    reference: str
    other: str
    arm: str
    reference_model: str
    other_model: str
    n: int
    mean_diff: float
    pct: tuple[float, float, float]
    wilcoxon_p: float
    permutation_p: float
    wilcoxon_p_holm: float = float("nan")
    permutation_p_holm: float = float("nan")


def _questions(run: RunData) -> set[str]:
    return {answer.question_id for answer in run.answers}


@dataclass(frozen=True)
class QuestionMatch:
    """Which question ids two runs can be paired on: the same id asking the same question
    against the same ground truth (where both runs recorded them)."""

    paired: set[str]
    other_question: list[str]  # same id, another question text
    other_truth: list[str]  # same id and question, another ground truth
    unrecorded: list[str]  # same id, a run that recorded no text for it: paired on the id alone


def match_questions(reference: RunData, other: RunData) -> QuestionMatch:
    shared = sorted(_questions(reference) & _questions(other))
    paired, other_question, other_truth, unrecorded = set(), [], [], []
    for question_id in shared:
        ref_item, other_item = reference.eval_items.get(question_id) or {}, other.eval_items.get(question_id) or {}
        ref_text, other_text = (ref_item.get("question") or "").strip(), (other_item.get("question") or "").strip()
        if not ref_text or not other_text:
            unrecorded.append(question_id)
            paired.add(question_id)
        elif ref_text != other_text:
            other_question.append(question_id)
        elif (ref_item.get("answer") or "").strip() != (other_item.get("answer") or "").strip():
            other_truth.append(question_id)
        else:
            paired.add(question_id)
    return QuestionMatch(paired, other_question, other_truth, unrecorded)


def _only(rows: list[Any], question_ids: set[str]) -> list[Any]:
    return [row for row in rows if row.question_id in question_ids]


def _as_pairs(judges: Sequence[JudgePair | str]) -> list[JudgePair]:
    """Judges named alike in both runs may be given by name."""
    return [judge if isinstance(judge, JudgePair) else JudgePair(judge, judge, "same") for judge in judges]


def renamed_rows(rows: list[Any], pairs: list[JudgePair]) -> list[Any]:
    """The other run's score rows of the paired judges, each under its reference judge's name."""
    names = {pair.other: pair.reference for pair in pairs}
    return [replace(row, judge=names[row.judge]) for row in rows if row.judge in names]


def compare_runs(
    reference: RunData, ref_summary: StudySummary, other: RunData, other_summary: StudySummary, judges: Sequence[JudgePair | str]
) -> list[CrossRunComparison]:
    """Every (arm, reference model, other model) on the questions both runs asked alike
    (`match_questions`) and the paired `judges` (a name stands for a judge of that name in both)."""
    seed = ref_summary.settings["seed"]
    n_permutations = ref_summary.settings["n_permutations"]
    pairs = _as_pairs(judges)
    paired = match_questions(reference, other).paired
    ref_cells = cell_scores(_only(reference.score_rows, paired), [pair.reference for pair in pairs])
    other_cells = cell_scores(renamed_rows(_only(other.score_rows, paired), pairs), [pair.reference for pair in pairs])
    found = []
    for arm in ARMS:
        for ref_model in dict.fromkeys(model for model, cell_arm in ref_cells if cell_arm == arm):
            for other_model in dict.fromkeys(model for model, cell_arm in other_cells if cell_arm == arm):
                a, b = paired_scores(ref_cells[(ref_model, arm)], other_cells[(other_model, arm)])
                questions = sorted(a)  # paired_scores gives both maps the same questions
                test = paired_tests([a[q] for q in questions], [b[q] for q in questions], n_permutations, seed)
                pct = pct_change_vs_base(a, b)
                found.append(
                    CrossRunComparison(
                        reference.label,
                        other.label,
                        arm,
                        ref_model,
                        other_model,
                        test.n,
                        test.mean_diff,
                        pct,
                        test.wilcoxon_p,
                        test.permutation_p,
                    )
                )
    return found


def _with_holm(comparisons: list[CrossRunComparison]) -> list[CrossRunComparison]:
    wilcoxon = holm_adjust([c.wilcoxon_p for c in comparisons])
    permutation = holm_adjust([c.permutation_p for c in comparisons])
    return [replace(c, wilcoxon_p_holm=w, permutation_p_holm=p) for c, w, p in zip(comparisons, wilcoxon, permutation, strict=True)]


def _panel_note(reference: RunData, ref_summary: StudySummary, other: RunData, other_summary: StudySummary, panel: SharedPanel) -> str:
    ref_panel, other_panel = ref_summary.settings["headline_judges"], other_summary.settings["headline_judges"]
    if not panel.pairs:
        return (
            f"{other.label}: no cross-run delta. The headline panels share no judge ({reference.label}: "
            f"{', '.join(ref_panel) or 'none'}; {other.label}: {', '.join(other_panel) or 'none'}), and scores from "
            "different judges are on different scales."
        )
    shared = ", ".join(pair.text() for pair in panel.pairs)
    if list(ref_panel) != list(other_panel) or [pair.reference for pair in panel.pairs] != list(ref_panel):
        return (
            f"{other.label}: the headline panels differ ({reference.label}: {', '.join(ref_panel)}; {other.label}: "
            f"{', '.join(other_panel)}); compared on the shared judges only: {shared}."
        )
    return f"{other.label}: same headline panel as {reference.label}: {shared}."


def cross_run_blocks(runs: list[RunData], summaries: list[StudySummary], findings: FindingsSet | None = None) -> list[Any]:
    """The report section's blocks: what differs between the runs, the judges hosted twice and
    how far their hosts agree, the paired table, and with `findings` each finding's change in
    both runs and their difference."""
    reference, ref_summary = runs[0], summaries[0]
    blocks: list[Any] = [
        Paragraph(
            f"Each run is paired with {reference.label} question by question, on the questions both asked alike (the same id, "
            "question text and ground truth) and the judges both share (the same model, revision, prompt and settings, under "
            "one name or two; or one judge on two hosts whose scores agree on the same answers) and both keep in their "
            "headline panel. The % change is the other run's panel mean against the reference's on those pairs; p-values are "
            "paired tests, Holm-adjusted across this table."
        )
    ]
    comparisons: list[CrossRunComparison] = []
    panels: list[tuple[RunData, SharedPanel, set[str]]] = []
    for other, other_summary in zip(runs[1:], summaries[1:], strict=True):
        blocks += _question_notes(reference, other)
        panel = shared_panel(reference, ref_summary, other, other_summary)
        blocks += _judge_notes(reference, other)
        blocks += host_blocks(reference, other, panel)
        blocks.append(Paragraph(_panel_note(reference, ref_summary, other, other_summary, panel)))
        if panel.pairs:
            comparisons += compare_runs(reference, ref_summary, other, other_summary, panel.pairs)
        panels.append((other, panel, match_questions(reference, other).paired))
    if comparisons:
        simulated = {run.label for run in runs if run.simulated}
        rows = [
            [
                c.other + (SIMULATED_MARK if {c.other, c.reference} & simulated else ""),
                c.arm,
                f"{c.other_model} vs {c.reference_model}",
                str(c.n),
                number(c.mean_diff),
                percent(*c.pct),
                p_value(c.wilcoxon_p_holm),
                p_value(c.permutation_p_holm),
            ]
            for c in _with_holm(comparisons)
        ]
        blocks.append(
            Table(
                [
                    "run",
                    "arm",
                    "model vs reference model",
                    "pairs",
                    "mean difference",
                    "% change [95% CI]",
                    "p Wilcoxon (Holm)",
                    "p permutation (Holm)",
                ],
                rows,
            )
        )
    if findings is not None:
        blocks += mirror_blocks(reference, ref_summary, panels, findings)
    return blocks


def _ids(question_ids: list[str]) -> str:
    shown = ", ".join(question_ids[:8])
    return shown + (f" and {len(question_ids) - 8} more" if len(question_ids) > 8 else "")


def _question_notes(reference: RunData, other: RunData) -> list[Paragraph]:
    """What the pairing of `other` with the reference leaves out, and why."""
    ref_questions, other_questions = _questions(reference), _questions(other)
    match = match_questions(reference, other)
    notes = []
    if ref_questions != other_questions:
        notes.append(
            f"the question sets differ ({len(ref_questions)} in {reference.label}, {len(other_questions)} here; "
            f"{len(ref_questions & other_questions)} ids in both)"
        )
    if match.other_question:
        notes.append(f"not paired, another question under the same id: {_ids(match.other_question)}")
    if match.other_truth:
        notes.append(f"not paired, another ground truth for the same question: {_ids(match.other_truth)}")
    if match.unrecorded:
        notes.append(f"paired on the id alone, the question not recorded in one run: {_ids(match.unrecorded)}")
    if not notes:
        return []
    return [Paragraph(f"{other.label}: {'; '.join(notes)}. Compared on the {len(match.paired)} questions asked alike.")]


def _judge_notes(reference: RunData, other: RunData) -> list[Paragraph]:
    """Judges of one name that judge otherwise in the two runs (not merely on another host,
    which the host check covers), and what differs."""
    ref_ids, other_ids, source = judge_identities(reference, other)
    differing = []
    for judge in ref_ids:
        if judge in other_ids and ref_ids[judge] != other_ids[judge] and not hosted_twice(ref_ids[judge], other_ids[judge]):
            differing.append(f"{judge} ({', '.join(differences(ref_ids[judge], other_ids[judge])[:6])})")
    if not differing:
        return []
    return [
        Paragraph(
            f"{other.label}: same name, another judge, so not shared (compared on {source}): {'; '.join(differing)}. Scores "
            "from a judge with another model, revision or setting are on another scale."
        )
    ]
