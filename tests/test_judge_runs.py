"""`localnova judge`: a config's judges put on runs already answered, through each run's store:
the answers and the run's own counts untouched, the new judgments counted, a run of other
questions refused in one line, a judge of a name the run holds stored beside it, resumable
after kill -9, and a Bedrock panel checked, estimated and guarded before it spends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localnova.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO_EVAL = REPO / "data" / "demo" / "eval.jsonl"
DEMO_CORPUS = REPO / "data" / "demo" / "corpus"
QUESTIONS = 4


def study_config(tmp_path: Path, judges: str, name: str = "sim", eval_path: Path = DEMO_EVAL, limit: int = QUESTIONS) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""name: {name}
output_dir: {tmp_path / "runs"}
corpus: {{path: {DEMO_CORPUS}, chunking: {{strategy: fixed, chunk_tokens: 120, overlap_tokens: 20}}}}
eval: {{path: {eval_path}, limit: {limit}, latency_probe: {{enabled: false}}}}
models:
  - {{name: sim-model, backend: simulated, model: sim-1}}
  - {{name: sim-model-2, backend: simulated, model: sim-2}}
arms: [base]
judges:
{judges}""")
    return path


F1 = "  - {name: f1, kind: token_f1}\n"
SIM_JUDGE = "  - {{name: {name}, kind: llm, model: {{name: {name}, backend: simulated, model: {model}}}}}\n"


@pytest.fixture(scope="module")
def answered_once(tmp_path_factory) -> Path:
    """A simulated study of 4 questions x 2 models (base arm: no index, no embedder to load),
    judged by token F1 alone."""
    tmp_path = tmp_path_factory.mktemp("answered")
    assert main(["run", str(study_config(tmp_path, F1)), "--no-report"]) == 0
    return tmp_path / "runs" / "sim"


@pytest.fixture
def study(answered_once, tmp_path) -> Path:
    """A copy of that study of the test's own."""
    return Path(shutil.copytree(answered_once, tmp_path / "runs" / "sim"))


def judge_prompts(study: Path) -> int:
    """How many distinct texts a new LLM judge is asked about: the answers (two models may give
    one question the same answer, and identical requests are sent once) and 3 controls a question."""
    connection = sqlite3.connect(study / "store.sqlite")
    try:
        texts = connection.execute(
            "SELECT DISTINCT a.question_id, json_extract(g.result_json, '$.text') "
            "FROM answers a JOIN generations g ON g.key = a.generation_key"
        ).fetchall()
    finally:
        connection.close()
    return len(texts) + 3 * QUESTIONS


def snapshot(study: Path) -> dict:
    connection = sqlite3.connect(study / "store.sqlite")
    try:
        return {
            "answers": connection.execute(
                "SELECT a.model, a.arm, a.question_id, a.generation_key, g.result_json FROM answers a "
                "JOIN generations g ON g.key = a.generation_key ORDER BY 1, 2, 3"
            ).fetchall(),
            "runs": connection.execute("SELECT run_id, status, model_calls, cached_calls FROM runs").fetchall(),
            "judgments": connection.execute("SELECT judge, count(*) FROM judgments GROUP BY judge ORDER BY judge").fetchall(),
            "generations": connection.execute("SELECT count(*) FROM generations").fetchone()[0],
        }
    finally:
        connection.close()


def test_a_new_panel_judges_the_stored_answers_and_leaves_them_as_they_were(study, tmp_path, capsys):
    before = snapshot(study)
    assert before["judgments"] == [("f1", 8 + 3 * QUESTIONS)]
    panel = study_config(tmp_path, F1 + SIM_JUDGE.format(name="sim-judge", model="judge-1"), name="panel")
    assert main(["judge", "--config", str(panel), str(study), "--no-report"]) == 0
    after = snapshot(study)
    assert after["answers"] == before["answers"]  # the same answers, from the same generations
    assert after["runs"] == before["runs"]  # the run's own status and call counts
    # the new judge scored 8 answers and 3 controls a question; token F1 is the run's own and is reused
    assert after["judgments"] == [("f1", 20), ("sim-judge", 8 + 3 * QUESTIONS)]
    # every judgment of the simulated judge took one call, identical prompts sent once
    assert after["generations"] - before["generations"] == judge_prompts(study) <= 8 + 3 * QUESTIONS
    out = capsys.readouterr().out
    assert "20 judgments made now (f1 0, sim-judge 20)" in out and "its 8 answers, unchanged" in out
    added = json.loads(
        sqlite3.connect(study / "store.sqlite").execute("SELECT value_json FROM artifacts WHERE name='added_judges'").fetchone()[0]
    )
    assert set(added) == {"sim-judge"} and added["sim-judge"]["config"] == "panel"  # token F1 is the run's own

    # the same command again makes nothing
    assert main(["judge", "--config", str(panel), str(study), "--no-report"]) == 0
    assert snapshot(study) == after and "0 judgments made now" in capsys.readouterr().out


def test_a_judge_of_a_name_the_run_uses_is_stored_beside_it(study, tmp_path, capsys):
    panel = study_config(tmp_path, "  - {name: f1, kind: token_f1, max_attempts: 5}\n", name="panel")
    assert main(["judge", "--config", str(panel), str(study), "--no-report"]) == 0
    assert snapshot(study)["judgments"] == [("f1", 20), ("f1@panel", 20)]
    assert "the run has another judge named f1: this one is stored as f1@panel" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, said",
    [
        ({"limit": 6}, "q005 is not in"),  # the run asked 4; this config's eval set holds 6 and the run's 4
        ({"eval_path": "other"}, "asks another question"),
    ],
)
def test_a_run_of_other_questions_is_refused_in_one_line(study, tmp_path, capsys, change, said):
    before = snapshot(study)
    if change.get("eval_path") == "other":
        rows = [json.loads(line) for line in DEMO_EVAL.read_text().splitlines() if line.strip()]
        rows[0]["question"] = "Something else entirely?"
        (tmp_path / "other.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        panel = study_config(tmp_path, F1, name="panel", eval_path=tmp_path / "other.jsonl")
    else:
        panel = study_config(tmp_path, F1, name="panel", limit=3)
        said = "q004 is not in"
    assert main(["judge", "--config", str(panel), str(study)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its questions are not the config's" in err[0] and said in err[0]
    assert snapshot(study) == before


def test_a_simulated_judge_is_refused_on_a_run_that_is_not(study, tmp_path, capsys):
    sqlite3.connect(study / "store.sqlite").execute("DELETE FROM artifacts WHERE name='simulated'").connection.commit()
    panel = study_config(tmp_path, SIM_JUDGE.format(name="sim-judge", model="judge-1"), name="panel")
    assert main(["judge", "--config", str(panel), str(study)]) == 2
    assert "is simulated and the run is not" in capsys.readouterr().err


SLOW_JUDGE_RUNNER = """
import sys, time
from localnova import backends
from localnova.backends.simulated import SimulatedBackend

class SlowJudge(SimulatedBackend):
    def generate(self, requests):
        time.sleep(0.15 * len(requests))
        return super().generate(requests)

sys.modules["slow_judge"] = sys.modules[__name__]
backends.BACKENDS["simulated"] = "slow_judge:SlowJudge"
from localnova.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _generations(study: Path) -> int:
    try:
        connection = sqlite3.connect(f"file:{study / 'store.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            return connection.execute("SELECT count(*) FROM generations").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_killed_with_sigkill_then_run_again_it_makes_only_what_is_missing(study, tmp_path):
    judge = (
        "  - {name: slow-judge, kind: llm, model: {name: slow-judge, backend: simulated, model: judge-1, generation: {batch_size: 1}}}\n"
    )
    panel = study_config(tmp_path, judge, name="panel")
    runner = tmp_path / "runner.py"
    runner.write_text(SLOW_JUDGE_RUNNER)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(runner), "judge", "--config", str(panel), str(study), "--no-report"]
    before = snapshot(study)
    needed = judge_prompts(study)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while process.poll() is None and _generations(study) < before["generations"] + needed // 2 and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the judge command finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    made_before_kill = _generations(study) - before["generations"]
    assert 0 < made_before_kill < needed

    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    # the rerun made only the calls the killed one had not stored, and judged everything
    assert f"{needed - made_before_kill} model calls" in finished.stdout
    after = snapshot(study)
    assert after["generations"] - before["generations"] == needed
    assert (
        ("slow-judge", 8 + 3 * QUESTIONS) in after["judgments"]
        and after["answers"] == before["answers"]
        and after["runs"] == before["runs"]
    )


def test_a_bedrock_panel_is_checked_estimated_and_guarded_before_it_spends(study, monkeypatch, boto_clients, capsys):
    """The shipped Bedrock config's Llama 3.1 70B put on a stored run, against the fake account:
    over budget, it stops after the free checks and before any converse call; within budget, it
    pays each judgment once, and the estimate it showed is not below what the account billed."""
    pytest.importorskip("botocore")
    from bedrock_fake_account import FakeAccount
    from bedrock_fake_services import FakeClock
    from bedrock_fixtures import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
    from localnova.aws import clients as aws_clients
    from localnova.aws.clients import AwsClients
    from localnova.backends import bedrock_backend
    from localnova.bedrock_study.judge import judge_estimate, judge_runs_on_bedrock
    from localnova.bedrock_study.study import with_bedrock_settings
    from localnova.config import load_config
    from localnova.errors import UserError
    from localnova.judge_runs import RunTarget, select_judges

    clock = FakeClock()
    account = FakeAccount(clock)
    account.install(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    monkeypatch.setattr(aws_clients, "SLEEP", clock.advance)
    monkeypatch.setattr(bedrock_backend, "make_client", lambda service, region: boto_clients[service])
    monkeypatch.setattr(bedrock_backend, "require_credentials", lambda region: None)
    clients = AwsClients("us-east-1", dict(boto_clients), check_credentials=False)
    paths = [f"eval.path={DEMO_EVAL}", f"corpus.path={DEMO_CORPUS}"]

    def config(budget_usd: float):
        shipped = load_config(REPO / "configs" / "bedrock-nova.yaml", [*paths, f"bedrock.budget_usd={budget_usd}"])
        return select_judges(shipped, ["llama-3-1-70b"])

    before = snapshot(study)
    with pytest.raises(UserError, match="exceeds the budget"):
        judge_runs_on_bedrock(config(0.0001), [RunTarget(study)], assume_yes=True, clients=clients)
    assert ("bedrock-runtime", "Converse") not in account.calls and ("sts", "GetCallerIdentity") in account.calls
    assert snapshot(study) == before
    assert "llama-3-1-70b" in capsys.readouterr().out  # the estimate's judge line was shown
    estimate = judge_estimate(with_bedrock_settings(config(50.0)), [RunTarget(study)]).total("on_demand")

    judged = judge_runs_on_bedrock(config(50.0), [RunTarget(study)], assume_yes=True, clients=clients)
    judgments = 8 + 3 * QUESTIONS
    assert judged[0].made == {"llama-3-1-70b": judgments}
    # one paid call for each distinct prompt, none twice
    calls = sum(1 for call in account.calls if call == ("bedrock-runtime", "Converse"))
    assert calls == judge_prompts(study) == sum(account.delivered.values()) and max(account.delivered.values()) == 1
    after = snapshot(study)
    assert ("llama-3-1-70b", judgments) in after["judgments"] and after["answers"] == before["answers"] and after["runs"] == before["runs"]
    assert 0 < account.meter_total() <= estimate


def test_adding_a_reference_judge_to_a_config_reuses_every_stored_answer(study, tmp_path):
    """The shipped configs gained reference judges: a run of a config with one added is another
    run, but its answers' requests and keys are the same, so every answer comes from the store
    and no model is called. (MiniLM similarity, the other, is left out only to spare loading it.)"""
    reference = "  - {name: token-f1, kind: token_f1}\n"
    assert main(["run", str(study_config(tmp_path, F1 + reference)), "--no-report"]) == 0
    summary = json.loads((study / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["model_calls"] == 0 and summary["cached_calls"] == 8
    connection = sqlite3.connect(study / "store.sqlite")
    rows = connection.execute("SELECT run_id, model, arm, question_id, generation_key FROM answers").fetchall()
    connection.close()
    by_run: dict[str, set] = {}
    for run_id, *answer in rows:
        by_run.setdefault(run_id, set()).add(tuple(answer))
    first, second = by_run.values()  # two runs, the new one's answers the stored ones, key for key
    assert len(first) == 8 and first == second
