"""The live spend guard against the fake account: a run whose calls cost more than the estimate
stops at the budget in one line, with its hosting deleted and every paid answer kept; a rerun
with a larger budget finishes without paying for any answer twice. And the guard's parts, one
by one: hosting hours re-read as time passes, calls whose answer never came, unpriced models."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bedrock_fake_study import SONNET, Harness
from localnova.aws.state import BedrockState, Resource
from localnova.budget import BudgetExceeded, SpendGuard
from localnova.errors import UserError
from localnova.store import Store

JUDGE_EXTRA_TOKENS = 100_000  # $0.33 a judge call at the regional Sonnet 4.5 price, $3.30 per million


def with_budget(harness: Harness, budget_usd: float) -> None:
    harness.config = harness.config.model_copy(update={"bedrock": harness.config.bedrock.model_copy(update={"budget_usd": budget_usd})})


def test_budget_stop_deletes_hosting_then_a_rerun_pays_no_answer_twice(monkeypatch, fast_tmp, boto_clients):
    harness = Harness(monkeypatch, fast_tmp, boto_clients, "on_demand")
    harness.account.judge_extra_input_tokens = JUDGE_EXTRA_TOKENS
    with_budget(harness, 2.5)  # the estimate (about $1.97, a month of storage most of it) fits; the judges do not
    outcome, line = harness.run()
    assert outcome == "error" and line.startswith(f"bedrock.budget_usd: stopping before a call to {SONNET}")
    assert "\n" not in line
    assert harness.account.live_billable() == []  # the deployment was deleted on the way out
    # The latency probe ran before the judges, inside the deployment's window: per arm, min(1
    # question, eval.latency_probe.questions) x its repeats, and one untimed call per backend
    # (the base model's, the custom model's). Each probe call is told apart by its requestMetadata.
    probe = harness.config.eval.latency_probe
    probe_calls = len(harness.config.arms) * min(1, probe.questions) * probe.repeats + 2
    assert sum(harness.account.probe_delivered.values()) == probe_calls == 4 * 2 + 2
    converse = sum(1 for service, operation in harness.account.calls if operation == "Converse")
    judged_first = sum(harness.account.delivered.values()) - 4  # the 4 answers, then the judge calls paid before the stop
    assert 0 < judged_first < 4 and converse == 4 + probe_calls + judged_first  # every call sent answered; none stopped mid-way

    with_budget(harness, 20.0)
    before = len(harness.account.calls)
    assert harness.run() == ("ok", "")
    harness.check_promises("after the rerun")  # no answer delivered twice, nothing billing, state names all
    rerun = [operation for _, operation in harness.account.calls[before:]]
    # the rerun pays only the judge calls not made: answers and probe rounds come from the store,
    # so the custom model is not hosted again
    assert rerun.count("Converse") == 4 - judged_first and sum(harness.account.probe_delivered.values()) == probe_calls
    assert "CreateCustomModelDeployment" not in rerun
    store = Store(harness.config.study_dir)
    try:
        judge_calls = sum(1 for identity, _, _ in store.generation_usage() if identity["model"] == SONNET)
    finally:
        store.close()
    assert judge_calls == 4  # each judge call paid once and kept once


def test_hosting_hours_are_reread_before_every_call(tmp_path):
    """A throughput written down 3 hours ago has billed 4 started hours ($242), not the first
    hour the guard saw when it was made; the next call is stopped at a $100 budget."""
    from bedrock_fixtures import study_config
    from localnova.aws import state as aws_state
    from localnova.bedrock.spend import resource_spend

    config = study_config(tmp_path, hosting="provisioned")
    state = BedrockState.load(config.study_dir)
    start = aws_state.now()
    state.record(
        Resource(
            "provisioned_throughput",
            "provisioned_throughput:nova-micro",
            "us-east-1",
            arn="arn:pt",
            created_at=start.isoformat(),
            hourly_usd=60.5,
        )
    )
    clock = [start + timedelta(minutes=30)]
    original_now = aws_state.now
    aws_state.now = lambda: clock[0]
    try:
        guard = SpendGuard(100.0, resource_spend=lambda: sum(resource_spend(state, config).values()))
        guard.before("a call", 0.01)  # the first hour: $60.50
        clock[0] = start + timedelta(hours=3, minutes=1)
        assert guard.spent_usd == pytest.approx(4 * 60.5)
        with pytest.raises(BudgetExceeded, match=r"\$242.00 spent"):
            guard.before("a call", 0.01)
    finally:
        aws_state.now = original_now


def test_an_answer_that_never_came_stays_counted_here_and_in_the_next_run(tmp_path):
    recorded = []
    guard = SpendGuard(10.0, on_unstored=lambda what, usd: recorded.append((what, usd)))
    reservation = guard.reserve("a call", 0.25)
    assert guard.spent_usd == pytest.approx(0.25)
    guard.lost(reservation, "a call to m")
    assert recorded == [("a call to m", 0.25)]
    refused = guard.reserve("another call", 0.5)
    guard.release(refused)  # AWS refused it: nothing billed
    assert guard.reserved_usd == 0


def test_a_model_without_a_price_is_an_error_never_zero():
    guard = SpendGuard(1.0)
    with pytest.raises(UserError, match="anthropic.claude-opus-4-1-20250805-v1:0"):
        guard.token_cost("us.anthropic.claude-opus-4-1-20250805-v1:0", 1000, 1000)
    # the route decides the price: the regional profile of Sonnet 4.5 costs 10% more (the price file's note)
    assert guard.token_cost(SONNET, 1000, 1000) == pytest.approx(0.0033 + 0.0165)
    assert guard.token_cost("global.anthropic.claude-sonnet-4-5-20250929-v1:0", 1000, 1000) == pytest.approx(0.003 + 0.015)
