"""Fine-tuning a Nova model with a Bedrock model customization job.

Every check runs before anything is created: role ARN, bucket, region, base model,
hyperparameter bounds, and the Nova validator on the training file. The job's client request
token and name are derived from the study, the model, the data's hash and the hyperparameters,
so a rerun of the same command finds the same job (in the state file, or by name when the
process died between the create call and the state write) and never starts a second one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.bedrock.availability import check_customization_offered, nova_hyperparameters
from localnova.bedrock.aws import AwsClients, call_with_backoff, error_code, wait_until
from localnova.bedrock.state import BedrockState, Resource
from localnova.config import ModelConfig, StudyConfig
from localnova.costs import count_tokens_estimate
from localnova.data.formats import is_nova_row, read_nova_jsonl, read_training_file, write_nova_jsonl
from localnova.data.nova_validator import validate_nova_file
from localnova.errors import UserError
from localnova.files import write_text_atomic
from localnova.types import stable_hash

log = logging.getLogger(__name__)

JOB_DONE = {"Completed"}
JOB_FAILED = {"Failed", "Stopped"}
# Bedrock writes step-wise metrics as CSV under the output location; names vary a little
# between model families, so any CSV whose name mentions metrics or loss is read.
METRICS_FILE_PATTERN = re.compile(r"(metrics|loss)[^/]*\.csv$", re.IGNORECASE)


@dataclass
class PreparedTraining:
    """Everything checked and derived before the first AWS call."""

    model_name: str
    base_model_id: str
    nova_path: Path
    data_sha256: str
    training_tokens: int
    hyperparameters: dict[str, str]
    client_token: str
    job_name: str
    custom_model_name: str
    role_arn: str
    bucket: str
    train_key: str
    output_uri: str
    validation_key: str | None = None
    validation_path: Path | None = None


@dataclass
class CustomizationResult:
    job_name: str
    job_arn: str
    custom_model_arn: str
    status: str
    training_metrics: list[dict[str, str]] = field(default_factory=list)
    metrics_path: str = ""


def _aws_name(text: str, limit: int = 63) -> str:
    """Letters, digits and hyphens only, as Bedrock names and tokens require."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")
    return cleaned[:limit].rstrip("-")


def _validate_training_file(path: Path) -> None:
    """Run the Nova validator; one UserError naming the first problem and how many there are."""
    problems = list(validate_nova_file(path))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        first = problems[0]
        line = getattr(first, "line", 0)
        where = f"{path}:{line}" if line else str(path)
        raise UserError(f"{where}: fails the Nova validator: {getattr(first, 'message', first)}{more}")


def _first_row(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError as error:
                    raise UserError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
    raise UserError(f"{path}: the training file holds no records")


def _nova_file(train_path: Path, work_dir: Path) -> Path:
    """The training file in Nova format: as given, or converted from chat JSONL."""
    if is_nova_row(_first_row(train_path)):
        return train_path
    nova_path = work_dir / f"{train_path.stem}.nova.jsonl"
    write_nova_jsonl(read_training_file(train_path), nova_path)
    return nova_path


def _count_training_tokens(nova_path: Path) -> int:
    return sum(count_tokens_estimate(m["content"]) for record in read_nova_jsonl(nova_path) for m in record.messages)


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
    nova_path = _nova_file(train_path, work_dir)
    _validate_training_file(nova_path)
    valid_nova = None
    if validation_path is not None:
        valid_nova = _nova_file(Path(validation_path), work_dir)
        _validate_training_file(valid_nova)

    data_sha = hashlib.sha256(nova_path.read_bytes()).hexdigest()
    identity = {"study": config.name, "model": model.name, "base": base_model_id, "data": data_sha, "hp": hyperparameters}
    token = stable_hash(identity, 40)
    prefix = f"{bedrock.s3_prefix.strip('/')}/{config.name}"
    return PreparedTraining(
        model_name=model.name,
        base_model_id=base_model_id,
        nova_path=nova_path,
        data_sha256=data_sha,
        training_tokens=_count_training_tokens(nova_path),
        hyperparameters=hyperparameters,
        client_token=token,
        job_name=_aws_name(f"localnova-{config.name}-{model.name}-{token[:10]}"),
        custom_model_name=_aws_name(f"localnova-{config.name}-{model.name}-{token[:10]}", 63),
        role_arn=bedrock.role_arn,
        bucket=bedrock.s3_bucket,
        train_key=f"{prefix}/training/{data_sha[:16]}/train.jsonl",
        output_uri=f"s3://{bedrock.s3_bucket}/{prefix}/customization-output/{model.name}/",
        validation_key=f"{prefix}/training/{data_sha[:16]}/validation.jsonl" if valid_nova else None,
        validation_path=valid_nova,
    )


def _upload(state: BedrockState, clients: AwsClients, region: str, bucket: str, key: str, path: Path) -> None:
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    known = state.find("s3_object", key=f"s3://{bucket}/{key}")
    if known is not None and known.details.get("sha") == digest:
        return
    call_with_backoff(clients.s3.put_object, Bucket=bucket, Key=key, Body=body)
    state.record(Resource("s3_object", f"s3://{bucket}/{key}", region, id=key, details={"bucket": bucket, "key": key, "sha": digest}))


def start_customization(config: StudyConfig, prepared: PreparedTraining, state: BedrockState, clients: AwsClients) -> Resource:
    """Upload the data and create the job, or find the one this command made before."""
    assert config.bedrock is not None
    region = config.bedrock.region
    job = state.find("customization_job", client_token=prepared.client_token)
    if job is not None:
        log.info("customization job %s already started (state file): not creating another", job.id)
        return job
    _upload(state, clients, region, prepared.bucket, prepared.train_key, prepared.nova_path)
    if prepared.validation_key and prepared.validation_path:
        _upload(state, clients, region, prepared.bucket, prepared.validation_key, prepared.validation_path)
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
    )
    if prepared.validation_key:
        request["validationDataConfig"] = {"validators": [{"s3Uri": f"s3://{prepared.bucket}/{prepared.validation_key}"}]}
    try:
        job_arn = call_with_backoff(clients.bedrock.create_model_customization_job, **request)["jobArn"]
    except Exception as error:
        # The same name means the same token: the process died after an earlier create call
        # returned but before the state was written. Adopt that job.
        if error_code(error) not in ("ResourceInUseException", "ConflictException"):
            raise
        job_arn = clients.bedrock.get_model_customization_job(jobIdentifier=prepared.job_name)["jobArn"]
        log.info("customization job %s exists already: adopting it", prepared.job_name)
    return state.record(
        Resource(
            "customization_job",
            f"customization_job:{prepared.model_name}",
            region,
            id=prepared.job_name,
            arn=job_arn,
            client_token=prepared.client_token,
            details={
                "model": prepared.model_name,
                "custom_model_name": prepared.custom_model_name,
                "output_uri": prepared.output_uri,
                "training_tokens": prepared.training_tokens,
            },
        )
    )


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
    sleep: Callable[[float], None] = time.sleep,
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
    except RuntimeError:
        state.update(job, details={**job.details, "job_status": latest.get("status")})
        raise UserError(f"customization job {job.id} ended {latest.get('status')}: {latest.get('failureMessage', 'no message')}") from None
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
                client_token=job.client_token,
                details={"job": job.id},
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
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 60.0,
) -> CustomizationResult:
    """Prepare (all checks), start (once) and wait for one model's customization job."""
    prepared = prepare_customization(config, model, train_path, validation_path)
    job = start_customization(config, prepared, state, clients)
    return wait_for_customization(config, job, state, clients, sleep=sleep, poll_s=poll_s)
