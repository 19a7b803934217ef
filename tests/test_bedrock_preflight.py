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
from localnova.bedrock.preflight import preflight  # noqa: E402
from localnova.cli import main  # noqa: E402

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


def test_against_moto_it_checks_what_moto_has_and_says_what_it_could_not(aws_env, tmp_path):
    boto3.client("iam", region_name="us-east-1").create_role(
        RoleName=ROLE_ARN.rsplit("/", 1)[-1], AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )
    report = preflight(study_config(tmp_path), AwsClients("us-east-1"))
    text = report.format()
    assert any(line.startswith("credentials: account 123456789012") for line in report.passed)
    assert any(line.startswith("bedrock.role_arn: localnova-test exists") for line in report.passed)
    assert any(line.startswith("bedrock.s3_bucket: localnova-test-bucket is in us-east-1") for line in report.passed)
    assert any("model amazon.nova-micro-v1:0:128k" in line for line in report.unchecked), text  # moto has no foundation models
    assert any("inference profiles" in line for line in report.unchecked), text
    assert report.failures == [], text


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
    with Stubber(bedrock) as stubber:
        stubber.add_response(
            "list_inference_profiles",
            {"inferenceProfileSummaries": []},
            {"typeEquals": "SYSTEM_DEFINED"},
        )
        stubber.add_response(
            "get_foundation_model",
            _model("amazon.nova-micro-v1:0:128k", ["PROVISIONED"], ["FINE_TUNING"]),
            {"modelIdentifier": "amazon.nova-micro-v1:0:128k"},
        )
        stubber.add_response(
            "get_foundation_model",
            _model("meta.llama3-1-70b-instruct-v1:0", ["INFERENCE_PROFILE"]),
            {"modelIdentifier": "meta.llama3-1-70b-instruct-v1:0"},
        )
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
    assert len(report.passed) == 2
