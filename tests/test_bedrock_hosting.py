"""Hosting choices: on-demand deployment by default, provisioned throughput only with
allow_spend, and a choice the region doesn't offer refused before any call."""

from __future__ import annotations

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.stub import ANY, Stubber  # noqa: E402

from bedrock_fixtures import study_config  # noqa: E402
from localnova.aws.clients import AwsClients  # noqa: E402
from localnova.aws.state import BedrockState  # noqa: E402
from localnova.bedrock.hosting import check_hosting, host_custom_model  # noqa: E402
from localnova.errors import UserError  # noqa: E402

CUSTOM_MODEL = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-micro-v1:0:128k/abc123def456"


def _stubbed(region: str = "us-east-1"):
    client = boto3.client("bedrock", region_name=region, aws_access_key_id="x", aws_secret_access_key="y")
    return client, Stubber(client)


def test_on_demand_deployment_is_created_once_and_waited_for(tmp_path):
    config = study_config(tmp_path)
    client, stubber = _stubbed()
    arn = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/dep1abc123de"
    stubber.add_response(
        "create_custom_model_deployment",
        {"customModelDeploymentArn": arn},
        {
            "modelDeploymentName": ANY,  # hash-first; its pattern and length are checked by the request check
            "modelArn": CUSTOM_MODEL,
            "clientRequestToken": ANY,
            "tags": [{"key": "localnova-study", "value": "bedrock-test"}],
        },
    )
    for status in ("Creating", "Active"):
        stubber.add_response(
            "get_custom_model_deployment",
            {
                "customModelDeploymentArn": arn,
                "modelDeploymentName": "d",
                "modelArn": CUSTOM_MODEL,
                "createdAt": "2026-01-01T00:00:00Z",
                "status": status,
            },
            {"customModelDeploymentIdentifier": arn},
        )
    stubber.add_response(
        "get_custom_model_deployment",
        {
            "customModelDeploymentArn": arn,
            "modelDeploymentName": "d",
            "modelArn": CUSTOM_MODEL,
            "createdAt": "2026-01-01T00:00:00Z",
            "status": "Active",
        },
        {"customModelDeploymentIdentifier": arn},
    )
    state = BedrockState.load(config.study_dir)
    with stubber:
        clients = AwsClients("us-east-1", {"bedrock": client}, check_credentials=False)
        assert host_custom_model(config, config.models[0], CUSTOM_MODEL, state, clients, sleep=lambda s: None) == arn
        # a rerun finds the deployment in the state file and only waits for it
        assert (
            host_custom_model(config, config.models[0], CUSTOM_MODEL, BedrockState.load(config.study_dir), clients, sleep=lambda s: None)
            == arn
        )
        stubber.assert_no_pending_responses()
    assert BedrockState.load(config.study_dir).find("custom_model_deployment").arn == arn


@pytest.mark.parametrize("allow_spend, estimate_shown", [(False, False), (False, True), (True, False)])
def test_no_provisioned_throughput_without_allow_spend(tmp_path, allow_spend, estimate_shown):
    config = study_config(tmp_path, hosting="provisioned")
    client, stubber = _stubbed()
    with stubber:  # no responses queued: any call would fail the test
        with pytest.raises(UserError, match="provisioned throughput"):
            host_custom_model(
                config,
                config.models[0],
                CUSTOM_MODEL,
                BedrockState.load(config.study_dir),
                AwsClients("us-east-1", {"bedrock": client}, check_credentials=False),
                allow_spend=allow_spend,
                estimate_shown=estimate_shown,
            )
    assert not (config.study_dir / "bedrock_state.json").exists()


def test_provisioned_throughput_with_allow_spend(tmp_path):
    config = study_config(tmp_path, hosting="provisioned", provisioned_model_units=1)
    client, stubber = _stubbed()
    arn = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pm1abc123def"
    stubber.add_response(
        "create_provisioned_model_throughput",
        {"provisionedModelArn": arn},
        {
            "clientRequestToken": ANY,
            "modelUnits": 1,
            "provisionedModelName": ANY,
            "modelId": CUSTOM_MODEL,
            "tags": [{"key": "localnova-study", "value": "bedrock-test"}],
        },
    )
    stubber.add_response(
        "get_provisioned_model_throughput",
        {
            "modelUnits": 1,
            "desiredModelUnits": 1,
            "provisionedModelName": "p",
            "provisionedModelArn": arn,
            "modelArn": CUSTOM_MODEL,
            "desiredModelArn": CUSTOM_MODEL,
            "foundationModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0",
            "status": "InService",
            "creationTime": "2026-01-01T00:00:00Z",
            "lastModifiedTime": "2026-01-01T00:00:00Z",
        },
        {"provisionedModelId": arn},
    )
    with stubber:
        got = host_custom_model(
            config,
            config.models[0],
            CUSTOM_MODEL,
            BedrockState.load(config.study_dir),
            AwsClients("us-east-1", {"bedrock": client}, check_credentials=False),
            allow_spend=True,
            estimate_shown=True,
            sleep=lambda s: None,
        )
    assert got == arn
    assert BedrockState.load(config.study_dir).find("provisioned_throughput").arn == arn


@pytest.mark.parametrize("hosting, region", [("on_demand", "eu-west-1"), ("provisioned", "us-west-2"), ("on_demand", "ap-southeast-2")])
def test_hosting_the_region_does_not_offer_is_refused_before_anything(tmp_path, hosting, region):
    config = study_config(tmp_path, hosting=hosting, region=region)
    client, stubber = _stubbed(region)
    with stubber:
        with pytest.raises(UserError, match=f"not offered in {region}"):
            host_custom_model(
                config,
                config.models[0],
                CUSTOM_MODEL,
                BedrockState.load(config.study_dir),
                AwsClients(region, {"bedrock": client}, check_credentials=False),
                allow_spend=True,
                estimate_shown=True,
            )
    assert not (config.study_dir / "bedrock_state.json").exists()


def test_provisioned_throughput_for_a_custom_model_is_one_unit(tmp_path):
    config = study_config(tmp_path, hosting="provisioned", provisioned_model_units=2)
    with pytest.raises(UserError, match="bedrock.provisioned_model_units: 2"):
        check_hosting(config, config.models[0], allow_spend=True, estimate_shown=True)


# Hosting bound to the run, against the fake account: whatever way the run ends, the hosting it
# made is gone, or the run's last line names it, its cost per hour and the cleanup command.


def _pt_harness(monkeypatch, fast_tmp, boto_clients):
    from bedrock_fake_study import Harness

    return Harness(monkeypatch, fast_tmp, boto_clients, "provisioned")


def _call_number(harness, operation, nth=1):
    """The number of the nth call of `operation` in a clean run of the same study."""
    from bedrock_fake_study import Harness  # noqa: F401 (same harness kind)

    seen = 0
    for number, (_service, name) in enumerate(harness.clean_calls, 1):
        if name == operation:
            seen += 1
            if seen == nth:
                return number
    raise AssertionError(f"{operation} is not called {nth} time(s)")


@pytest.fixture
def pt_study(monkeypatch, fast_tmp, boto_clients):
    """A provisioned-throughput study, and the calls a clean run of it makes."""
    from bedrock_fake_study import Harness

    clean = Harness(monkeypatch, fast_tmp / "clean", boto_clients, "provisioned")
    assert clean.run() == ("ok", "")
    harness = Harness(monkeypatch, fast_tmp / "study", boto_clients, "provisioned")
    harness.clean_calls = list(clean.account.calls)
    return harness


@pytest.mark.parametrize(
    "how",
    ["never InService", "Failed", "AccessDenied while waiting", "Ctrl-C while waiting", "create answer lost"],
)
def test_hosting_is_deleted_on_every_way_out_of_the_run(pt_study, how):
    from bedrock_fake_account import Fault

    account = pt_study.account
    if how == "never InService":
        account.never_ready = {"provisioned_throughput"}
    elif how == "Failed":
        account.failing = {"provisioned_throughput"}
    elif how == "AccessDenied while waiting":
        account.fault = Fault(_call_number(pt_study, "GetProvisionedModelThroughput", 2), "client_error")
    elif how == "Ctrl-C while waiting":
        account.fault = Fault(_call_number(pt_study, "GetProvisionedModelThroughput", 2), "interrupt_before")
    else:
        account.fault = Fault(_call_number(pt_study, "CreateProvisionedModelThroughput"), "interrupt_after")
    outcome, line = pt_study.run()
    assert outcome in ("error", "interrupted") and "\n" not in line
    assert any(kind == "provisioned_throughput" for kind, _ in account.held()) is False
    assert account.live_billable() == [], f"{how}: {line}"
    assert "CreateProvisionedModelThroughput" in [operation for _, operation in account.calls]
    assert "DeleteProvisionedModelThroughput" in [operation for _, operation in account.calls]
    state = BedrockState.load(pt_study.config.study_dir)
    assert [r.status for r in state.all_of("provisioned_throughput")] == ["deleted"]


def test_a_refused_delete_ends_the_run_naming_the_resource_its_price_and_cleanup(pt_study):
    pt_study.account.denied = {"DeleteProvisionedModelThroughput"}
    outcome, line = pt_study.run()
    arn = next(arn for arn, hosted in pt_study.account.hosting.items() if hosted["kind"] == "provisioned_throughput")
    assert outcome == "error" and "\n" not in line
    assert arn in line and "$60.50/h" in line and f"`localnova bedrock cleanup {pt_study.config.study_dir}`" in line
    assert pt_study.cleanup() == 1  # still refused: cleanup says so, and exits non-zero
    pt_study.account.denied = set()
    assert pt_study.cleanup() == 0
    assert pt_study.account.live_billable() == []


def test_keep_hosting_keeps_it_and_the_last_line_says_what_and_how_to_delete_it(pt_study):
    from localnova.bedrock_study import study as bedrock_study
    from localnova.errors import UserError

    pt_study.account.judge_extra_input_tokens = 100_000  # the judges cost far more than estimated
    pt_study.config = pt_study.config.model_copy(update={"bedrock": pt_study.config.bedrock.model_copy(update={"budget_usd": 63.0})})
    pt_study.account.fault = None
    hosting_fault = _call_number(pt_study, "DeleteProvisionedModelThroughput")
    pt_study.account.fault = __import__("bedrock_fake_account").Fault(hosting_fault, "interrupt_before")  # Ctrl-C as the ft arms end
    with pytest.raises(UserError) as stopped:
        bedrock_study.run_bedrock_study(
            pt_study.config, dry_run_only=False, allow_spend=True, assume_yes=True, clients=pt_study.clients(), keep_hosting=True
        )
    line = str(stopped.value)
    arn = next(arn for arn, hosted in pt_study.account.hosting.items() if hosted["kind"] == "provisioned_throughput")
    assert line.startswith("interrupted") and "hosting kept as asked (--keep-hosting)" in line
    assert arn in line and "$60.50/h" in line and "localnova bedrock cleanup" in line
    assert pt_study.account.live_billable() == [f"provisioned_throughput {arn}"]
    assert pt_study.cleanup() == 0 and pt_study.account.live_billable() == []


def test_a_throughput_made_behind_a_lost_answer_is_found_by_name_at_the_next_start(pt_study):
    """Ctrl-C after AWS made the throughput but before its answer: the state names it (intended,
    with its name) before the call, so the run's own way out finds and deletes it; and if the
    lookup itself is refused at the next start, that run stops before creating anything."""
    from bedrock_fake_account import Fault

    account = pt_study.account
    account.fault = Fault(_call_number(pt_study, "CreateProvisionedModelThroughput"), "interrupt_after")
    account.denied = {"ListProvisionedModelThroughputs"}  # the lookup on the way out is refused
    outcome, line = pt_study.run()
    assert outcome == "error" and "localnova bedrock cleanup" in line and "$60.50/h" in line
    [entry] = BedrockState.load(pt_study.config.study_dir).all_of("provisioned_throughput")
    assert entry.status == "intended" and entry.name and entry.hourly_usd == 60.5
    assert account.live_billable()  # made, and not yet found
    calls = len(account.calls)
    outcome, line = pt_study.run()  # the lookup is still refused: nothing new is created
    assert outcome == "error" and line.startswith("the state file lists resources whose creation may have happened")
    assert [op for _, op in account.calls[calls:] if op.startswith(("Create", "Put", "Start"))] == []
    assert pt_study.cleanup() == 1  # cleanup cannot look it up either, and says so
    account.denied = set()
    assert pt_study.cleanup() == 0  # found by name, adopted, deleted
    assert account.live_billable() == [] and BedrockState.load(pt_study.config.study_dir).live() == []
