"""The live spend guard: a run whose calls cost more than the estimate stops at the budget in
one line, with its hosting deleted, every paid answer and judgment kept; a rerun with a larger
budget finishes without repeating a single paid call or hosting anything it no longer needs."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from bedrock_fixtures import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, study_config
from localnova.aws.clients import AwsClients
from localnova.backends import bedrock_backend
from localnova.bedrock.preflight import PreflightReport
from localnova.bedrock_study import study as bedrock_study
from localnova.config import select_run
from localnova.costs import BudgetExceeded

CUSTOM_MODEL = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-micro-v1:0:128k/cm1abc123def"
DEPLOYMENT = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/dep1abc123de"
JUDGE_INPUT_TOKENS = 100_000  # $0.30 a judge call at Claude's $3 per million: far above the estimate


class FakeRuntime:
    """Bedrock Runtime's converse, counting the calls per model id."""

    def __init__(self):
        self.calls = Counter()
        self.lock = threading.Lock()

    def converse(self, modelId, messages, inferenceConfig, system=None):
        with self.lock:
            self.calls[modelId] += 1
        judge = "claude" in modelId
        text = json.dumps({"score": 7, "reason": "mostly right"}) if judge else f"The F4 draws 36 watts ({modelId[-6:]})."
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": JUDGE_INPUT_TOKENS if judge else 200, "outputTokens": 20, "totalTokens": 0},
            "metrics": {"latencyMs": 5},
        }


@pytest.fixture
def paid_run(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    runtime = FakeRuntime()
    events: list[str] = []
    monkeypatch.setattr(bedrock_backend, "make_client", lambda service, region, max_attempts=1: runtime)
    monkeypatch.setattr(bedrock_study, "preflight", lambda config, clients: PreflightReport())
    monkeypatch.setattr(bedrock_study, "prepare_customization", lambda config, model, path: type("P", (), {"model_name": model.name})())
    monkeypatch.setattr(bedrock_study, "start_customization", lambda config, prepared, state, clients: prepared.model_name)
    monkeypatch.setattr(
        bedrock_study, "wait_for_customization", lambda config, job, state, clients: type("R", (), {"custom_model_arn": CUSTOM_MODEL})()
    )

    def host(config, model, custom_model_arn, state, clients, allow_spend, estimate_shown):
        events.append("host")
        return DEPLOYMENT

    monkeypatch.setattr(bedrock_study, "host_custom_model", host)
    monkeypatch.setattr(bedrock_study, "release_hosting", lambda state, arn, clients: events.append(f"release {arn}"))
    monkeypatch.setattr(bedrock_study, "release_all_hosting", lambda state, clients: events.append("release all"))

    config = study_config(tmp_path)
    eval_path = Path(config.eval.path)
    eval_path.write_text(
        "".join(
            json.dumps({"question_id": f"q{i}", "question": f"How many watts does lamp F{i} draw?", "answer": f"{i} watts."}) + "\n"
            for i in range(6)
        ),
        encoding="utf-8",
    )
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n", encoding="utf-8"
    )
    config = config.model_copy(update={"finetune": config.finetune.model_copy(update={"train_path": train})})
    config = select_run(config, arms=["base", "ft"])

    def run(budget_usd: float):
        settled = config.model_copy(update={"bedrock": config.bedrock.model_copy(update={"budget_usd": budget_usd})})
        clients = AwsClients("us-east-1", {"bedrock": object()}, check_credentials=False)
        return bedrock_study.run_bedrock_study(settled, dry_run_only=False, allow_spend=False, assume_yes=True, clients=clients)

    return run, runtime, events


def test_budget_stop_then_resume_repeats_no_paid_call(paid_run, capsys):
    run, runtime, events = paid_run
    with pytest.raises(BudgetExceeded, match=r"^bedrock.budget_usd: stopping before a call to anthropic"):
        run(budget_usd=2.5)
    judge_id = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    first = Counter(runtime.calls)
    assert first["us.amazon.nova-micro-v1:0"] == 6 and first[DEPLOYMENT] == 6  # every answer made
    assert 0 < first[judge_id] < 12  # $0.30 a call: the guard stopped near $2.5
    assert events == ["host", f"release {DEPLOYMENT}", "release all"]  # hosted for the ft arms only

    study_dir, run_id = run(budget_usd=10.0)
    second = runtime.calls - first
    assert second["us.amazon.nova-micro-v1:0"] == 0 and second[DEPLOYMENT] == 0  # answers all read back
    assert events[3:] == []  # nothing to answer through the custom model: nothing hosted
    from localnova.store import Store

    store = Store(study_dir)
    try:
        judgments = store.judgments(run_id)
        stored_judge_calls = sum(1 for identity, _, _ in store.generation_usage() if identity["model"] == judge_id)
        actual = store.artifacts(run_id)["cost_actual"]
    finally:
        store.close()
    assert len(judgments) >= 12 and all(j.score == 7 for j in judgments)
    assert first[judge_id] + second[judge_id] == stored_judge_calls  # each judge call paid once, kept once
    expected_usd = stored_judge_calls * 0.3003 + 12 * (0.007 + 0.0028) / 1000
    assert actual["tokens_usd"] == pytest.approx(expected_usd, rel=1e-3)
