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
    arm_order, model_order = config_order(run)

    def in_order(rows):
        # the summary takes arms and models in the order their rows come: the config's order
        return sorted(rows, key=lambda row: (_position(model_order, row.model), _position(arm_order, row.arm)))

    return summarize(
        in_order(run.score_rows),
        in_order(run.generation_rows),
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


def config_order(run: RunData) -> tuple[list[str], list[str]]:
    """The run's arms and models in the order its config lists them (then any others, in the
    order they appear in its records)."""
    config = run.study_config
    arms = list(config.get("arms") or [])
    models = [str(model.get("name")) for model in config.get("models") or [] if isinstance(model, dict)]
    arms += [a for a in dict.fromkeys(answer.arm for answer in run.answers) if a not in arms]
    models += [m for m in dict.fromkeys(answer.model for answer in run.answers) if m not in models]
    return arms, models


def _position(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)
