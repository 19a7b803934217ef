"""A finished run, in the experiment tracker a team already uses: its settings, its summary
metrics per model and arm, and its files (the report, the answer records, the Inspect log),
to MLflow (a tracking server, or a folder as a local file store) or to trackio.

The config names the tracker (`tracker: {kind: mlflow, uri: mlruns}`); nothing is sent without
it. The trackers are imported only here, when a run reports to one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from localnova.errors import UserError
from localnova.evaluate.summary import StudySummary
from localnova.optional import require
from localnova.report.collect import RunData
from localnova.study_parts import TrackerConfig


def run_params(run: RunData) -> dict[str, str]:
    """The run's settings as tracker parameters: what a reader filters runs by."""
    config = run.study_config
    return {
        "study": str(run.info.get("study")),
        "run_id": run.run_id,
        "status": str(run.info.get("status")),
        "arms": ",".join(config.get("arms") or []),
        "models": ",".join(str(m.get("name")) for m in config.get("models") or []),
        "judges": ",".join(str(j.get("name")) for j in config.get("judges") or []),
        "questions": str(len(run.eval_items)),
        "simulated": str(run.simulated).lower(),
    }


def run_metrics(summary: StudySummary) -> dict[str, float]:
    """Summary metrics by name (`<model>/<arm>/<measure>`): the headline panel score with its
    interval, and the change against base in points and %, where each is known."""
    metrics = {}
    for cell in summary.panel_cells:
        for measure, value in (
            ("panel_score", cell.mean),
            ("panel_score_low", cell.low),
            ("panel_score_high", cell.high),
            ("diff_vs_base", cell.diff_vs_base),
            ("pct_vs_base", cell.pct_vs_base),
        ):
            if value is not None and math.isfinite(value):
                metrics[f"{cell.model}/{cell.arm}/{measure}"] = float(value)
    return metrics


def _mlflow(tracker: TrackerConfig, run: RunData, params: dict[str, str], metrics: dict[str, float], files: list[Path]) -> str:
    require("mlflow", "tracker kind mlflow")
    import mlflow

    uri = tracker.uri
    if uri and "://" not in uri and not uri.startswith(("databricks", "sqlite:")):
        uri = Path(uri).resolve().as_uri()  # a folder: MLflow's local file store
        # MLflow 3 keeps the file store only on request; naming a folder is that request
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if uri:
        mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(tracker.experiment or str(run.info.get("study") or run.run_id))
    # MLflow's metric names allow '/', letters, digits, '_', '-', '.', ' ' and ':'
    with mlflow.start_run(run_name=run.run_id) as active:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        for path in files:
            mlflow.log_artifact(str(path))
        return f"mlflow run {active.info.run_id} in {mlflow.get_tracking_uri()}"


def _trackio(tracker: TrackerConfig, run: RunData, params: dict[str, str], metrics: dict[str, float]) -> str:
    require("trackio", "tracker kind trackio")
    import trackio

    project = tracker.experiment or str(run.info.get("study") or run.run_id)
    trackio.init(project=project, name=run.run_id, config=params)
    trackio.log(metrics)
    trackio.finish()
    return f"trackio project {project}, run {run.run_id}"


def report_to_tracker(tracker: TrackerConfig, run: RunData, summary: StudySummary, files: list[Path]) -> str:
    """Send the run's settings, summary metrics and `files` to the tracker; returns a line that
    says where they went."""
    params, metrics = run_params(run), run_metrics(summary)
    files = [path for path in files if Path(path).is_file()]
    if tracker.kind == "mlflow":
        return _mlflow(tracker, run, params, metrics, files)
    if tracker.kind == "trackio":
        return _trackio(tracker, run, params, metrics)
    raise UserError(f"tracker.kind {tracker.kind!r}: expected mlflow or trackio")
