"""One run's summary as the report shows it: the controls computed from the run's own
judgments, the headline panel they gate, and the statistics over it, with the run's settings."""

from __future__ import annotations

from localnova.config import BASE_ARM, ControlGate, EvalConfig
from localnova.evaluate.controls import headline_panel, judge_controls
from localnova.evaluate.judges import SUBJECT_ANSWER
from localnova.evaluate.summary import StudySummary, summarize
from localnova.report.collect import RunData


def control_gate(run: RunData) -> ControlGate:
    return ControlGate(**((run.study_config.get("eval") or {}).get("control_gate") or {}))


def summarize_run(run: RunData) -> StudySummary:
    """The summary of `run`, with its seed, bootstrap size, control gate and headline mode as
    its stored config says (the defaults where an older config does not say)."""
    eval_config = run.study_config.get("eval") or {}
    n_resamples = int(eval_config.get("bootstrap_samples") or EvalConfig.model_fields["bootstrap_samples"].default)
    mode = eval_config.get("headline_panel") or EvalConfig.model_fields["headline_panel"].default
    controls_judged = any(judgment.subject != SUBJECT_ANSWER for judgment in run.judgments)
    controls = judge_controls(run.judgments, run.judges, control_gate(run)) if controls_judged else []
    panel = headline_panel(run.judges, controls, mode, controls_judged)
    return summarize(
        run.score_rows,
        run.generation_rows,
        n_resamples=n_resamples,
        seed=int(run.study_config.get("seed") or 0),
        base_arm=BASE_ARM,
        headline_judges=panel.judges,
        headline_note=panel.note,
        controls=controls,
        probe_timings=run.probe_timings,
    )
