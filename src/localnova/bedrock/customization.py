"""Fine-tuning a Nova model with a Bedrock model customization job.

Every check runs before anything is created: role ARN, bucket, region, base model,
hyperparameter bounds, and the Nova validator (with the model's own rules) on the training
and validation files. The job's client request token and name are derived from the study, the
model, the data's hash, the hyperparameters and an attempt number, and the job is written to
the state file (with the tokens it trains on, counted in the file actually uploaded) before
its create call, so a rerun of the same command finds the same job and never starts a second
one. A job found by name is adopted only when its client token and base model are this
study's. A job that failed or was stopped is not retried under its own name: the next attempt
gets a new number, name and token.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.aws.availability import check_customization_offered, nova_hyperparameters
from localnova.aws.clients import AwsClients, call_with_backoff, error_code, wait_until
from localnova.aws.names import client_token, resource_name
from localnova.aws.state import ABSENT, CREATED, INTENDED, BedrockState, Resource
from localnova.bedrock.reconcile import create_once, resolve
from localnova.bedrock.training_files import count_training_tokens, nova_file, validate_training_file, validator_model
from localnova.bedrock.uploads import put_object_once
from localnova.config import ModelConfig, StudyConfig
from localnova.errors import UserError
from localnova.files import write_text_atomic

log = logging.getLogger(__name__)

JOB_DONE = {"Completed"}
JOB_FAILED = {"Failed", "Stopped"}
# Bedrock writes step-wise metrics as CSV under the output location; names vary a little
# between model families, so any CSV whose name mentions metrics or loss is read.
METRICS_FILE_PATTERN = re.compile(r"(metrics|loss)[^/]*\.csv$", re.IGNORECASE)


@dataclass
class PreparedTraining:
    """Everything checked and derived before the first AWS call."""

    study_name: str
    model_name: str
    base_model_id: str
    nova_path: Path
    data_sha256: str
    training_tokens: int
    hyperparameters: dict[str, str]
    identity: dict[str, Any]  # what makes the job this job, before the attempt number
    role_arn: str
    bucket: str
    train_key: str
    output_prefix: str  # s3 key prefix of this model's training output, per attempt below it
    validation_key: str | None = None
    validation_path: Path | None = None
    attempt: int = 1

    @property
    def client_token(self) -> str:
        return client_token({**self.identity, "attempt": self.attempt})

    @property
    def job_name(self) -> str:
        return resource_name(
            ("bedrock", "CreateModelCustomizationJob", "jobName"), self.client_token, self.study_name, self.model_name, f"a{self.attempt}"
        )

    @property
    def custom_model_name(self) -> str:
        return resource_name(
            ("bedrock", "CreateModelCustomizationJob", "customModelName"),
            self.client_token,
            self.study_name,
            self.model_name,
            f"a{self.attempt}",
        )

    @property
    def output_uri(self) -> str:
        return f"s3://{self.bucket}/{self.output_prefix}{self.job_name}/"


@dataclass
class CustomizationResult:
    job_name: str
    job_arn: str
    custom_model_arn: str
    status: str
    training_metrics: list[dict[str, str]] = field(default_factory=list)
    metrics_path: str = ""


def prepare_customization(
    config: StudyConfig, model: ModelConfig, train_path: str | Path, validation_path: str | Path | None = None
) -> PreparedTraining:
    """Check everything a customization job needs; raises a UserError before any AWS call."""
    bedrock = config.bedrock
    if bedrock is None:
        raise UserError("bedrock: the Bedrock path needs a bedrock section")
    if not bedrock.role_arn:
        raise UserError("bedrock.role_arn: a model customization job needs an IAM role ARN that Bedrock can assume")
    if not bedrock.s3_bucket:
        raise UserError("bedrock.s3_bucket: a model customization job needs a bucket for its training data and output")
    base_model_id = model.customization_model or model.model
    check_customization_offered(base_model_id, bedrock.region, f"models[{model.name}].customization_model")
    ft = config.finetune
    hyperparameters = nova_hyperparameters(ft.epochs, ft.batch_size, ft.learning_rate, ft.warmup_steps)
    train_path = Path(train_path)
    if not train_path.is_file():
        raise UserError(f"finetune.train_path: {train_path} not found")
    work_dir = config.study_dir / "bedrock"
    work_dir.mkdir(parents=True, exist_ok=True)
    nova_path = nova_file(train_path, work_dir)
    rules = validator_model(base_model_id)
    validate_training_file(nova_path, rules)
    valid_nova = None
    if validation_path is not None:
        valid_nova = nova_file(Path(validation_path), work_dir)
        validate_training_file(valid_nova, rules)

    data_sha = hashlib.sha256(nova_path.read_bytes()).hexdigest()
    valid_sha = hashlib.sha256(valid_nova.read_bytes()).hexdigest() if valid_nova else None
    identity = {
        "study": config.name,
        "model": model.name,
        "base": base_model_id,
        "data": data_sha,
        "validation": valid_sha,
        "hp": hyperparameters,
    }
    prefix = f"{bedrock.s3_prefix.strip('/')}/{config.name}"
    return PreparedTraining(
        study_name=config.name,
        model_name=model.name,
        base_model_id=base_model_id,
        nova_path=nova_path,
        data_sha256=data_sha,
        training_tokens=count_training_tokens(nova_path),
        hyperparameters=hyperparameters,
        identity=identity,
        role_arn=bedrock.role_arn,
        bucket=bedrock.s3_bucket,
        train_key=f"{prefix}/training/{data_sha[:16]}/train.jsonl",
        output_prefix=f"{prefix}/customization-output/{model.name}/",
        validation_key=f"{prefix}/training/{valid_sha[:16]}/validation.jsonl" if valid_sha else None,
        validation_path=valid_nova,
    )


def _upload(state: BedrockState, clients: AwsClients, region: str, bucket: str, key: str, path: Path) -> None:
    put_object_once(state, clients, region, bucket, key, path.read_bytes())


class AdoptionRefused(UserError):
    """A job with our name exists but was not made by this study's request."""


def _job_by_name(prepared: PreparedTraining, clients: AwsClients) -> dict[str, Any] | None:
    """The job AWS lists under this attempt's name, checked to be ours; None when there is none."""
    try:
        job = call_with_backoff(clients.bedrock.get_model_customization_job, jobIdentifier=prepared.job_name)
    except Exception as error:
        if error_code(error) == "ResourceNotFoundException":
            return None
        raise
    token = job.get("clientRequestToken")
    base = str(job.get("baseModelArn", ""))
    if token != prepared.client_token or not base.endswith(f"/{prepared.base_model_id}"):
        raise AdoptionRefused(
            f"bedrock: a customization job named {prepared.job_name} exists but was not made by this study "
            f"(client token {token!r}, base model {base or 'unknown'}); it is not adopted, delete or rename it"
        )
    return job


def _job_resource(prepared: PreparedTraining, region: str, epochs: int) -> Resource:
    return Resource(
        "customization_job",
        f"customization_job:{prepared.model_name}",
        region,
        id=prepared.job_name,
        name=prepared.job_name,
        client_token=prepared.client_token,
        details={
            "model": prepared.model_name,
            "base_model": prepared.base_model_id,
            "attempt": prepared.attempt,
            "identity": client_token(prepared.identity),
            "custom_model_name": prepared.custom_model_name,
            "output_uri": prepared.output_uri,
            "training_tokens": prepared.training_tokens,
            "epochs": epochs,
        },
    )


def _record_output_prefix(state: BedrockState, prepared: PreparedTraining, region: str) -> None:
    """The job's output prefix, listed before the job exists: Bedrock writes there even when a
    job fails, and cleanup deletes what is listed."""
    output_key = prepared.output_uri.removeprefix(f"s3://{prepared.bucket}/")
    state.record(
        Resource(
            "s3_prefix",
            prepared.output_uri,
            region,
            id=prepared.output_uri,
            client_token=prepared.output_uri,
            details={"bucket": prepared.bucket, "prefix": output_key},
        )
    )


def _record_adopted_files(state: BedrockState, prepared: PreparedTraining, region: str) -> None:
    """What a job adopted by name was made with (its state entry lost): its training and
    validation files in S3 and its output prefix, so that cleanup deletes them too."""
    files = [(prepared.train_key, prepared.nova_path)]
    if prepared.validation_key and prepared.validation_path:
        files.append((prepared.validation_key, prepared.validation_path))
    for key, path in files:
        uri = f"s3://{prepared.bucket}/{key}"
        if state.find("s3_object", key=uri) is None:
            body = path.read_bytes()
            details = {"bucket": prepared.bucket, "key": key, "sha": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
            state.record(Resource("s3_object", uri, region, id=key, name=key, client_token=uri, status=CREATED, details=details))
    _record_output_prefix(state, prepared, region)


def job_request(config: StudyConfig, prepared: PreparedTraining) -> dict[str, Any]:
    """The CreateModelCustomizationJob request of one prepared job."""
    request: dict[str, Any] = dict(
        jobName=prepared.job_name,
        customModelName=prepared.custom_model_name,
        roleArn=prepared.role_arn,
        clientRequestToken=prepared.client_token,
        baseModelIdentifier=prepared.base_model_id,
        customizationType="FINE_TUNING",
        trainingDataConfig={"s3Uri": f"s3://{prepared.bucket}/{prepared.train_key}"},
        outputDataConfig={"s3Uri": prepared.output_uri},
        hyperParameters=prepared.hyperparameters,
        jobTags=[{"key": "localnova-study", "value": config.name}],
        customModelTags=[{"key": "localnova-study", "value": config.name}],
    )
    if prepared.validation_key:
        request["validationDataConfig"] = {"validators": [{"s3Uri": f"s3://{prepared.bucket}/{prepared.validation_key}"}]}
    return request


def _ended_badly(job: Resource, clients: AwsClients) -> bool:
    """Whether a listed job failed or was stopped (asking AWS when the state does not say)."""
    status = job.details.get("job_status")
    if status is None:
        status = call_with_backoff(clients.bedrock.get_model_customization_job, jobIdentifier=job.id).get("status")
    return status in JOB_FAILED


def start_customization(config: StudyConfig, prepared: PreparedTraining, state: BedrockState, clients: AwsClients) -> Resource:
    """Upload the data and create the job, or find the one this command made before. A job of
    an earlier attempt that failed or was stopped makes this one the next attempt."""
    assert config.bedrock is not None
    region = config.bedrock.region
    while True:
        job = state.find("customization_job", client_token=prepared.client_token, include_deleted=True)
        if job is not None and job.status == ABSENT:
            job = None  # its create was refused: nothing exists under this token, so ask again
        if job is None or job.status == INTENDED:
            # Not in the state, or written down with no answer (the process may have died between
            # the intent and the create's answer): ask the account by this attempt's name first.
            adopted = _job_by_name(prepared, clients)
            if adopted is not None:
                log.info("customization job %s exists already: adopting it", prepared.job_name)
                job = job or state.record(_job_resource(prepared, region, config.finetune.epochs))
                job = state.confirm(job, arn=str(adopted["jobArn"]))
                _record_adopted_files(state, prepared, region)
                if adopted.get("status") in JOB_FAILED:
                    state.update(job, details={**job.details, "job_status": adopted.get("status")})
        if job is None or job.status == INTENDED:
            break  # the account has no job of this name: create it (the same token, if written down)
        if not _ended_badly(job, clients):
            log.info("customization job %s already started: not creating another", job.id)
            return job
        log.warning("customization job %s ended %s: starting attempt %d", job.id, job.details.get("job_status"), prepared.attempt + 1)
        prepared.attempt += 1
    _upload(state, clients, region, prepared.bucket, prepared.train_key, prepared.nova_path)
    if prepared.validation_key and prepared.validation_path:
        _upload(state, clients, region, prepared.bucket, prepared.validation_key, prepared.validation_path)
    _record_output_prefix(state, prepared, region)
    # The job is written down before it is asked for; the same token returns the same job
    # (AWS's idempotency), so a retry after a lost answer cannot start a second one.
    entry = state.intend(_job_resource(prepared, region, config.finetune.epochs))

    def by_name() -> dict[str, str] | None:
        job = _job_by_name(prepared, clients)
        return None if job is None else {"id": prepared.job_name, "arn": str(job["jobArn"])}

    # Looked up above already, so only a create refused as taken (a job of this name made since,
    # by a run killed after sending it) is looked up again, and adopted when its token is ours.
    answer = create_once(
        state,
        entry,
        clients,
        lambda: call_with_backoff(clients.bedrock.create_model_customization_job, **job_request(config, prepared)),
        lookup=by_name,
        fresh=True,
    )
    return entry if answer is None else state.confirm(entry, arn=answer["jobArn"])


def stop_running_jobs(state: BedrockState, clients: AwsClients) -> list[str]:
    """Stop (StopModelCustomizationJob) every customization job the state lists that is still
    training, one whose create answer was lost included (looked up by name first); returns a
    line for each job stopped. A stopped job bills the tokens it trained on and makes no custom
    model; the next run of the same command starts a new attempt."""
    jobs = [r for r in state.live() if r.type == "customization_job" and r.details.get("job_status") is None]
    resolve(state, [job for job in jobs if job.status == INTENDED], clients)
    lines = []
    for job in [job for job in jobs if job.status == CREATED]:
        status = call_with_backoff(clients.bedrock.get_model_customization_job, jobIdentifier=job.arn or job.id).get("status")
        if status not in ("InProgress",):
            continue  # ended by itself: what it made is written down by reconcile
        call_with_backoff(clients.bedrock.stop_model_customization_job, jobIdentifier=job.arn or job.id)
        state.update(job, details={**job.details, "job_status": "Stopped"})
        lines.append(f"stopped customization job {job.arn or job.id}: no custom model comes of it; a rerun starts a new attempt")
    return lines


def read_training_metrics(clients: AwsClients, output_uri: str, job_arn: str) -> list[dict[str, str]]:
    """Rows of the metrics CSVs Bedrock wrote under the job's output location (empty if none).
    Where several jobs share the location, only files under this job's id are read."""
    bucket, _, prefix = output_uri.removeprefix("s3://").partition("/")
    job_id = job_arn.rsplit("/", 1)[-1]
    keys: list[str] = []
    for page in clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", []) if METRICS_FILE_PATTERN.search(item["Key"])]
    own = [key for key in keys if job_id and job_id in key]
    rows: list[dict[str, str]] = []
    for key in own or keys:
        text = clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        rows += [{"file": key.rsplit("/", 1)[-1], **row} for row in csv.DictReader(io.StringIO(text))]
    return rows


def wait_for_customization(
    config: StudyConfig,
    job: Resource,
    state: BedrockState,
    clients: AwsClients,
    sleep: Callable[[float], None] | None = None,
    poll_s: float = 60.0,
) -> CustomizationResult:
    """Poll the job until it ends; record the custom model; read its training metrics."""
    latest: dict[str, Any] = {}

    def status() -> str:
        latest.update(clients.bedrock.get_model_customization_job(jobIdentifier=job.id))
        return str(latest.get("status", "InProgress"))

    try:
        final = wait_until(
            status,
            JOB_DONE,
            JOB_FAILED,
            f"customization {job.details.get('model', job.id)}",
            poll_s=poll_s,
            max_poll_s=600.0,
            timeout_s=48 * 3600.0,
            sleep=sleep,
        )
    except UserError as error:
        if latest.get("status") in JOB_FAILED:
            state.update(job, details={**job.details, "job_status": latest.get("status")})
            raise UserError(
                f"customization job {job.id} ended {latest.get('status')}: {latest.get('failureMessage', 'no message')} "
                "(a rerun starts a new attempt)"
            ) from None
        raise UserError(f"customization job {job.id}: {error}; it keeps running: run the same command again to wait for it") from None
    model_arn = str(latest.get("outputModelArn", ""))
    state.update(job, details={**job.details, "job_status": final})
    model_name = str(latest.get("outputModelName") or job.details.get("custom_model_name", ""))
    if model_arn and state.find("custom_model", key=f"custom_model:{job.details.get('model')}", client_token=job.client_token) is None:
        state.record(
            Resource(
                "custom_model",
                f"custom_model:{job.details.get('model')}",
                job.region,
                id=job.details.get("custom_model_name", model_name),
                arn=model_arn,
                name=model_name,
                client_token=job.client_token,
                details={"job": job.id, "base_model": job.details.get("base_model", "")},
            )
        )
    metrics = read_training_metrics(clients, str(job.details.get("output_uri", "")), job.arn) if job.details.get("output_uri") else []
    metrics_path = config.study_dir / "bedrock" / f"{job.details.get('model', job.id)}_training_metrics.json"
    metrics_report = {
        "job": job.id,
        "status": final,
        "trainingMetrics": latest.get("trainingMetrics"),
        "validationMetrics": latest.get("validationMetrics"),
        "step_metrics": metrics,
    }
    write_text_atomic(metrics_path, json.dumps(metrics_report, indent=2, default=str))
    return CustomizationResult(job.id, job.arn, model_arn, final, metrics, str(metrics_path))


def run_customization(
    config: StudyConfig,
    model: ModelConfig,
    train_path: str | Path,
    state: BedrockState,
    clients: AwsClients,
    validation_path: str | Path | None = None,
    sleep: Callable[[float], None] | None = None,
    poll_s: float = 60.0,
) -> CustomizationResult:
    """Prepare (all checks), start (once) and wait for one model's customization job."""
    prepared = prepare_customization(config, model, train_path, validation_path)
    job = start_customization(config, prepared, state, clients)
    return wait_for_customization(config, job, state, clients, sleep=sleep, poll_s=poll_s)
