"""What a finished run leaves in its study folder for people: answers.jsonl, and the report.

Both are written from the store alone, after the study (local or Bedrock) has run, so a report
can be rewritten at any time without a model.
"""

from __future__ import annotations

from pathlib import Path

from localnova.report.collect import collect_run
from localnova.report.export import export_run, write_answers_jsonl
from localnova.report.render import write_report
from localnova.report.summarize import summarize_run
from localnova.report.tracking import report_to_tracker
from localnova.study_parts import TrackerConfig

ANSWERS_FILE = "answers.jsonl"


def publish_run(study_dir: Path, run_id: str, with_report: bool = True) -> list[Path]:
    """Write answers.jsonl and (unless `with_report` is False) report.md and report.html for
    one run; returns the paths written."""
    run = collect_run(study_dir, run_id)
    answers_path = study_dir / ANSWERS_FILE
    write_answers_jsonl(run, answers_path)
    if not with_report:
        return [answers_path]
    return [answers_path, *write_report([run], study_dir)]


def track_run(study_dir: Path, run_id: str, tracker: TrackerConfig, written: list[Path]) -> str:
    """Send one finished run to the config's tracker: its settings and summary metrics, the
    files `written` (the report), its answer records and its Inspect log. Returns where."""
    run = collect_run(study_dir, run_id)
    logs = export_run(study_dir, run_id, "records") + export_run(study_dir, run_id, "inspect")
    return report_to_tracker(tracker, run, summarize_run(run), [*written, *logs])
