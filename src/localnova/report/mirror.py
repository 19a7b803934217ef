"""The cross-run section's two checks of one scale (computed in evaluate/mirror.py): how far a
judge hosted twice agrees with itself on the same answers, and each published finding's change
in two runs, side by side, with their difference paired by question.

Which run comes first: in a local run beside a cloud run (one answered on Bedrock, or by the
dry run's simulated Bedrock), the local one, so the difference reads local minus cloud, the
mirror against what it mirrors; otherwise the report's reference run. Every row of a pair with
a simulated run is marked so.
"""

from __future__ import annotations

import math
from typing import Any

from localnova.evaluate.mirror import (
    HOST_MAX_OFFSET,
    HOST_MIN_ANSWERS,
    HOST_MIN_SPEARMAN,
    MARGIN_POINTS,
    MARGIN_RATIO,
    EffectDifference,
    finding_verdict,
    mirror_findings,
)
from localnova.evaluate.reproduction import RunValues, run_values
from localnova.evaluate.summary import StudySummary
from localnova.findings import FindingsSet
from localnova.report.collect import RunData
from localnova.report.crossrun_judges import SharedPanel
from localnova.report.reproduction import SIMULATED_MARK, models_by_size
from localnova.report.tables import Paragraph, Table

WHY_EFFECTS = (
    "Each finding of the post, set in both runs: each run's change of the arm against its reference arm, on the same "
    "questions, side by side, and the difference of the two changes paired by question (first run's minus second's) with "
    "its 95% paired t interval. Levels are never compared: the answer models differ between the paths by design (Nova on "
    "Bedrock, open models locally), so a panel score of 6 in one run and 5 in the other says nothing about the mirror; what "
    "the mirror must reproduce is the effect of retrieval and fine-tuning. Scores are in points of the shared panel (the "
    "judges both runs share, or one judge's two hosts shown to agree); latency and tokens, whose units mean different "
    "things on different hardware and tokenizers, as each question's ratio of the arm to its reference (their geometric "
    "mean, in %), and the difference as the ratio of the two runs' ratios. Verdict: the mirror disagrees when the "
    "difference's interval excludes 0 and the paired sign-flip test agrees (p below 5%); the mirror agrees when the "
    f"interval lies within +/-{MARGIN_POINTS:g} point (a factor of {MARGIN_RATIO:g} either way for ratios), an "
    "equivalence test at 5%; otherwise cannot tell at this power, with the questions that would bound it within that "
    "margin if the difference stayed at its estimate."
)

HOST_RULE = (
    f"One judge on two hosts (the same name, prompt and settings; another backend, model id or quantisation) is taken as one "
    f"scale only when its two hosts agree on the same answers: Spearman rank correlation at least {HOST_MIN_SPEARMAN:g} and "
    f"the 95% interval of the mean difference within +/-{HOST_MAX_OFFSET:g} point, over at least {HOST_MIN_ANSWERS} answers. "
    "Answers scored by both hosts exist once `localnova judge` has put one host's judge on the other's run."
)


def is_cloud(run: RunData) -> bool:
    """Whether the run's answers came from Bedrock, or from the dry run's simulated Bedrock."""
    for model in run.study_config.get("models") or []:
        if isinstance(model, dict) and (model.get("backend") == "bedrock" or (model.get("options") or {}).get("simulates") == "bedrock"):
            return True
    return False


def _mark(*runs: RunData) -> str:
    return SIMULATED_MARK if any(run.simulated for run in runs) else ""


def host_blocks(reference: RunData, other: RunData, panel: SharedPanel) -> list[Any]:
    """The judges hosted twice between the two runs, their agreement and what became of them."""
    if not panel.host_checks:
        return []
    rows = []
    for check in panel.host_checks:
        found = check.agreement
        if found is None:
            measured = ["0", "n/a", "n/a"]
        else:
            rho = f"{found.spearman:.2f}" if math.isfinite(found.spearman) else "n/a"
            interval = f" [{found.diff_low:+.2f}, {found.diff_high:+.2f}]" if math.isfinite(found.diff_low) else ""
            measured = [str(found.n), rho, f"{found.mean_diff:+.2f}{interval}"]
        rows.append([check.judge, check.reference_host, check.other_host, *measured, check.note + _mark(reference, other)])
    headers = [
        "judge",
        f"host in {reference.label}",
        f"host in {other.label}",
        "answers scored by both",
        "Spearman",
        f"mean difference, {other.label}'s host - {reference.label}'s [95% CI]",
        "one scale?",
    ]
    return [Paragraph(f"{other.label}: judges hosted twice. {HOST_RULE}"), Table(headers, rows)]


def _orient(reference: RunData, other: RunData) -> tuple[RunData, RunData, str]:
    """(first, second, how they are named): local before cloud, else the reference first."""
    if is_cloud(reference) and not is_cloud(other):
        return other, reference, f"local {other.label} beside cloud {reference.label}"
    if is_cloud(other) and not is_cloud(reference):
        return reference, other, f"local {reference.label} beside cloud {other.label}"
    return reference, other, f"{reference.label} (first) beside {other.label} (second)"


def _values(run: RunData, judges: list[str], shares_a_judge: bool) -> RunValues:
    values = run_values(run.score_rows, judges, run.generation_rows, run.probe_timings, models_by_size(run))
    if not shares_a_judge:
        values.missing["panel_score"] = "the runs share no judge, so their scores are on different scales"
    return values


def _change(values: tuple[float, float, float], ratio: bool) -> str:
    mean, low, high = values
    if not math.isfinite(mean):
        return "n/a"
    digits, unit = (1, "%") if ratio else (2, " pts")
    interval = f" [{low:+.{digits}f}, {high:+.{digits}f}]" if math.isfinite(low) else ""
    return f"{mean:+.{digits}f}{unit}{interval}"


def _verdict(result: EffectDifference) -> str:
    return result.verdict + (f": {result.reason}" if result.reason else "")


def mirror_blocks(
    reference: RunData,
    ref_summary: StudySummary,
    pairs: list[tuple[RunData, SharedPanel, set[str]]],
    findings: FindingsSet,
) -> list[Any]:
    """For each other run (beside the reference), every finding's change in both runs."""
    settings = ref_summary.settings
    confidence, n_permutations, seed = float(settings["confidence"]), int(settings["n_permutations"]), int(settings["seed"])
    blocks: list[Any] = [Paragraph(WHY_EFFECTS)]
    for other, panel, questions in pairs:
        first, second, named = _orient(reference, other)
        first_is_reference = first is reference
        first_judges = [pair.reference if first_is_reference else pair.other for pair in panel.pairs]
        second_judges = [pair.other if first_is_reference else pair.reference for pair in panel.pairs]
        mirrored = mirror_findings(
            findings.content,
            _values(first, first_judges, bool(panel.pairs)),
            _values(second, second_judges, bool(panel.pairs)),
            questions,
            confidence,
            n_permutations,
            seed,
            (first.label, second.label),
        )
        mark = _mark(first, second)
        rows, summary = [], []
        for number, found in enumerate(mirrored, start=1):
            claim = f"{number}. {found.finding.claim}"
            for result in found.results:
                rows.append(
                    [
                        claim,
                        result.label,
                        str(result.n),
                        _change(result.first, result.ratio),
                        _change(result.second, result.ratio),
                        _change(result.diff, result.ratio),
                        _verdict(result) + mark,
                    ]
                )
            summary.append([claim, found.finding.post_figure, finding_verdict(found.results) + mark])
        shared = ", ".join(pair.text() for pair in panel.pairs) or "none"
        blocks.append(
            Paragraph(f"Each finding, {named}: scores on the shared panel ({shared}), on {len(questions)} questions asked alike.")
        )
        blocks.append(
            Table(
                [
                    "finding",
                    f"comparison: {first.label} | {second.label}",
                    "questions",
                    f"change in {first.label} [95% CI]",
                    f"change in {second.label} [95% CI]",
                    "difference, first - second [95% CI]",
                    "verdict",
                ],
                rows,
            )
        )
        blocks.append(Table(["finding", "the post's figure", f"verdict: {first.label} beside {second.label}"], summary))
    return blocks
