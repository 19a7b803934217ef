"""What a reader and a pipeline act on: the report's opening paragraph, in plain words, and the
gate a CI pipeline runs (`localnova report RUN --fail-on ...`), which fails when a named
finding is contradicted or a judge fails its controls.
"""

from __future__ import annotations

import math

from localnova.errors import UserError
from localnova.evaluate.reproduction import CONTRADICTED
from localnova.evaluate.summary import StudySummary
from localnova.findings import FindingsSet
from localnova.report.collect import RunData
from localnova.report.reproduction import run_results
from localnova.report.tables import Paragraph

GATE_EXIT = 3  # what `--fail-on` exits with when the gate trips (2 is a user's error)
GATE_JUDGES = "judge-controls"
GATE_CONTRADICTED = "contradicted"


def _change_words(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "not measured"
    if low > 0:
        return "clearly higher"
    if high < 0:
        return "clearly lower"
    return "not clearly different"


def findings_paragraph(run: RunData, summary: StudySummary, findings: FindingsSet | None) -> Paragraph:
    """One paragraph of what the run found: per model, each arm against base on the headline
    panel (higher, lower or not clearly different at 95%), how many of the published findings
    it reproduced, and which judges did not make the headline panel."""
    sentences = []
    cells = [cell for cell in summary.panel_cells if cell.arm != "base"]
    bases = {cell.model: cell for cell in summary.panel_cells if cell.arm == "base"}
    for model in dict.fromkeys(cell.model for cell in cells):
        base = bases.get(model)
        parts = [
            f"{cell.arm} {cell.mean:.2f} ({cell.diff_vs_base:+.2f}, {_change_words(cell.diff_vs_base_low, cell.diff_vs_base_high)})"
            for cell in cells
            if cell.model == model and math.isfinite(cell.mean)
        ]
        if base is not None and math.isfinite(base.mean) and parts:
            sentences.append(f"On {model}, against base at {base.mean:.2f} points of 10: {'; '.join(parts)}.")
    if not sentences:
        sentences.append("No arm could be set against base on the headline panel.")
    if findings is not None:
        results = run_results(run, summary, findings).results
        tally = {}
        for result in results:
            tally[result.verdict] = tally.get(result.verdict, 0) + 1
        counts = ", ".join(f"{count} {verdict}" for verdict, count in tally.items())
        sentences.append(f"Of the {len(results)} findings of the study it is set against: {counts} (see Reproduction).")
    failed = [c.judge for c in summary.controls if not c.passed]
    if failed:
        sentences.append(f"Judges left out of the headline panel for failing their controls: {', '.join(failed)}.")
    sentences.append("Changes are in panel points with 95% intervals; 'clearly' means the interval leaves out 0.")
    simulated = " This run is SIMULATED: no real model answered." if run.simulated else ""
    return Paragraph(f"What {run.label} found. " + " ".join(sentences) + simulated)


def gate_failures(run: RunData, summary: StudySummary, findings: FindingsSet | None, fail_on: list[str]) -> list[str]:
    """What trips the gate, one line each: `contradicted` (any finding) or
    `contradicted:ID[,ID]` (the named findings) contradicted by the run, and `judge-controls`
    (a judge that failed its controls). Empty when the run passes."""
    problems = []
    for rule in fail_on:
        kind, _, names = rule.partition(":")
        if kind == GATE_JUDGES and not names:
            problems += [f"judge {c.judge} failed its controls: {c.verdict}" for c in summary.controls if not c.passed]
        elif kind == GATE_CONTRADICTED:
            if findings is None:
                raise UserError(f"--fail-on {rule}: the run is set against no findings (eval.findings or --findings)")
            wanted = [name.strip() for name in names.split(",") if name.strip()]
            known = [finding.id for finding in findings.content.findings]
            unknown = [name for name in wanted if name not in known]
            if unknown:
                raise UserError(f"--fail-on {rule}: no finding {unknown[0]!r} in {findings.name}; its findings are {', '.join(known)}")
            for result in run_results(run, summary, findings).results:
                if result.verdict == CONTRADICTED and (not wanted or result.finding.id in wanted):
                    problems.append(f"finding {result.finding.id} contradicted: {result.finding.claim}")
        else:
            raise UserError(f"--fail-on {rule}: expected {GATE_CONTRADICTED}, {GATE_CONTRADICTED}:ID[,ID] or {GATE_JUDGES}")
    return problems
