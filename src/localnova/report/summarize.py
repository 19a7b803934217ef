"""One run's summary as the report shows it: the controls computed from the run's own
judgments, the headline panel they gate, and the statistics over it, with the run's settings."""

from __future__ import annotations

from localnova.config import BASE_ARM, LEGACY_GATE_KEYS, ControlGate, EvalConfig
from localnova.evaluate.controls import headline_panel, judge_controls
from localnova.evaluate.judges import SUBJECT_ANSWER
from localnova.evaluate.summary import StudySummary, summarize
from localnova.report.collect import RunData


def control_gate(run: RunData) -> ControlGate:
    """The gate the run's config set. A run stored before the ranking gate holds absolute
    thresholds (LEGACY_GATE_KEYS): they are dropped, and the run is gated by the ranking gate's
    defaults, which the report states."""
    stored = (run.study_config.get("eval") or {}).get("control_gate") or {}
    return ControlGate(**{key: value for key, value in stored.items() if key not in LEGACY_GATE_KEYS})


def legacy_gate_note(run: RunData) -> str:
    """A sentence for a run whose config set the old absolute thresholds, else ''."""
    stored = (run.study_config.get("eval") or {}).get("control_gate") or {}
    old = [f"{key} {stored[key]}" for key in LEGACY_GATE_KEYS if key in stored]
    if not old:
        return ""
    return f"{run.label} was configured with absolute thresholds ({', '.join(old)}); it is gated here by the ranking rule above."


def summarize_run(run: RunData) -> StudySummary:
    """The summary of `run`, with its seed, bootstrap size, control gate and headline mode as
    its stored config says (the defaults where an older config does not say), its questions
    clustered by source document where the run recorded one for each (`RunData.clusters`)."""
    eval_config = run.study_config.get("eval") or {}
    n_resamples = int(eval_config.get("bootstrap_samples") or EvalConfig.model_fields["bootstrap_samples"].default)
    mode = eval_config.get("headline_panel") or EvalConfig.model_fields["headline_panel"].default
    gate = control_gate(run)
    controls_judged = any(judgment.subject != SUBJECT_ANSWER for judgment in run.judgments)
    controls = judge_controls(run.judgments, run.judges, gate) if controls_judged else []
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
        max_answer_failure_rate=gate.max_answer_failure_rate,
        clusters=run.clusters,
    )
