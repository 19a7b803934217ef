"""The eval log others read: answer records in their versioned schema, Inspect AI's eval log
read back by inspect_ai's own reader, and a run's metrics and files in an MLflow file store."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from localnova.cli import main
from localnova.report.collect import collect_run
from localnova.report.eval_log import RECORD_SCHEMA, RECORD_VERSION
from localnova.report.export import export_run
from localnova.report.publish import track_run
from localnova.report.summarize import summarize_run
from localnova.report.tracking import run_metrics
from localnova.study_parts import TrackerConfig

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = 4


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A simulated study of 4 demo questions, 2 arms, 2 judges (seconds, no model)."""
    folder = tmp_path_factory.mktemp("evallog")
    config = folder / "sim.yaml"
    config.write_text(f"""name: sim
output_dir: {folder / "runs"}
corpus: {{path: {REPO / "data/demo/corpus"}, chunking: {{strategy: fixed, chunk_tokens: 120, overlap_tokens: 20}}}}
retrieval: {{top_k: 2}}
eval: {{path: {REPO / "data/demo/eval.jsonl"}, limit: {QUESTIONS}, latency_probe: {{enabled: false}}}}
models:
  - {{name: sim-model, backend: simulated, model: sim-1}}
arms: [base, rag]
judges:
  - {{name: f1, kind: token_f1}}
  - {{name: sim-judge, kind: llm, model: {{name: sim-judge, backend: simulated, model: judge-1}}}}
""")
    assert main(["run", str(config), "--no-report"]) == 0
    return folder / "runs" / "sim"


def test_each_answer_is_one_record_with_its_judgments_and_passages(study, tmp_path):
    (path,) = export_run(study, fmt="records", out_dir=tmp_path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == QUESTIONS * 2
    eval_rows = {row["question_id"]: row for row in map(json.loads, (REPO / "data/demo/eval.jsonl").read_text().splitlines())}
    for record in records:
        assert (record["schema"], record["version"]) == (RECORD_SCHEMA, RECORD_VERSION)
        assert record["ground_truth"] == eval_rows[record["question_id"]]["answer"]
        assert {j["judge"] for j in record["judgments"]} == {"f1", "sim-judge"}
        assert all(j["reason"] for j in record["judgments"] if j["judge"] == "sim-judge")
        scores = [j["score"] for j in record["judgments"] if j["headline"] and j["score"] is not None]
        assert record["panel_score"] == pytest.approx(sum(scores) / len(scores), abs=1e-4)
        if record["arm"] == "rag":
            sources = set(eval_rows[record["question_id"]]["doc_ids"])
            assert [c["holds_source"] for c in record["retrieved"]] == [c["doc_id"] in sources for c in record["retrieved"]]
            assert record["source_retrieved"] == any(c["doc_id"] in sources for c in record["retrieved"])
        else:
            assert record["retrieved"] == [] and record["source_retrieved"] is None


# Inspect AI reads the log in an environment of its own (the Makefile's .venv-inspect, whose
# python `make test` names here) and prints what it read.
INSPECT_PYTHON = os.environ.get("LOCALNOVA_INSPECT_PYTHON")
READ_BACK = """
import json, sys
from inspect_ai.log import read_eval_log
log = read_eval_log(sys.argv[1])
print(json.dumps({
    "status": log.status,
    "model": log.eval.model,
    "samples": [
        {"id": s.id, "epoch": s.epoch, "metadata": s.metadata, "completion": s.output.completion, "target": s.target,
         "scores": {name: {"value": score.value, "explanation": score.explanation} for name, score in s.scores.items()}}
        for s in log.samples
    ],
    "result_scores": [score.name for score in log.results.scores],
}))
"""


def test_inspect_ai_reads_the_log_with_one_sample_per_question_and_arm(study, tmp_path):
    if not INSPECT_PYTHON:
        pytest.skip("needs inspect-ai: `make test` installs it in .venv-inspect and sets LOCALNOVA_INSPECT_PYTHON")
    assert Path(INSPECT_PYTHON).is_file(), f"LOCALNOVA_INSPECT_PYTHON={INSPECT_PYTHON} does not exist"
    (path,) = export_run(study, fmt="inspect", out_dir=tmp_path)
    read = subprocess.run([INSPECT_PYTHON, "-c", READ_BACK, str(path)], capture_output=True, text=True, timeout=300)
    assert read.returncode == 0, read.stderr[-3000:]
    log = json.loads(read.stdout)
    assert log["status"] == "success" and log["model"] == "localnova/sim-model"
    samples = log["samples"]
    assert len(samples) == QUESTIONS * 2
    assert len({(s["id"], s["epoch"]) for s in samples}) == len(samples)
    assert {s["metadata"]["arm"] for s in samples} == {"base", "rag"}
    records = {
        (r["question_id"], r["arm"]): r
        for r in map(json.loads, export_run(study, fmt="records", out_dir=tmp_path)[0].read_text().splitlines())
    }
    for sample in samples:
        record = records[(sample["metadata"]["question_id"], sample["metadata"]["arm"])]
        assert sample["completion"] == record["answer"] and sample["target"] == record["ground_truth"]
        assert sample["scores"]["panel"]["value"] == record["panel_score"]
        assert sample["scores"]["sim-judge"]["explanation"] == next(j["reason"] for j in record["judgments"] if j["judge"] == "sim-judge")
    assert set(log["result_scores"]) == {"f1", "sim-judge", "panel"}


def test_the_run_goes_to_an_mlflow_file_store(study, tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is in the dev extra")
    run = collect_run(study)
    store = tmp_path / "mlruns"
    where = track_run(study, run.run_id, TrackerConfig(kind="mlflow", uri=str(store), experiment="localnova-test"), [])
    assert str(store.name) in where
    client = mlflow.tracking.MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name("localnova-test")
    (logged,) = client.search_runs([experiment.experiment_id])
    expected = run_metrics(summarize_run(run))
    assert expected and logged.data.metrics == pytest.approx(expected)
    assert logged.data.params["arms"] == "base,rag" and logged.data.tags["mlflow.runName"] == run.run_id
    artifacts = {item.path for item in client.list_artifacts(logged.info.run_id)}
    assert f"{run.run_id}-records.jsonl" in artifacts and f"{run.run_id}-sim-model.json" in artifacts
