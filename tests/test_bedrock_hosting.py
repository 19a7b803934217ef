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
