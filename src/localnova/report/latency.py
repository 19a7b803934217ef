"""The report's latency comparison: the interleaved probe's table and how it was taken.

The batched run's times stay in the latency and tokens table as throughput (tables.py); the
comparison between arms is this one, since the probe's arms run side by side
(evaluate/latency_probe.py).
"""

from __future__ import annotations

from typing import Any

from localnova.config import BASE_ARM
from localnova.evaluate.summary import StudySummary
from localnova.report.collect import RunData
from localnova.report.tables import Paragraph, Table, number, percent


def latency_probe_blocks(runs: list[RunData], summaries: list[StudySummary]) -> list[Any]:
    """The latency comparison between arms: the interleaved probe's table and what it did."""
    rows, notes = [], []
    for run, summary in zip(runs, summaries, strict=True):
        if not summary.latency_probe:
            notes.append(
                f"{run.label}: no latency probe in this run, so no latency comparison between arms: its only times are the "
                "batched run's below, which measure throughput."
            )
            continue
        for cell in summary.latency_probe:
            rows.append(
                [
                    run.label,
                    cell.model,
                    cell.arm,
                    str(cell.n_questions),
                    str(cell.n_requests),
                    number(cell.median_ms, 0),
                    number(cell.p90_ms, 0),
                    "(reference)" if cell.arm == BASE_ARM else percent(cell.pct_vs_base, cell.pct_vs_base_low, cell.pct_vs_base_high),
                ]
            )
        probe = ((run.study_config.get("eval") or {}).get("latency_probe")) or {}
        cap = probe.get("max_new_tokens")
        capped = f"; each answer capped at {cap} new tokens, so lengths past that are not compared" if cap else ""
        repeats = probe.get("repeats", "?")
        notes.append(f"{run.label}: {repeats} round{'' if repeats == 1 else 's'} per question{capped}.")
    blocks: list[Any] = [
        Paragraph(
            "Latency by arm, from the interleaved probe: on a sample of questions each arm answers one request at a time, "
            "the arms in a random order drawn per question and round, so a machine or service that gets busier during "
            "the run slows every arm alike rather than the arm that happened to run then. The % vs base compares each "
            "arm's mean time per question with the base arm's on the same questions, with a 95% paired t interval "
            "over questions (on a handful of questions it is wide, as it should be)."
        )
    ]
    if rows:
        blocks.append(Table(["run", "model", "arm", "questions", "requests", "median ms", "p90 ms", "mean % vs base [95% CI]"], rows))
    return blocks + [Paragraph(note) for note in notes]
