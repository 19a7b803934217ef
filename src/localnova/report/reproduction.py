"""The report's Reproduction section: each published finding beside this run's paired change,
the change this run could detect, and a verdict (computed in evaluate/reproduction.py); with
several runs, every run's verdict side by side and whether they agree.

The findings come from the file the run's config names (`eval.findings`, the AWS post's by
default), read when the report is written; `localnova report --findings` names another. It is
the one input of the report that is not in the store, so the report's key holds its text.
Cells are raw strings: the writers of each format escape them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from localnova.evaluate.reproduction import ComparisonResult, FindingResult, agreement, compare, reproduce, role_models, run_values
from localnova.evaluate.summary import StudySummary
from localnova.findings import Comparison, FindingsSet, findings_setting, load_findings
from localnova.report.collect import RunData
from localnova.report.tables import Paragraph, Table

HEADERS = ["finding", "the post's figure", "this run's change [95% CI]", "detectable change (80% power at 5%)", "verdict"]
SIMULATED_MARK = " (simulated)"


def report_findings(runs: list[RunData], setting: str | None = None) -> tuple[FindingsSet | None, str]:
    """The findings the report sets its runs against: `setting` when given (the command's
    --findings), else what the first run's config names; and a sentence when another run's
    config names another set (each run is then set against the first's)."""
    if setting is not None:
        return load_findings(setting, "--findings"), ""
    first = findings_setting(runs[0].study_config)
    others = [run.label for run in runs[1:] if findings_setting(run.study_config) != first]
    note = f"{', '.join(others)} name other findings in their configs; every run here is set against {runs[0].label}'s." if others else ""
    return load_findings(first, f"eval.findings of run {runs[0].run_id}"), note


def models_by_size(run: RunData) -> list[str]:
    """The run's models smallest first: the order of `models` in its config."""
    return [str(model.get("name")) for model in run.study_config.get("models") or [] if isinstance(model, dict)]


@dataclass(frozen=True)
class RunReproduction:
    """One run set against the findings: its models smallest first, and each finding's result."""

    run: RunData
    models: list[str]
    results: list[FindingResult]


def run_results(run: RunData, summary: StudySummary, findings: FindingsSet) -> RunReproduction:
    """Every finding set against one run, on the run's headline panel, probe and tokens."""
    values = run_values(
        run.score_rows,
        summary.settings["headline_judges"],
        run.generation_rows,
        run.probe_timings,
        models_by_size(run),
        clusters=run.clusters,
    )
    settings = summary.settings
    found = reproduce(findings.content, values, float(settings["confidence"]), int(settings["n_permutations"]), int(settings["seed"]))
    return RunReproduction(run, values.models, found)


def _signed(value: float, low: float, high: float, digits: int) -> str:
    text = f"{value:+.{digits}f}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{low:+.{digits}f}, {high:+.{digits}f}]"
    return text


def _digits(result: ComparisonResult) -> int:
    return 2 if result.comparison.measure == "panel_score" else 0


def change_text(result: ComparisonResult) -> str:
    """The comparison's change: in % with its interval where it has one, and in its units."""
    if not math.isfinite(result.diff):
        return f"{result.label}: not tested"
    units = f"{_signed(result.diff, result.diff_low, result.diff_high, _digits(result))} {result.unit}"
    questions = f"{result.n} questions"
    if 0 < result.n_clusters < result.n:
        questions += f" from {result.n_clusters} documents, design effect {result.design_effect:.2f}"
    if math.isfinite(result.pct):
        pct = f"{result.pct:+.1f}%" + (f" [{result.pct_low:+.1f}, {result.pct_high:+.1f}]" if math.isfinite(result.pct_low) else "")
        return f"{result.label}: {pct} ({units}, {questions})"
    return f"{result.label}: {units} ({questions})"


def detectable_text(result: ComparisonResult) -> str:
    """What this comparison could detect with 80% power, in its units and % of the reference."""
    if result.detectable_diff == math.inf:
        return f"{result.label}: none (80% power is out of reach)"
    if not math.isfinite(result.detectable_diff):
        return f"{result.label}: n/a"
    pct = f" ({result.detectable_pct:.0f}%)" if math.isfinite(result.detectable_pct) else ""
    return f"{result.label}: {result.detectable_diff:.{_digits(result)}f} {result.unit}{pct}"


def verdict_text(result: FindingResult, simulated: bool) -> str:
    return result.verdict + (f": {result.reason}" if result.reason else "") + (SIMULATED_MARK if simulated else "")


def finding_rows(results: list[FindingResult], simulated: bool) -> list[list[str]]:
    """One row per finding, in HEADERS' columns: the report's table and the README's share it."""
    rows = []
    for number, result in enumerate(results, start=1):
        tested = [c for c in result.comparisons if math.isfinite(c.diff)]
        rows.append(
            [
                f"{number}. {result.finding.claim}",
                result.finding.post_figure,
                "; ".join(change_text(c) for c in result.comparisons),
                "; ".join(detectable_text(c) for c in tested),
                verdict_text(result, simulated),
            ]
        )
    return rows


def roles_sentence(label: str, models: list[str]) -> str:
    """Which model played which role in a run, and by what rule."""
    if not models:
        return f"{label}: no model answered."
    if len(models) == 1:
        return f"{label}: one model, {models[0]}, stands for the larger model; a finding that compares two sizes needs a second."
    middle = f"; {', '.join(models[1:-1])} enter only the findings read on each model" if len(models) > 2 else ""
    return (
        f"{label}: the smaller model is {models[0]} and the larger {models[-1]} (the order of models in its config, smallest "
        f"first: reorder them to change it){middle}."
    )


def _method(findings: FindingsSet) -> str:
    content = findings.content
    where = "; ".join(part for part in (", ".join(p for p in (content.publisher, content.source) if p), content.setting) if part)
    checked = "" if content.checked_against_page else f" Not checked against the page (checked_against_page: false in {findings.name})."
    note = f" {content.note}" if content.note else ""
    return (
        f'The findings of "{content.study}" ({where}), each set against this run.{note}{checked} '
        "Each comparison is paired by question within the run: the change of an arm against its reference arm with its 95% "
        "paired t interval (on the headline panel's score, on the latency probe's time per request, or on each answer's input "
        "plus output tokens), cluster-robust where questions share a source document, and the smallest change this run could "
        "detect with 80% power at the same level, from the spread of its own per-question differences and their design effect. "
        "A comparison goes the post's way, or the other, when its p is below 5% (the larger of the t interval's p and the "
        "paired sign-flip test's, over documents where questions share them). Verdicts, each false at most 5% of the time "
        "(BENCHMARKS.md, issue 27): reproduced when every comparison of the finding goes the post's way; contradicted when "
        "one goes the other way after Holm's adjustment over the finding's comparisons; the post's size is ruled out when a "
        "comparison's % interval leaves the post's figure out (Holm-adjusted over the finding's sized comparisons) and the run "
        "had 80% power for a change of that size; not tested when the run lacks what a comparison needs, or the reading's "
        "premise fails; otherwise inconclusive at this power, with the questions that would detect the post's size with 80% "
        "power at this run's spread. The Holm-adjusted tests of every pair of arms are in the summary."
    )


# The row that sets a RAFT arm beside ft_rag: "both, trained for retrieval". The post trained no
# RAFT arm, so the row states no claim; it shows the change on the same footing as the findings.
RAFT_ROW_LABEL = "both, trained for retrieval (RAFT; not in the post)"
RAFT_ROW_FIGURE = "none: the post trained no RAFT arm"


def raft_arms(run: RunData) -> list[str]:
    """The run's arms whose adapter is the RAFT recipe (from its stored config)."""
    config = run.study_config
    defined = {arm.get("name"): arm for arm in config.get("arm_definitions") or [] if isinstance(arm, dict)}
    return [arm for arm in config.get("arms") or [] if arm == "raft" or (defined.get(arm) or {}).get("adapter") == "raft"]


def raft_row(run: RunData, summary: StudySummary, number: str) -> list[str] | None:
    """The RAFT arm's row of the run's table (None without one): its change against base and
    against ft_rag on the larger model's headline panel score, what the run could detect, and
    no verdict, there being no claim."""
    arms = raft_arms(run)
    if not arms:
        return None
    values = run_values(run.score_rows, summary.settings["headline_judges"], run.generation_rows, run.probe_timings, models_by_size(run))
    models = role_models("larger", values.models)
    if isinstance(models, str):
        return None
    settings = summary.settings
    results = [
        compare(
            values,
            Comparison(measure="panel_score", model="larger", arm=arm, reference=reference, direction="up"),
            models[0],
            float(settings["confidence"]),
            int(settings["n_permutations"]),
            int(settings["seed"]),
        )
        for arm in arms
        for reference in ("base", "ft_rag")
    ]
    tested = [result for result in results if math.isfinite(result.diff)]
    return [
        f"{number}. {RAFT_ROW_LABEL}",
        RAFT_ROW_FIGURE,
        "; ".join(change_text(result) for result in results),
        "; ".join(detectable_text(result) for result in tested),
        "no claim to test" + (SIMULATED_MARK if run.simulated else ""),
    ]


def _with_raft_row(rows: list[list[str]], findings: FindingsSet, run: RunData, summary: StudySummary) -> list[list[str]]:
    """The rows with the RAFT row after the last finding about ft_rag (at the end without one)."""
    after = max(
        (i for i, finding in enumerate(findings.content.findings) if any(c.arm == "ft_rag" for c in finding.comparisons)),
        default=len(rows) - 1,
    )
    row = raft_row(run, summary, f"{after + 1}b")
    return rows if row is None else [*rows[: after + 1], row, *rows[after + 1 :]]


def reproduction_blocks(runs: list[RunData], summaries: list[StudySummary], findings: FindingsSet, note: str = "") -> list[Any]:
    """The section: what is compared and how, each run's table, how findings are read, and with
    several runs their verdicts side by side."""
    reproductions = [run_results(run, summary, findings) for run, summary in zip(runs, summaries, strict=True)]
    several = len(runs) > 1
    rows = [
        [r.run.label, *row] if several else row
        for r, summary in zip(reproductions, summaries, strict=True)
        for row in _with_raft_row(finding_rows(r.results, r.run.simulated), findings, r.run, summary)
    ]
    blocks: list[Any] = [Paragraph(_method(findings))]
    blocks += [Paragraph(roles_sentence(r.run.label, r.models)) for r in reproductions]
    blocks.append(Table(["run", *HEADERS] if several else HEADERS, rows))
    for number, finding in enumerate(findings.content.findings, start=1):
        if finding.definition:
            blocks.append(Paragraph(f"Finding {number} is tested as: {finding.definition}."))
    if several:
        side = []
        for number, finding in enumerate(findings.content.findings, start=1):
            verdicts = [r.results[number - 1].verdict for r in reproductions]
            marked = [v + (SIMULATED_MARK if r.run.simulated else "") for v, r in zip(verdicts, reproductions, strict=True)]
            side.append([f"{number}. {finding.claim}", finding.post_figure, *marked, agreement(verdicts)])
        blocks.append(Paragraph("Each run's verdict on each finding, side by side, and whether the runs agree."))
        blocks.append(Table(["finding", "the post's figure", *(f"verdict: {run.label}" for run in runs), "agree"], side))
    if note:
        blocks.append(Paragraph(note))
    return blocks
