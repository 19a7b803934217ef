"""The study pipeline end to end: a simulated study in seconds, and the real small model
killed with SIGKILL at several points and resumed."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localnova.backends.base import Backend
from localnova.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO_EVAL = REPO / "data" / "demo" / "eval.jsonl"
DEMO_CORPUS = REPO / "data" / "demo" / "corpus"


def simulated_config(tmp_path, limit=6):
    path = tmp_path / "sim.yaml"
    path.write_text(f"""name: sim
output_dir: {tmp_path / "runs"}
corpus: {{path: {DEMO_CORPUS}, chunking: {{strategy: fixed, chunk_tokens: 120, overlap_tokens: 20}}}}
retrieval: {{top_k: 3}}
eval: {{path: {DEMO_EVAL}, limit: {limit}}}
models:
  - {{name: sim-model, backend: simulated, model: sim-1}}
arms: [base, rag]
judges:
  - {{name: f1, kind: token_f1}}
  - {{name: sim-judge, kind: llm, model: {{name: sim-judge, backend: simulated, model: judge-1}}}}
""")
    return path


def test_simulated_study_writes_every_record_and_reruns_from_the_store(tmp_path, capsys):
    config = simulated_config(tmp_path)
    assert main(["run", str(config)]) == 0
    study = tmp_path / "runs" / "sim"
    summary = json.loads((study / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["questions"] == 6
    answers = [json.loads(line) for line in (study / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 12 and {a["arm"] for a in answers} == {"base", "rag"}
    rag = next(a for a in answers if a["arm"] == "rag")
    assert len(rag["retrieved"]) == 3 and rag["input_tokens"] > 0 and rag["latency_ms"] > 0
    assert "passages" in rag["prompt"][-1]["content"]
    assert "recall_at_3" in summary["answer_metrics"]["sim-model/rag"]
    assert (study / "report.html").is_file() and (study / "config.yaml").is_file()
    first_calls = summary["model_calls"]
    # answers, judged answers, 3 controls x 6 questions (identical judge prompts are sent once),
    # and the latency probe's one untimed warm-up call
    assert first_calls == store_rows(study)[2] and 36 + 1 <= first_calls <= 12 + 12 + 18 + 1
    # the latency probe: every sampled question (all 6, fewer than its 10) x 2 rounds x 2 arms
    probe = sqlite3.connect(study / "store.sqlite").execute(
        "SELECT arm, count(DISTINCT question_id), count(*) FROM latency_probe GROUP BY arm"
    )
    assert sorted(probe.fetchall()) == [("base", 6, 12), ("rag", 6, 12)]
    report = (study / "report.md").read_text()
    assert "Latency by arm, from the interleaved probe" in report and "| sim-model | rag | 6 | 12 |" in report
    # the run keeps each question's source documents, and the report clusters by the first
    sources = [json.loads(line)["doc_ids"] for line in DEMO_EVAL.read_text().splitlines()[:6]]
    documents = len({doc_ids[0] for doc_ids in sources})
    assert documents < 6 and f"6 questions from {documents} documents" in report
    assert "clustered by source document" in report

    assert main(["run", str(config)]) == 0
    again = json.loads((study / "summary.json").read_text())
    # answers come back from the store; judgments are reused whole, so no judge call is even asked for
    assert again["model_calls"] == 0 and again["cached_calls"] == 12
    assert again["run_id"] == summary["run_id"]
    # the same report, whose Runs table still counts the first invocation's calls
    assert (study / "report.md").read_text() == report
    runs_row = next(line for line in report.split("## Runs", 1)[1].splitlines() if line.startswith(f"| {summary['run_id']} |"))
    assert runs_row.endswith(f"| {first_calls} | 0 |")
    # asking for failed judgments to be retried finds none here: still no model call
    assert main(["run", str(config), "--retry-failed"]) == 0
    assert json.loads((study / "summary.json").read_text())["model_calls"] == 0


def test_limit_and_arms_subset(tmp_path):
    assert main(["run", str(simulated_config(tmp_path)), "--limit", "2", "--arms", "base", "--no-report"]) == 0
    summary = json.loads((tmp_path / "runs" / "sim" / "summary.json").read_text())
    assert summary["questions"] == 2 and summary["arms"] == ["base"]
    assert not (tmp_path / "runs" / "sim" / "report.html").exists()


def store_rows(study_dir):
    connection = sqlite3.connect(study_dir / "store.sqlite")
    answers = connection.execute(
        "SELECT a.model, a.arm, a.question_id, json_extract(g.result_json, '$.text') "
        "FROM answers a JOIN generations g ON g.key=a.generation_key ORDER BY 1,2,3"
    ).fetchall()
    judgments = connection.execute("SELECT judge, model, arm, question_id, subject, score FROM judgments ORDER BY 1,2,3,4,5").fetchall()
    generations = connection.execute("SELECT count(*) FROM generations").fetchone()[0]
    connection.close()
    return answers, judgments, generations


def generation_count(study_dir):
    path = study_dir / "store.sqlite"
    if not path.exists():
        return 0
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        count = connection.execute("SELECT count(*) FROM generations").fetchone()[0]
        connection.close()
        return count
    except sqlite3.Error:
        return 0


def demo_command(output_dir):
    return [
        sys.executable,
        "-m",
        "localnova.cli",
        "run",
        str(REPO / "configs" / "demo.yaml"),
        "--arms",
        "base,rag",
        "--limit",
        "4",
        "--no-report",
        "--set",
        f"output_dir={output_dir}",
        "--set",
        f"corpus.path={DEMO_CORPUS}",
        "--set",
        f"eval.path={DEMO_EVAL}",
        "--set",
        "models.0.generation.batch_size=2",
        "--set",
        "models.0.generation.max_new_tokens=24",
        "--set",
        "judges.2.model.generation.batch_size=2",
        # the probe's resumption has its own tests (test_latency_probe.py); here it only has to
        # be there, so two questions keep each of the five runs short
        "--set",
        "eval.latency_probe.questions=2",
    ]


@pytest.mark.slow
def test_kill_9_at_several_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference_dir = tmp_path / "reference"
    subprocess.run(demo_command(reference_dir), check=True, env=env, cwd=tmp_path, capture_output=True)
    reference = store_rows(reference_dir / "demo")
    total_calls = reference[2]
    # 8 answers; the logprob judge reads the score position of 8 answers and 12 controls, and
    # the token after a forced "1" in the same request (the transformers backend forces it)
    connection = sqlite3.connect(reference_dir / "demo" / "store.sqlite")
    judge_requests = "SELECT json_extract(request_json, '$.params') FROM generations WHERE request_json LIKE '%top_logprobs\": 20%'"
    judge_params = [json.loads(row[0]) for row in connection.execute(judge_requests)]
    connection.close()
    assert len(judge_params) == 20 and all(params["first_token"] == "1" and params["max_new_tokens"] == 2 for params in judge_params)
    assert total_calls == 8 + 20

    resumed_dir = tmp_path / "resumed"
    study = resumed_dir / "demo"
    kills = 0
    for kill_at in (1, 9, 17):  # during the answers, at the start of judging, mid-judging
        process = subprocess.Popen(demo_command(resumed_dir), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while process.poll() is None and generation_count(study) < kill_at and time.time() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
    assert kills >= 2, "the run finished before it could be killed"
    stored_before_resume = generation_count(study)
    assert stored_before_resume < total_calls

    subprocess.run(demo_command(resumed_dir), check=True, env=env, cwd=tmp_path, capture_output=True)
    summary = json.loads((study / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["model_calls"] == total_calls - stored_before_resume
    answers, judgments, generations = store_rows(study)
    assert generations == total_calls
    assert answers == reference[0]
    assert judgments == reference[1]


class QuizGenerator:
    """A deterministic stand-in gen-qa generator, registered as the simulated backend for one
    test: one Q/A pair per sentence of the passage it is asked about."""

    calls = 0

    def __init__(self, model, adapter_path=None):
        self.identity = {"backend": "test-quiz", "model": model.model}

    def generate(self, requests):
        from localnova.types import GenerationResult

        QuizGenerator.calls += len(requests)
        results = []
        for request in requests:
            passage = request.messages[-1][1].split("Passage:\n", 1)[1].split("\n\n", 1)[0]
            sentences = [s.strip() for s in passage.replace("\n", " ").split(". ") if len(s.split()) > 5]
            text = "\n\n".join(f"Q: What does the passage say about item {i + 1}?\nA: {s.rstrip('.')}." for i, s in enumerate(sentences))
            results.append(GenerationResult(text=text, input_tokens=10, output_tokens=10, latency_ms=1.0))
        return results

    def close(self):
        pass


@pytest.mark.slow
def test_run_without_a_training_file_generates_pairs_then_trains_and_reuses_them(tmp_path, monkeypatch, capsys):
    """finetune.train_path null: `run` runs the gen-qa stage itself before training, and a
    second run reuses the generated files without asking the generator again."""
    from localnova import backends

    monkeypatch.setitem(backends.BACKENDS, "simulated", "test_pipeline:QuizGenerator")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in sorted(os.listdir(DEMO_CORPUS))[:2]:
        (corpus / name).write_text((DEMO_CORPUS / name).read_text())
    path = tmp_path / "ft.yaml"
    path.write_text(f"""name: ft
output_dir: {tmp_path / "runs"}
corpus: {{path: {corpus}, chunking: {{strategy: fixed, chunk_tokens: 120, overlap_tokens: 20}}}}
eval: {{path: {DEMO_EVAL}, limit: 2}}
models:
  - {{name: smol, model: smollm2-135m-instruct, generation: {{max_new_tokens: 8, batch_size: 2}}}}
arms: [ft]
judges:
  - {{name: f1, kind: token_f1}}
gen_qa: {{generator: {{name: quiz, backend: simulated, model: quiz-1}}, validation_fraction: 0.0}}
finetune: {{epochs: 1, batch_size: 4, max_seq_length: 96, max_train_pairs: 8}}
""")
    assert main(["run", str(path), "--no-report"]) == 0
    study = tmp_path / "runs" / "ft"
    generated = study / "gen_qa" / "train.jsonl"
    assert generated.is_file() and generated.read_text().count("\n") > 0
    assert QuizGenerator.calls > 0
    assert (study / "adapters" / "smol").is_dir()
    summary = json.loads((study / "summary.json").read_text())
    assert summary["status"] == "complete" and any(stage.startswith("gen-qa") for stage in summary["timings_s"])
    calls_before = QuizGenerator.calls
    assert main(["run", str(path), "--no-report"]) == 0
    assert QuizGenerator.calls == calls_before  # the pairs were reused, not generated again
    assert not any(stage.startswith("gen-qa") for stage in json.loads((study / "summary.json").read_text())["timings_s"])


class CountingBackend(Backend):
    """The simulated backend, counting how many instances are alive (built and not closed)."""

    live = 0
    most_live = 0
    built = 0

    def __init__(self, model, adapter_path=None):
        from localnova.backends.simulated import SimulatedBackend

        self.inner = SimulatedBackend(model, adapter_path)
        self.identity = self.inner.identity
        self.supports_logprobs = True
        CountingBackend.built += 1
        CountingBackend.live += 1
        CountingBackend.most_live = max(CountingBackend.most_live, CountingBackend.live)

    def generate(self, requests):
        return self.inner.generate(requests)

    def requests_per_call(self, batch_size):
        return self.inner.requests_per_call(batch_size)

    def close(self):
        CountingBackend.live -= 1


def test_one_model_at_a_time_across_answers_and_judges(tmp_path, monkeypatch):
    """Two answer models (each with and without an adapter) and two LLM judges: each backend is
    built, used and closed before the next is built, so a GPU holds one model at a time."""
    from localnova import backends

    monkeypatch.setitem(backends.BACKENDS, "simulated", "test_pipeline:CountingBackend")
    path = simulated_config(tmp_path, limit=3)
    text = path.read_text().replace("arms: [base, rag]", "arms: [base, rag, ft, ft_rag]")
    text = text.replace(
        "  - {name: sim-model, backend: simulated, model: sim-1}",
        "  - {name: sim-model, backend: simulated, model: sim-1}\n  - {name: sim-model-2, backend: simulated, model: sim-2}",
    )
    text += "  - {name: sim-judge-2, kind: llm, model: {name: sim-judge-2, backend: simulated, model: judge-2}}\n"
    path.write_text(text.replace("limit: 3}", "limit: 3, latency_probe: {enabled: false}}"))
    assert main(["run", str(path), "--no-report"]) == 0
    assert CountingBackend.built == 2 * 2 + 2  # per answer model: without and with its adapter; then each judge
    assert CountingBackend.most_live == 1 and CountingBackend.live == 0
    # The latency probe times a model's base arms beside its ft arms: the base model is built
    # again beside the adapter's, once per model, and closed with it.
    CountingBackend.built = CountingBackend.most_live = 0
    path.write_text(text)
    assert main(["run", str(path), "--no-report"]) == 0
    assert CountingBackend.built == 2 * 3 + 2 and CountingBackend.most_live == 2 and CountingBackend.live == 0
