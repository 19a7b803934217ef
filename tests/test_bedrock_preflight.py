"""The preflight: free checks before any spend, one line per failure naming the config key,
and what it could not check said as such (moto implements no foundation models or quotas)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.stub import Stubber  # noqa: E402

from bedrock_fixtures import ROLE_ARN, study_config  # noqa: E402
from localnova.aws.clients import AwsClients  # noqa: E402
from localnova.bedrock.preflight import preflight, require_preflight  # noqa: E402
from localnova.cli import main  # noqa: E402
from localnova.errors import UserError  # noqa: E402

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bedrock-nova.yaml"


def test_without_credentials_it_fails_in_one_line(monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    code = main(["bedrock", "preflight", str(SHIPPED_CONFIG)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "no AWS credentials" in captured.err


def test_against_moto_it_checks_what_moto_has_and_blocks_on_what_it_could_not(aws_env, tmp_path):
    """moto has no foundation models, profiles or quotas: those checks are not made, and a paid
    run is blocked until the user names each key to skip (before, this printed "no problem
    found" and the run went on with no model checked)."""
    boto3.client("iam", region_name="us-east-1").create_role(
        RoleName=ROLE_ARN.rsplit("/", 1)[-1], AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )
    report = preflight(study_config(tmp_path), AwsClients("us-east-1"))
    text = report.format()
    assert any(line.startswith("credentials: account 123456789012") for line in report.passed)
    assert any(line.startswith("bedrock.role_arn: localnova-test exists") for line in report.passed)
    assert any(line.startswith("bedrock.s3_bucket: localnova-test-bucket is in us-east-1") for line in report.passed)
    assert report.failures == [], text
    unchecked = {key for key, _ in report.unchecked}
    assert {"models[0].customization_model", "judges[0].model.model", "inference-profiles"} <= unchecked, text
    assert report.blocking() and all("--skip-check" in line for line in report.blocking())
    with pytest.raises(UserError, match=r"^preflight found \d+ problem\(s\) \(nothing was created\)"):
        require_preflight(study_config(tmp_path), AwsClients("us-east-1"))
    skipped = preflight(study_config(tmp_path), AwsClients("us-east-1"), skip_checks=sorted(unchecked))
    assert skipped.blocking() == [] and "skipped as asked" in skipped.format()


def test_a_model_the_account_may_not_use_fails_naming_its_key():
    bedrock = boto3.client("bedrock", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(bedrock) as stubber:
        stubber.add_response(
            "get_foundation_model_availability",
            {
                "modelId": "anthropic.claude-3-5-sonnet-20240620-v1:0",
                "agreementAvailability": {"status": "NOT_AVAILABLE"},
                "authorizationStatus": "NOT_AUTHORIZED",
                "entitlementAvailability": "AVAILABLE",
                "regionAvailability": "AVAILABLE",
            },
            {"modelId": "anthropic.claude-3-5-sonnet-20240620-v1:0"},
        )
        from localnova.bedrock.preflight import PreflightReport, _check_access

        report = PreflightReport()
        _check_access(
            "judges[0].model.model",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "us-east-1",
            AwsClients("us-east-1", {"bedrock": bedrock}, check_credentials=False),
            report,
        )
    assert report.failures == [
        "judges[0].model.model: this account may not use anthropic.claude-3-5-sonnet-20240620-v1:0 in us-east-1 "
        "(authorizationStatus NOT_AUTHORIZED, agreement NOT_AVAILABLE); request access in the Bedrock console"
    ]


def test_a_missing_role_and_bucket_fail_naming_their_keys(aws_env, tmp_path):
    config = study_config(tmp_path, s3_bucket="no-such-bucket-here")
    report = preflight(config, AwsClients("us-east-1"))
    assert any(line.startswith("bedrock.role_arn: role ") for line in report.failures)
    assert any(line.startswith("bedrock.s3_bucket: bucket no-such-bucket-here") for line in report.failures)


def _model(model_id, inference, customizations=()):
    return {
        "modelDetails": {
            "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
            "modelId": model_id,
            "inferenceTypesSupported": list(inference),
            "customizationsSupported": list(customizations),
        }
    }


def test_model_ids_are_checked_with_their_route(tmp_path):
    """A judge that only answers through an inference profile fails naming its key and the
    profile to use; an unknown profile fails; the rest pass."""
    config = study_config(tmp_path)
    judge = config.judges[0].model.model_copy(update={"model": "meta.llama3-1-70b-instruct-v1:0"})
    config = config.model_copy(update={"judges": [config.judges[0].model_copy(update={"model": judge})]})
    bedrock = boto3.client("bedrock", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")

    def available(model_id):
        stubber.add_response(
            "get_foundation_model_availability",
            {
                "modelId": model_id,
                "agreementAvailability": {"status": "AVAILABLE"},
                "authorizationStatus": "AUTHORIZED",
                "entitlementAvailability": "AVAILABLE",
                "regionAvailability": "AVAILABLE",
            },
            {"modelId": model_id},
        )

    with Stubber(bedrock) as stubber:
        available("amazon.nova-micro-v1:0")
        stubber.add_response(
            "list_inference_profiles",
            {"inferenceProfileSummaries": []},
            {"typeEquals": "SYSTEM_DEFINED"},
        )
        available("amazon.nova-micro-v1:0:128k")
        stubber.add_response(
            "get_foundation_model",
            _model("amazon.nova-micro-v1:0:128k", ["PROVISIONED"], ["FINE_TUNING"]),
            {"modelIdentifier": "amazon.nova-micro-v1:0:128k"},
        )
        available("meta.llama3-1-70b-instruct-v1:0")
        stubber.add_response(
            "get_foundation_model",
            _model("meta.llama3-1-70b-instruct-v1:0", ["INFERENCE_PROFILE"]),
            {"modelIdentifier": "meta.llama3-1-70b-instruct-v1:0"},
        )
        available("amazon.titan-embed-text-v2:0")
        stubber.add_response(
            "get_foundation_model",
            _model("amazon.titan-embed-text-v2:0", ["ON_DEMAND"]),
            {"modelIdentifier": "amazon.titan-embed-text-v2:0"},
        )
        from localnova.bedrock.preflight import PreflightReport, _check_models

        report = PreflightReport()
        _check_models(config, AwsClients("us-east-1", {"bedrock": bedrock}, check_credentials=False), report)
        stubber.assert_no_pending_responses()
    assert report.failures == [
        "models[0].model: us.amazon.nova-micro-v1:0 is not an inference profile in us-east-1",
        "judges[0].model.model: meta.llama3-1-70b-instruct-v1:0 cannot be called on demand in us-east-1; "
        "call it through an inference profile such as us.meta.llama3-1-70b-instruct-v1:0",
    ]
    assert len(report.passed) == 2 + 4  # two routes, and access to each of the four models


def test_a_profile_listing_that_could_not_be_made_is_said_once(aws_env, tmp_path):
    """Two models called through inference profiles, and moto lists no profiles: one line for
    the listing, not one per model (it printed "inference-profiles: not checked" twice)."""
    config = study_config(tmp_path)
    judge = config.judges[0].model_copy(
        update={"model": config.judges[0].model.model_copy(update={"model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"})}
    )
    config = config.model_copy(update={"judges": [judge]})
    report = preflight(config, AwsClients("us-east-1"))
    assert [key for key, _ in report.unchecked].count("inference-profiles") == 1, report.format()
    assert report.format().count("inference-profiles: not checked") == 1
