"""Customization jobs against a moto server: created once even when killed and rerun, and
every bad input refused with one UserError before anything exists."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bedrock_fixtures import BUCKET, FAKE_SECRET_KEY, ROLE_ARN, moto_bedrock_backend, recorded, study_config, write_nova_training
from localnova.aws.clients import AwsClients
from localnova.aws.state import BedrockState
from localnova.bedrock.customization import prepare_customization, run_customization
from localnova.config import config_to_dict
from localnova.errors import UserError

CHILD = r"""
import json, sys, time
import botocore.client
from localnova.config import validate_config
from localnova.aws.clients import AwsClients
from localnova.bedrock.customization import run_customization
from localnova.aws.state import BedrockState

config_file, train, mode, flag = sys.argv[1:5]
send = botocore.client.BaseClient._make_api_call


def held(client, operation, params):
    # stop for good at the point the test kills us: just before the create is sent, or just
    # after the account made the job and before its answer is read (the state still says intended)
    if operation == "CreateModelCustomizationJob" and mode == "before the create is sent":
        open(flag, "w").write(mode)
        time.sleep(600)
    answer = send(client, operation, params)
    if operation == "CreateModelCustomizationJob" and mode == "after the account made it, before its answer":
        open(flag, "w").write(mode)
        time.sleep(600)
    if operation == "GetModelCustomizationJob" and mode == "while polling":
        open(flag, "w").write(mode)
    return answer


botocore.client.BaseClient._make_api_call = held
config = validate_config(json.load(open(config_file)))
state = BedrockState.load(config.study_dir)
run_customization(config, config.models[0], train, state, AwsClients(config.bedrock.region), poll_s=0.2)
"""
KILL_POINTS = ("before the create is sent", "after the account made it, before its answer", "while polling")


def _jobs():
    import boto3

    return boto3.client("bedrock", region_name="us-east-1").list_model_customization_jobs()["modelCustomizationJobSummaries"]


def _s3_keys():
    import boto3

    return [o["Key"] for o in boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def _finish_all_jobs():
    for job in moto_bedrock_backend().model_customization_jobs.values():
        job.status = "Completed"


def _finish_while_waiting(_seconds: float) -> None:
    """The poll's sleep: the job 'finishes' while we wait (moto never ends a job itself)."""
    _finish_all_jobs()


@pytest.mark.parametrize("killed", KILL_POINTS)
def test_job_created_once_when_killed_and_rerun(aws_env, tmp_path, killed):
    """The child is killed (SIGKILL) at a point it reports, never at a moment a poll happens to
    see: the rerun finds the job the killed child made, by its name, whatever the state file says
    (moto, like an account past a token's lifetime, answers a repeated create ResourceInUse)."""
    from localnova.aws.state import CREATED, INTENDED

    config = study_config(tmp_path)
    train = write_nova_training(tmp_path / "train.jsonl")
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config_to_dict(config)), encoding="utf-8")
    flag = tmp_path / "killed-here"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(config_file), str(train), killed, str(flag)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not flag.exists():
            assert child.poll() is None, child.stderr.read().decode()
            time.sleep(0.05)
        assert flag.exists(), "the child never reached the point it is killed at"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    [entry] = BedrockState.load(config.study_dir).all_of("customization_job")
    made = killed != "before the create is sent"
    assert len(_jobs()) == (1 if made else 0)
    assert entry.status == (CREATED if killed == "while polling" else INTENDED)

    _finish_all_jobs()
    creates_before = len(recorded("CreateModelCustomizationJob"))
    state = BedrockState.load(config.study_dir)
    result = run_customization(config, config.models[0], train, state, AwsClients("us-east-1"), sleep=_finish_while_waiting, poll_s=0.01)
    assert len(_jobs()) == 1, "the rerun started a second job"
    assert len(recorded("CreateModelCustomizationJob")) - creates_before == (0 if made else 1)
    assert result.status == "Completed"
    assert result.custom_model_arn.startswith("arn:aws:bedrock:us-east-1:")
    assert state.find("custom_model", key="custom_model:nova-micro").arn == result.custom_model_arn
    assert Path(result.metrics_path).exists()


def test_rerun_adopts_a_job_whose_state_write_was_lost(aws_env, tmp_path):
    config = study_config(tmp_path)
    train = write_nova_training(tmp_path / "train.jsonl")
    first = run_customization(
        config,
        config.models[0],
        train,
        BedrockState.load(config.study_dir),
        AwsClients("us-east-1"),
        sleep=_finish_while_waiting,
        poll_s=0.01,
    )
    (config.study_dir / "bedrock_state.json").unlink()  # as if the process died before writing it
    second = run_customization(
        config,
        config.models[0],
        train,
        BedrockState.load(config.study_dir),
        AwsClients("us-east-1"),
        sleep=_finish_while_waiting,
        poll_s=0.01,
    )
    assert second.job_arn == first.job_arn
    assert len(_jobs()) == 1


def test_hyperparameters_are_strings_within_bounds(aws_env, tmp_path):
    config = study_config(tmp_path)
    prepared = prepare_customization(config, config.models[0], write_nova_training(tmp_path / "train.jsonl"))
    assert prepared.hyperparameters == {"epochCount": "2", "learningRate": "1e-05", "learningRateWarmupSteps": "10"}
    assert prepared.client_token == prepare_customization(config, config.models[0], tmp_path / "train.jsonl").client_token


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bedrock": {"role_arn": None}}, "bedrock.role_arn"),
        ({"bedrock": {"region": "eu-west-1"}}, "not eu-west-1"),
        ({"finetune": {"epochs": 6}}, "finetune.epochs"),
        ({"finetune": {"learning_rate": 0.01}}, "finetune.learning_rate"),
        ({"finetune": {"batch_size": 8}}, "finetune.batch_size"),
        ({"bad_file": True}, "train"),
    ],
)
def test_bad_input_is_one_user_error_and_creates_nothing(aws_env, tmp_path, change, message):
    from localnova.config import validate_config

    data = config_to_dict(study_config(tmp_path))
    for section, values in change.items():
        if section in data:
            data[section].update(values)
    config = validate_config(data)
    train = write_nova_training(tmp_path / "train.jsonl")
    if change.get("bad_file"):
        train.write_text('{"schemaVersion": "bedrock-conversation-2024", "messages": "not a list"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=message):
        run_customization(
            config, config.models[0], train, BedrockState.load(config.study_dir), AwsClients(config.bedrock.region), sleep=lambda s: None
        )
    assert _jobs() == []
    assert _s3_keys() == []
    assert not (config.study_dir / "bedrock_state.json").exists()


def test_no_credentials_is_a_user_error(monkeypatch, tmp_path):
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(UserError, match="no AWS credentials"):
        _ = AwsClients("us-east-1").bedrock


def test_credentials_never_reach_logs_or_the_study_folder(aws_env, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    config = study_config(tmp_path)
    run_customization(
        config,
        config.models[0],
        write_nova_training(tmp_path / "train.jsonl"),
        BedrockState.load(config.study_dir),
        AwsClients("us-east-1"),
        sleep=_finish_while_waiting,
        poll_s=0.01,
    )
    assert FAKE_SECRET_KEY not in caplog.text
    for path in config.study_dir.rglob("*"):
        if path.is_file():
            assert FAKE_SECRET_KEY not in path.read_text(encoding="utf-8", errors="ignore"), path


def test_the_create_request_is_exactly_this_with_a_validation_file(aws_env, tmp_path):
    import hashlib

    config = study_config(tmp_path)
    train = write_nova_training(tmp_path / "train.jsonl")
    valid = write_nova_training(tmp_path / "valid.jsonl", pairs=8)
    result = run_customization(
        config,
        config.models[0],
        train,
        BedrockState.load(config.study_dir),
        AwsClients("us-east-1"),
        validation_path=valid,
        sleep=_finish_while_waiting,
        poll_s=0.01,
    )
    [request] = recorded("CreateModelCustomizationJob")
    train_sha = hashlib.sha256(train.read_bytes()).hexdigest()[:16]
    valid_sha = hashlib.sha256(valid.read_bytes()).hexdigest()[:16]
    prefix = f"s3://{BUCKET}/localnova/bedrock-test"
    job_name = request["jobName"]
    assert job_name == result.job_name and job_name.endswith("-bedrock-test-nova-micro-a1")
    assert request == {
        "jobName": job_name,
        "customModelName": job_name,
        "roleArn": ROLE_ARN,
        "clientRequestToken": request["clientRequestToken"],
        "baseModelIdentifier": "amazon.nova-micro-v1:0:128k",
        "customizationType": "FINE_TUNING",
        "trainingDataConfig": {"s3Uri": f"{prefix}/training/{train_sha}/train.jsonl"},
        "validationDataConfig": {"validators": [{"s3Uri": f"{prefix}/training/{valid_sha}/validation.jsonl"}]},
        "outputDataConfig": {"s3Uri": f"{prefix}/customization-output/nova-micro/{job_name}/"},
        "hyperParameters": {"epochCount": "2", "learningRate": "1e-05", "learningRateWarmupSteps": "10"},
        "jobTags": [{"key": "localnova-study", "value": "bedrock-test"}],
        "customModelTags": [{"key": "localnova-study", "value": "bedrock-test"}],
    }
    assert sorted(_s3_keys()) == [
        f"localnova/bedrock-test/training/{train_sha}/train.jsonl",
        f"localnova/bedrock-test/training/{valid_sha}/validation.jsonl",
    ]
    listed = BedrockState.load(config.study_dir).find("s3_prefix")
    assert listed.details == {"bucket": BUCKET, "prefix": f"localnova/bedrock-test/customization-output/nova-micro/{job_name}/"}


def test_a_failed_job_is_retried_as_a_new_attempt(aws_env, tmp_path):
    config = study_config(tmp_path)
    train = write_nova_training(tmp_path / "train.jsonl")

    def fail(_seconds):
        for job in moto_bedrock_backend().model_customization_jobs.values():
            job.status = "Failed"

    with pytest.raises(UserError, match="ended Failed.*new attempt"):
        run_customization(
            config, config.models[0], train, BedrockState.load(config.study_dir), AwsClients("us-east-1"), sleep=fail, poll_s=0.01
        )
    second = run_customization(
        config,
        config.models[0],
        train,
        BedrockState.load(config.study_dir),
        AwsClients("us-east-1"),
        sleep=_finish_while_waiting,
        poll_s=0.01,
    )
    names = [params["jobName"] for params in recorded("CreateModelCustomizationJob")]
    tokens = [params["clientRequestToken"] for params in recorded("CreateModelCustomizationJob")]
    assert len(names) == 2 and names[0].endswith("-a1") and names[1].endswith("-a2") and tokens[0] != tokens[1]
    assert second.status == "Completed" and second.job_name == names[1]
    # a third run finds the completed second attempt and creates nothing
    run_customization(config, config.models[0], train, BedrockState.load(config.study_dir), AwsClients("us-east-1"), sleep=lambda s: None)
    assert len(recorded("CreateModelCustomizationJob")) == 2


def test_a_job_of_the_same_name_but_another_token_is_not_adopted(aws_env, tmp_path):
    import boto3

    config = study_config(tmp_path)
    train = write_nova_training(tmp_path / "train.jsonl")
    prepared = prepare_customization(config, config.models[0], train)
    boto3.client("bedrock", region_name="us-east-1").create_model_customization_job(
        jobName=prepared.job_name,
        customModelName="someone-else",
        roleArn=ROLE_ARN,
        clientRequestToken="another-token",
        baseModelIdentifier="amazon.nova-lite-v1:0:300k",
        trainingDataConfig={"s3Uri": f"s3://{BUCKET}/x.jsonl"},
        outputDataConfig={"s3Uri": f"s3://{BUCKET}/out/"},
        hyperParameters={"epochCount": "1"},
    )
    with pytest.raises(UserError, match="not made by this study"):
        run_customization(
            config, config.models[0], train, BedrockState.load(config.study_dir), AwsClients("us-east-1"), sleep=lambda s: None
        )
    assert len(_jobs()) == 1
