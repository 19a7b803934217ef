"""The report's tables about the judges: each judge's means, how far the headline judges agree,
what the controls say and which judgments failed. Plain blocks, as in `tables`; escaping
belongs to the writer of each format."""

from __future__ import annotations

from typing import Any

from localnova.evaluate.summary import StudySummary
from localnova.report.collect import RunData
from localnova.report.tables import Paragraph, Preformatted, Table, interval, number


def judge_means_table(runs: list[RunData], summaries: list[StudySummary]) -> Table:
    rows = [
        [
            run.label,
            c.model,
            c.arm,
            c.judge,
            "yes" if c.judge in summary.settings["headline_judges"] else f"no: {_left_out(summary, c.judge)}",
            str(c.n_judgments - c.n_failed),
            str(c.n_failed),
            interval(c.mean, c.low, c.high),
        ]
        for run, summary in zip(runs, summaries, strict=True)
        for c in summary.judge_cells
    ]
    return Table(["run", "model", "arm", "judge", "in headline", "scored", "failed", "mean [95% CI]"], rows)


def _left_out(summary: StudySummary, judge: str) -> str:
    return (summary.settings.get("left_out") or {}).get(judge, "left out of the headline panel")


def agreement_tables(runs: list[RunData], summaries: list[StudySummary]) -> list[Any]:
    pairs, overall = [], []
    for run, summary in zip(runs, summaries, strict=True):
        agreement = summary.agreement
        if agreement is None:
            continue
        overall.append(
            [
                run.label,
                ", ".join(agreement.judges),
                number(agreement.krippendorff_alpha, 3),
                f"{agreement.n_answers_scored_by_all} of {agreement.n_answers}",
                number(agreement.krippendorff_alpha_raw, 3),
                f"{agreement.n_answers_with_two_scores} of {agreement.n_answers}",
            ]
        )
        for answer_pair, arm_pair in zip(agreement.per_answer, agreement.arm_ranking, strict=True):
            pairs.append(
                [
                    run.label,
                    answer_pair.judge_a,
                    answer_pair.judge_b,
                    str(answer_pair.n),
                    number(answer_pair.spearman, 3),
                    number(answer_pair.kendall, 3),
                    str(arm_pair.n),
                    number(arm_pair.spearman, 3),
                    number(arm_pair.kendall, 3),
                ]
            )
    if not overall:
        return [Paragraph("Fewer than two headline judges, so there is no agreement to measure.")]
    return [
        Paragraph(
            "Agreement among the headline judges. Correlations are on ranks; Krippendorff's alpha is on each judge's ranks of "
            "the answers every headline judge scored, so judges on different scales that order the answers alike agree fully. "
            "The raw-score alpha is shown for reference: judges whose scales differ disagree there by their offset alone."
        ),
        Table(
            [
                "run",
                "judge A",
                "judge B",
                "answers",
                "Spearman",
                "Kendall",
                "model x arm cells",
                "Spearman (arm ranking)",
                "Kendall (arm ranking)",
            ],
            pairs,
        ),
        Table(
            [
                "run",
                "headline judges",
                "Krippendorff alpha (interval, on ranks)",
                "answers every judge scored",
                "alpha on raw scores (scales differ)",
                "answers scored by 2+ judges",
            ],
            overall,
        ),
    ]


def control_means(run: RunData) -> dict[tuple[str, str], list[float]]:
    """Scores per (judge, subject), subject 'answer' included, failures left out."""
    scores: dict[tuple[str, str], list[float]] = {}
    for judgment in run.judgments:
        if judgment.score is not None:
            scores.setdefault((judgment.judge, judgment.subject), []).append(judgment.score)
    return scores


def controls_table(runs: list[RunData], summaries: list[StudySummary]) -> Table:
    rows = []
    for run, summary in zip(runs, summaries, strict=True):
        headline = set(summary.settings["headline_judges"])
        for c in summary.controls:
            rows.append(
                [
                    run.label,
                    c.judge,
                    number(c.answers),
                    number(c.truth),
                    number(c.empty),
                    number(c.other),
                    f"{c.n_ranked} of {c.n_questions}",
                    f"{c.n_control_failures} of {c.n_controls}",
                    f"{c.n_cell_answer_failures} of {c.n_cell_answers} ({c.worst_answer_cell})" if c.n_cell_answers else "n/a",
                    c.verdict,
                    "yes" if c.judge in headline else "no",
                ]
            )
    return Table(
        [
            "run",
            "judge",
            "mean: real answers",
            "mean: ground truth",
            "mean: empty answer",
            "mean: other question's truth",
            "truth ranked first",
            "control failures",
            "answer failures (worst model / arm)",
            "controls",
            "in headline",
        ],
        rows,
    )


def failures_table(runs: list[RunData]) -> Table:
    rows = []
    for run in runs:
        for judge in run.judges:
            answers = [j for j in run.judgments if j.judge == judge and j.subject == "answer"]
            controls = [j for j in run.judgments if j.judge == judge and j.subject != "answer"]
            failed = sum(j.score is None for j in answers)
            rate = f"{100 * failed / len(answers):.1f}%" if answers else "n/a"
            methods = ", ".join(sorted({j.method for j in run.judgments if j.judge == judge}))
            retried = sum(j.attempts > 1 for j in run.judgments if j.judge == judge)
            rows.append(
                [
                    run.label,
                    judge,
                    methods,
                    str(len(answers)),
                    str(failed),
                    rate,
                    str(len(controls)),
                    str(sum(j.score is None for j in controls)),
                    str(retried),
                ]
            )
    return Table(
        ["run", "judge", "method", "answers judged", "parse failures", "failure rate", "controls judged", "control failures", "retried"],
        rows,
    )


def failure_examples(runs: list[RunData], per_judge: int = 2) -> list[Any]:
    """A few raw replies that failed to parse, so a reader sees why (model text: escaped later)."""
    blocks: list[Any] = []
    for run in runs:
        for judge in run.judges:
            failed = [j for j in run.judgments if j.judge == judge and j.score is None][:per_judge]
            for judgment in failed:
                where = f"{judgment.model} / {judgment.arm}" if judgment.subject == "answer" else judgment.subject
                blocks.append(
                    Preformatted(
                        f"{run.label}: {judge} on {where} / question {judgment.question_id}, after {judgment.attempts} attempts",
                        judgment.raw_text or "(empty reply)",
                    )
                )
    return blocks
