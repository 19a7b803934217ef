"""The latency probe on the Bedrock path, against the fake account: its calls are the ones the
plan counts, named in requestMetadata, paid for once each across reruns, and a rerun that must
host a custom model for the probe alone says so before it starts."""

from __future__ import annotations

import pytest

pytest.importorskip("botocore")

from bedrock_fake_account import Fault  # noqa: E402
from bedrock_fake_study import Harness  # noqa: E402
from bedrock_fixtures import RECORDED_REQUESTS  # noqa: E402
from localnova.bedrock_study.dry_run import dry_run  # noqa: E402


def probe_calls_by_hand(harness: Harness) -> int:
    """Per arm, min(questions in the eval set: 1, eval.latency_probe.questions) x its repeats;
    and one untimed call for each backend: the base model, the hosted custom model."""
    probe = harness.config.eval.latency_probe
    return len(harness.config.arms) * min(1, probe.questions) * probe.repeats + 2


@pytest.mark.parametrize("hosting", ["provisioned", "on_demand"])
def test_the_probe_makes_the_calls_the_plan_counts_and_a_rerun_pays_for_none_again(monkeypatch, fast_tmp, boto_clients, hosting, capsys):
    harness = Harness(monkeypatch, fast_tmp, boto_clients, hosting)
    assert harness.run() == ("ok", "")
    harness.check_promises("clean run")  # each probe call once, and each in the store's ledger
    planned = sum(call.count for call in dry_run(harness.config, out=None).plan if call.step == "latency probe")
    assert sum(harness.account.probe_delivered.values()) == planned == probe_calls_by_hand(harness) == 10
    capsys.readouterr()
    before = len(harness.account.calls)
    assert harness.run() == ("ok", "")
    rerun = [operation for _, operation in harness.account.calls[before:]]
    assert "Converse" not in rerun and not [op for op in rerun if op.startswith("Create")]  # nothing paid, nothing hosted
    assert "rerun: nova-micro: its ft answers and latency probe rounds are all in the store: its custom model is not hosted again" in (
        capsys.readouterr().out
    )
    harness.check_promises("rerun")


def test_a_rerun_missing_only_probe_rounds_says_it_hosts_the_custom_model_for_the_probe_alone(monkeypatch, fast_tmp, boto_clients, capsys):
    clean = Harness(monkeypatch, fast_tmp / "clean", boto_clients, "provisioned")
    assert clean.run() == ("ok", "")
    first_probe_call = next(
        number
        for number, (_, operation, params) in enumerate(RECORDED_REQUESTS, 1)
        if operation == "Converse" and "requestMetadata" in params
    )
    harness = Harness(monkeypatch, fast_tmp / "refused", boto_clients, "provisioned")
    harness.account.fault = Fault(first_probe_call, "client_error")  # AWS refuses the probe's first call
    outcome, line = harness.run()
    assert outcome == "error" and "AccessDeniedException" in line
    assert harness.account.live_billable() == []  # the throughput was deleted on the way out
    harness.account.fault = None
    capsys.readouterr()
    before = len(harness.account.calls)
    assert harness.run() == ("ok", "")
    out = capsys.readouterr().out
    assert (
        "rerun: nova-micro: its ft answers are all in the store but 2 of its 2 latency probe round(s) are not: its custom model is "
        "hosted again for the probe alone (provisioned: at least one started hour, $60.50); eval.latency_probe.enabled: false skips "
        "the probe"
    ) in out
    rerun = [operation for _, operation in harness.account.calls[before:]]
    assert rerun.count("CreateProvisionedModelThroughput") == 1
    # the rerun's calls: the probe whole (its refused first call was not paid), then the judges
    assert rerun.count("Converse") == probe_calls_by_hand(harness) + 4
    harness.check_promises("rerun")
