"""Two runs compared question by question: what makes a Bedrock run and a local run comparable.

Putting two runs' panel scores side by side says little when their judges or their questions
differ. Here each later run is paired with the first (the reference) on the questions both
answered, and scored only by the judges both runs share (same name, kind and judging model)
and both keep in their headline panel. Per arm, each model of one run against each model of
the other: the paired % change with a bootstrap interval, and the paired Wilcoxon and sign-flip
tests, Holm-adjusted across every comparison in the report. With no shared judge there is no
delta to give, and the section says so instead of printing one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from localnova.config import ARMS
from localnova.evaluate.panel import cell_scores, paired_scores
from localnova.evaluate.statistics import holm_adjust, paired_tests, pct_change_vs_base
from localnova.evaluate.summary import StudySummary
from localnova.report.collect import RunData
from localnova.report.tables import Paragraph, Table, number, p_value, percent


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


def _judge_identities(run: RunData) -> dict[str, str]:
    """Judge name -> what makes it the same judge in another run: kind, scoring and model."""
    found = {}
    for judge in run.study_config.get("judges") or []:
        model = judge.get("model") or {}
        found[judge["name"]] = json.dumps(
            [judge.get("kind", "llm"), judge.get("scoring"), judge.get("embedding_model"), model.get("backend"), model.get("model")]
        )
    return found


def shared_judges(reference: RunData, ref_summary: StudySummary, other: RunData, other_summary: StudySummary) -> list[str]:
    """Judges that are the same in both runs and in both headline panels, in reference order."""
    ref_ids, other_ids = _judge_identities(reference), _judge_identities(other)
    other_headline = set(other_summary.settings["headline_judges"])
    return [
        judge
        for judge in ref_summary.settings["headline_judges"]
        if judge in other_headline and judge in ref_ids and ref_ids[judge] == other_ids.get(judge)
    ]


def _questions(run: RunData) -> set[str]:
    return {answer.question_id for answer in run.answers}


def compare_runs(
    reference: RunData, ref_summary: StudySummary, other: RunData, other_summary: StudySummary, judges: list[str]
) -> list[CrossRunComparison]:
    """Every (arm, reference model, other model) on the shared questions and `judges`."""
    n_resamples, seed = ref_summary.settings["n_resamples"], ref_summary.settings["seed"]
    n_permutations = ref_summary.settings["n_permutations"]
    ref_cells, other_cells = cell_scores(reference.score_rows, judges), cell_scores(other.score_rows, judges)
    found = []
    for arm in ARMS:
        for ref_model in dict.fromkeys(model for model, cell_arm in ref_cells if cell_arm == arm):
            for other_model in dict.fromkeys(model for model, cell_arm in other_cells if cell_arm == arm):
                a, b = paired_scores(ref_cells[(ref_model, arm)], other_cells[(other_model, arm)])
                questions = sorted(a)  # paired_scores gives both maps the same questions
                test = paired_tests([a[q] for q in questions], [b[q] for q in questions], n_permutations, seed)
                pct = pct_change_vs_base(a, b, n_resamples, seed)
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
    return [replace(c, wilcoxon_p_holm=w, permutation_p_holm=p) for c, w, p in zip(comparisons, wilcoxon, permutation)]


def cross_run_blocks(runs: list[RunData], summaries: list[StudySummary]) -> list[Any]:
    """The report section's blocks: what differs between the runs, then the paired table."""
    reference, ref_summary = runs[0], summaries[0]
    blocks: list[Any] = [
        Paragraph(
            f"Each run is paired with {reference.label} question by question, on the questions both answered and the judges "
            "both share (same name, kind and judging model) and both keep in their headline panel. The % change is the other "
            "run's panel mean against the reference's on those pairs; p-values are paired tests, Holm-adjusted across this table."
        )
    ]
    comparisons: list[CrossRunComparison] = []
    for other, other_summary in zip(runs[1:], summaries[1:]):
        ref_questions, other_questions = _questions(reference), _questions(other)
        shared_questions = ref_questions & other_questions
        if ref_questions != other_questions:
            blocks.append(
                Paragraph(
                    f"{other.label}: the question sets differ ({len(ref_questions)} in {reference.label}, {len(other_questions)} "
                    f"here); compared on the {len(shared_questions)} both answered."
                )
            )
        judges = shared_judges(reference, ref_summary, other, other_summary)
        ref_panel, other_panel = ref_summary.settings["headline_judges"], other_summary.settings["headline_judges"]
        if not judges:
            blocks.append(
                Paragraph(
                    f"{other.label}: no cross-run delta. The headline panels share no judge ({reference.label}: "
                    f"{', '.join(ref_panel) or 'none'}; {other.label}: {', '.join(other_panel) or 'none'}), and scores from "
                    "different judges are on different scales."
                )
            )
            continue
        if list(ref_panel) != list(other_panel) or judges != list(ref_panel):
            blocks.append(
                Paragraph(
                    f"{other.label}: the headline panels differ ({reference.label}: {', '.join(ref_panel)}; {other.label}: "
                    f"{', '.join(other_panel)}); compared on the shared judges only: {', '.join(judges)}."
                )
            )
        else:
            blocks.append(Paragraph(f"{other.label}: same headline panel as {reference.label}: {', '.join(judges)}."))
        comparisons += compare_runs(reference, ref_summary, other, other_summary, judges)
    if comparisons:
        rows = [
            [
                c.other,
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
    return blocks
