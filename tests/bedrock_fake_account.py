"""A stateful fake Bedrock account: the AWS side of the fault-injection tests.

It stands behind every botocore client (BaseClient._make_api_call is replaced), so the tool's
real code runs: real boto3 clients, real requests, each checked against botocore's service
model first (bedrock_fixtures.request_problems). The account keeps what a real one would:
objects, jobs that finish after a while, custom models, hosting that becomes ready and takes a
while to delete, Knowledge Bases and ingestion, idempotent client tokens, and a meter that
bills what the price file says (read here from the YAML itself, not through the tool's reader):
resource-hours of provisioned throughput, training tokens x epochs, a month of storage per
custom model, embeddings at ingestion and retrieve, and the tokens of every converse call by
the route it took. Its clock is the tests' fake clock, which the tool's waits move.

A `Fault` makes one call (by its number, counted from 1) fail in one of three ways: AWS
refuses it (ClientError, nothing happens), Ctrl-C before it is sent (nothing happens), or Ctrl-C
after the account acted but before the answer arrives (it happened, the caller never knows).
`never_ready` keeps one kind of resource from ever becoming ready.

Token counts are the fake's own: every text block at the project's 4-characters estimate
(a real tokenizer differs; the guard's upper bounds are what is tested, not the tokenizer).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bedrock_fixtures import ACCOUNT, RECORDED_REQUESTS, request_problems

PRICE_FILE = Path(__file__).resolve().parents[1] / "src" / "localnova" / "prices" / "bedrock.yaml"
REGION = "us-east-1"
ARN = f"arn:aws:bedrock:{REGION}:{ACCOUNT}"
PROFILE = re.compile(r"^(us|eu|apac|jp|au|ca|us-gov|global)\.")

# How long things take in the fake account (fake clock).
JOB_MINUTES = 5
HOSTING_MINUTES = 2
DELETE_SECONDS = 20
KB_SECONDS = 30
INGESTION_SECONDS = 40
CONVERSE_SECONDS = 4

FAULT_KINDS = ("client_error", "interrupt_before", "interrupt_after")
WAITABLE = ("customization_job", "provisioned_throughput", "custom_model_deployment", "knowledge_base", "ingestion_job")


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += timedelta(seconds=seconds)


@dataclass
class Fault:
    call_number: int
    kind: str  # one of FAULT_KINDS


def tokens(text: str) -> int:
    """The fake's tokenizer: about 4 characters a token, at least 1 for any text."""
    return max(1, round(len(text) / 4)) if text else 0


def client_error(code: str, operation: str, message: str = "refused by the fake account") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


class Meter:
    """What the account bills, from the price file's YAML."""

    def __init__(self) -> None:
        self.prices = yaml.safe_load(PRICE_FILE.read_text(encoding="utf-8"))
        self.lines: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    @staticmethod
    def key(model_id: str) -> str:
        return re.sub(r":\d+k$", "", PROFILE.sub("", model_id))

    def token_price(self, model_id: str) -> tuple[float, float]:
        entry = self.prices["models"][self.key(model_id)]
        prefix = PROFILE.match(model_id)
        if prefix and prefix.group(1) != "global" and "regional_profile" in entry:
            entry = entry["regional_profile"]
        return entry["input_per_1k"], entry["output_per_1k"]

    def bill(self, what: str, usd: float) -> None:
        with self.lock:
            self.lines.append((what, usd))

    def total(self, hosting: list[dict[str, Any]], now: datetime) -> float:
        """Everything billed, provisioned throughput hours up to `now` included."""
        with self.lock:
            billed = sum(usd for _, usd in self.lines)
        for pt in hosting:
            end = pt.get("gone_at") or now
            hours = max(1, math.ceil((end - pt["created"]).total_seconds() / 3600.0))
            rate = self.prices["hosting"]["provisioned_per_unit_hour"][self.key(pt["base"])]["no_commitment"]
            billed += hours * rate * pt["modelUnits"]
        return billed


@dataclass
class FakeAccount:
    clock: FakeClock
    never_ready: set[str] = field(default_factory=set)
    fault: Fault | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name
    hosting: dict[str, dict[str, Any]] = field(default_factory=dict)  # by ARN: deployments and throughputs
    kbs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id
    ingestions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id
    tokens_seen: dict[tuple[str, str], Any] = field(default_factory=dict)  # (operation, client token) -> resource key
    delivered: Counter = field(default_factory=Counter)  # converse answers that reached the caller, by request
    bucket: str = "localnova-test-bucket"
    role_name: str = "localnova-test"
    judge_extra_input_tokens: int = 0  # a judge that reads (and bills) far more than estimated
    denied: set[str] = field(default_factory=set)  # operations refused every time (AccessDeniedException)
    failing: set[str] = field(default_factory=set)  # hosting kinds that end Failed instead of ready

    def __post_init__(self) -> None:
        self.meter = Meter()
        self.lock = threading.RLock()
        self.ids = itertools.count(1)

    def new_id(self, length: int = 12) -> str:
        return hashlib.sha256(str(next(self.ids)).encode()).hexdigest()[:length]

    # the entry point: every botocore call of the tool lands here

    def install(self, monkeypatch) -> None:
        import botocore.client

        account = self

        def call(client, operation_name, api_params):
            service_model = client.meta.service_model
            problems = request_problems(service_model, operation_name, api_params)
            assert not problems, f"malformed {service_model.service_name}.{operation_name} request: " + "; ".join(problems)
            RECORDED_REQUESTS.append((service_model.service_name, operation_name, dict(api_params)))
            return account.handle(service_model.service_name, operation_name, dict(api_params))

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", call)

    def handle(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls.append((service, operation))
            number = len(self.calls)
            fault = self.fault if self.fault is not None and self.fault.call_number == number else None
        if operation in self.denied:
            raise client_error("AccessDeniedException", operation, "denied by policy")
        if fault is not None and fault.kind == "client_error":
            code = "AccessDenied" if service == "s3" else "AccessDeniedException"
            raise client_error(code, operation, "injected: refused")
        if fault is not None and fault.kind == "interrupt_before":
            raise KeyboardInterrupt(f"injected before call {number}")
        handler = getattr(self, f"{service.replace('-', '_')}__{operation}", None)
        assert handler is not None, f"the fake account has no {service}.{operation}"
        with self.lock:
            answer = handler(params)
        if fault is not None and fault.kind == "interrupt_after":
            raise KeyboardInterrupt(f"injected after call {number} acted")
        if operation == "Converse":
            with self.lock:
                self.delivered[answer.pop("_key")] += 1
        return answer

    # what the invariants read

    def meter_total(self) -> float:
        with self.lock:
            pts = [h for h in self.hosting.values() if h["kind"] == "provisioned_throughput"]
            return self.meter.total(pts, self.clock.now)

    def _refresh(self) -> None:
        for hosted in self.hosting.values():
            self._hosting_status(hosted)
        for job in self.jobs.values():
            self._job_status(job)

    def live_billable(self) -> list[str]:
        """What keeps billing: hosting not gone, jobs and ingestions still running."""
        with self.lock:
            self._refresh()
            live = [f"{h['kind']} {arn}" for arn, h in self.hosting.items() if not h.get("gone_at")]
            live += [f"customization job {name}" for name, job in self.jobs.items() if job["status"] == "InProgress"]
            live += [f"ingestion {i}" for i, job in self.ingestions.items() if self._ingestion_status(job) != "COMPLETE"]
            return live

    def held(self) -> list[tuple[str, set[str]]]:
        """Everything the account holds for the study, each with the names it is known by."""
        with self.lock:
            self._refresh()
            held = [("custom_model", {name, model["arn"]}) for name, model in self.models.items()]
            held += [(h["kind"], {arn, h["name"]}) for arn, h in self.hosting.items() if not h.get("gone_at")]
            held += [("knowledge_base", {kb_id, kb["name"]}) for kb_id, kb in self.kbs.items()]
            held += [("data_source", {ds_id, ds["name"]}) for ds_id, ds in self.sources.items()]
            held += [("s3_object", {f"s3://{bucket}/{key}", key}) for bucket, key in self.objects]
            return held

    # sts, iam, service quotas: the preflight's free reads

    def sts__GetCallerIdentity(self, params):
        return {"Account": ACCOUNT, "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/tester/session", "UserId": "AROAFAKE:session"}

    def iam__GetRole(self, params):
        if params["RoleName"] != self.role_name:
            raise client_error("NoSuchEntity", "GetRole")
        arn = f"arn:aws:iam::{ACCOUNT}:role/{self.role_name}"
        return {"Role": {"Path": "/", "RoleName": self.role_name, "RoleId": "AROAFAKEROLE", "Arn": arn, "CreateDate": self.clock.now}}

    def iam__SimulatePrincipalPolicy(self, params):
        return {
            "EvaluationResults": [{"EvalActionName": a, "EvalDecision": "allowed"} for a in params["ActionNames"]],
            "IsTruncated": False,
        }

    def service_quotas__ListServiceQuotas(self, params):
        names = ["Concurrent model customization jobs", "No-commitment Provisioned Throughputs across custom models"]
        return {"Quotas": [{"QuotaName": name, "Value": 2.0} for name in names]}

    # s3

    def _bucket(self, params, operation):
        if params["Bucket"] != self.bucket:
            raise client_error("NoSuchBucket", operation)

    def s3__HeadBucket(self, params):
        self._bucket(params, "HeadBucket")
        return {}

    def s3__GetBucketLocation(self, params):
        self._bucket(params, "GetBucketLocation")
        return {"LocationConstraint": None}

    def s3__PutObject(self, params):
        self._bucket(params, "PutObject")
        body = params["Body"]
        self.objects[(params["Bucket"], params["Key"])] = body if isinstance(body, bytes) else body.read()
        return {"ETag": '"fake"'}

    def s3__HeadObject(self, params):
        if (params["Bucket"], params["Key"]) not in self.objects:
            raise client_error("404", "HeadObject", "Not Found")
        return {"ContentLength": len(self.objects[(params["Bucket"], params["Key"])])}

    def s3__GetObject(self, params):
        if (params["Bucket"], params["Key"]) not in self.objects:
            raise client_error("NoSuchKey", "GetObject")
        return {"Body": io.BytesIO(self.objects[(params["Bucket"], params["Key"])])}

    def s3__DeleteObject(self, params):
        self.objects.pop((params["Bucket"], params["Key"]), None)
        return {}

    def s3__DeleteObjects(self, params):
        for item in params["Delete"]["Objects"]:
            self.objects.pop((params["Bucket"], item["Key"]), None)
        return {"Deleted": [{"Key": item["Key"]} for item in params["Delete"]["Objects"]]}

    def s3__ListObjectsV2(self, params):
        keys = sorted(key for bucket, key in self.objects if bucket == params["Bucket"] and key.startswith(params.get("Prefix", "")))
        return {
            "Contents": [{"Key": key, "Size": len(self.objects[(params["Bucket"], key)])} for key in keys],
            "KeyCount": len(keys),
            "IsTruncated": False,
        }

    # bedrock: models and access

    FOUNDATION = {
        "amazon.nova-micro-v1:0:128k": (["PROVISIONED"], ["FINE_TUNING"]),
        "amazon.nova-lite-v1:0:300k": (["PROVISIONED"], ["FINE_TUNING"]),
        "amazon.titan-embed-text-v2:0": (["ON_DEMAND"], []),
        "amazon.nova-micro-v1:0": (["ON_DEMAND", "INFERENCE_PROFILE"], []),
    }
    PROFILES = (
        "us.amazon.nova-micro-v1:0",
        "us.amazon.nova-lite-v1:0",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "us.meta.llama3-1-70b-instruct-v1:0",
    )

    def bedrock__GetFoundationModel(self, params):
        model_id = params["modelIdentifier"]
        if model_id not in self.FOUNDATION:
            raise client_error("ResourceNotFoundException", "GetFoundationModel")
        inference, customizations = self.FOUNDATION[model_id]
        details = {"modelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{model_id}", "modelId": model_id}
        return {"modelDetails": {**details, "inferenceTypesSupported": inference, "customizationsSupported": customizations}}

    def bedrock__GetFoundationModelAvailability(self, params):
        return {
            "modelId": params["modelId"],
            "agreementAvailability": {"status": "AVAILABLE"},
            "authorizationStatus": "AUTHORIZED",
            "entitlementAvailability": "AVAILABLE",
            "regionAvailability": "AVAILABLE",
        }

    def bedrock__ListInferenceProfiles(self, params):
        return {"inferenceProfileSummaries": [{"inferenceProfileId": p, "inferenceProfileName": p} for p in self.PROFILES]}

    # bedrock: customization jobs and custom models

    def _same_token(self, operation: str, token: str) -> Any:
        return self.tokens_seen.get((operation, token))

    def bedrock__CreateModelCustomizationJob(self, params):
        known = self._same_token("CreateModelCustomizationJob", params["clientRequestToken"])
        if known is not None:
            return {"jobArn": self.jobs[known]["jobArn"]}
        if params["jobName"] in self.jobs:
            raise client_error("ValidationException", "CreateModelCustomizationJob", "a job of this name exists")
        bucket, _, key = params["trainingDataConfig"]["s3Uri"].removeprefix("s3://").partition("/")
        if (bucket, key) not in self.objects:
            raise client_error("ValidationException", "CreateModelCustomizationJob", "training data not found")
        job = {
            "jobArn": f"{ARN}:model-customization-job/{params['baseModelIdentifier']}/{self.new_id()}",
            "jobName": params["jobName"],
            "outputModelName": params["customModelName"],
            "clientRequestToken": params["clientRequestToken"],
            "roleArn": params["roleArn"],
            "status": "InProgress",
            "creationTime": self.clock.now,
            "baseModelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{params['baseModelIdentifier']}",
            "base": params["baseModelIdentifier"],
            "hyperParameters": params["hyperParameters"],
            "trainingDataConfig": params["trainingDataConfig"],
            "validationDataConfig": params.get("validationDataConfig", {"validators": []}),
            "outputDataConfig": params["outputDataConfig"],
        }
        self.jobs[params["jobName"]] = job
        self.tokens_seen[("CreateModelCustomizationJob", params["clientRequestToken"])] = params["jobName"]
        # training bills the file's tokens x epochs (every text block of every record)
        blocks = []
        for line in self.objects[(bucket, key)].decode("utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                blocks += [b.get("text", "") for b in row.get("system", [])]
                blocks += [b.get("text", "") for m in row.get("messages", []) for b in m.get("content", [])]
        entry = self.meter.prices["customization"][Meter.key(params["baseModelIdentifier"])]
        epochs = int(params["hyperParameters"].get("epochCount", "2"))
        self.meter.bill(f"training {params['jobName']}", sum(tokens(b) for b in blocks) * epochs / 1000 * entry["train_per_1k"])
        return {"jobArn": job["jobArn"]}

    def _job_status(self, job):
        if job["status"] == "InProgress" and "customization_job" not in self.never_ready:
            if self.clock.now >= job["creationTime"] + timedelta(minutes=JOB_MINUTES):
                job["status"] = "Completed"
                name = job["outputModelName"]
                job["outputModelArn"] = f"{ARN}:custom-model/{job['base']}/{self.new_id()}"
                self.models[name] = {"arn": job["outputModelArn"], "name": name, "base": job["base"], "created": self.clock.now}
                storage = self.meter.prices["customization"][Meter.key(job["base"])]["storage_per_month"]
                self.meter.bill(f"storage {name}", storage)
        return job["status"]

    def _job(self, identifier, operation):
        for job in self.jobs.values():
            if identifier in (job["jobName"], job["jobArn"]):
                self._job_status(job)
                return job
        raise client_error("ResourceNotFoundException", operation)

    def bedrock__GetModelCustomizationJob(self, params):
        job = self._job(params["jobIdentifier"], "GetModelCustomizationJob")
        return {k: v for k, v in job.items() if k != "base"}

    def bedrock__ListModelCustomizationJobs(self, params):
        found = [j for j in self.jobs.values() if params.get("nameContains", "") in j["jobName"]]
        return {
            "modelCustomizationJobSummaries": [
                {
                    "jobArn": j["jobArn"],
                    "jobName": j["jobName"],
                    "status": self._job_status(j),
                    "creationTime": j["creationTime"],
                    "baseModelArn": j["baseModelArn"],
                }
                for j in found
            ]
        }

    def bedrock__StopModelCustomizationJob(self, params):
        job = self._job(params["jobIdentifier"], "StopModelCustomizationJob")
        if job["status"] == "InProgress":
            job["status"] = "Stopped"
        return {}

    def bedrock__ListCustomModels(self, params):
        found = [m for name, m in self.models.items() if params.get("nameContains", "") in name]
        return {
            "modelSummaries": [
                {
                    "modelArn": m["arn"],
                    "modelName": m["name"],
                    "creationTime": m["created"],
                    "baseModelArn": "x",
                    "baseModelName": m["base"],
                }
                for m in found
            ]
        }

    def bedrock__DeleteCustomModel(self, params):
        for name, model in list(self.models.items()):
            if params["modelIdentifier"] in (name, model["arn"]):
                if any(h["modelArn"] == model["arn"] and not h.get("gone_at") for h in self.hosting.values()):
                    raise client_error("ValidationException", "DeleteCustomModel", "the model is hosted")
                del self.models[name]
                return {}
        raise client_error("ResourceNotFoundException", "DeleteCustomModel")

    # bedrock: hosting

    def _create_hosting(self, kind, operation, params, name, model_arn, units):
        known = self._same_token(operation, params["clientRequestToken"])
        if known is not None:
            return known
        model = next((m for m in self.models.values() if m["arn"] == model_arn), None)
        if model is None:
            raise client_error("ValidationException", operation, "no such custom model")
        path = "custom-model-deployment" if kind == "custom_model_deployment" else "provisioned-model"
        arn = f"{ARN}:{path}/{self.new_id()}"
        self.hosting[arn] = {
            "kind": kind,
            "name": name,
            "modelArn": model_arn,
            "base": model["base"],
            "modelUnits": units,
            "created": self.clock.now,
        }
        self.tokens_seen[(operation, params["clientRequestToken"])] = arn
        return arn

    def _hosting_status(self, hosted):
        if hosted.get("gone_at"):
            return "gone"
        if hosted.get("deleting_at"):
            if self.clock.now >= hosted["deleting_at"] + timedelta(seconds=DELETE_SECONDS):
                hosted["gone_at"] = hosted["deleting_at"] + timedelta(seconds=DELETE_SECONDS)
                return "gone"
            return "Deleting"
        ready = "Active" if hosted["kind"] == "custom_model_deployment" else "InService"
        if hosted["kind"] in self.failing and self.clock.now >= hosted["created"] + timedelta(minutes=HOSTING_MINUTES):
            return "Failed"
        if hosted["kind"] not in self.never_ready and self.clock.now >= hosted["created"] + timedelta(minutes=HOSTING_MINUTES):
            return ready
        return "Creating"

    def _hosted(self, identifier, operation):
        hosted = self.hosting.get(identifier) or next((h for h in self.hosting.values() if h["name"] == identifier), None)
        if hosted is None or self._hosting_status(hosted) == "gone":
            raise client_error("ResourceNotFoundException", operation)
        return hosted

    def bedrock__CreateCustomModelDeployment(self, params):
        arn = self._create_hosting(
            "custom_model_deployment", "CreateCustomModelDeployment", params, params["modelDeploymentName"], params["modelArn"], 0
        )
        return {"customModelDeploymentArn": arn}

    def bedrock__GetCustomModelDeployment(self, params):
        hosted = self._hosted(params["customModelDeploymentIdentifier"], "GetCustomModelDeployment")
        arn = next(a for a, h in self.hosting.items() if h is hosted)
        status = self._hosting_status(hosted)
        return {
            "customModelDeploymentArn": arn,
            "modelDeploymentName": hosted["name"],
            "modelArn": hosted["modelArn"],
            "createdAt": hosted["created"],
            "status": "Creating" if status == "Deleting" else status,
        }

    def bedrock__ListCustomModelDeployments(self, params):
        found = [(a, h) for a, h in self.hosting.items() if h["kind"] == "custom_model_deployment" and self._hosting_status(h) != "gone"]
        return {
            "modelDeploymentSummaries": [
                {
                    "customModelDeploymentArn": a,
                    "customModelDeploymentName": h["name"],
                    "modelArn": h["modelArn"],
                    "createdAt": h["created"],
                    "status": "Creating",
                }
                for a, h in found
                if params.get("nameContains", "") in h["name"]
            ]
        }

    def bedrock__DeleteCustomModelDeployment(self, params):
        hosted = self._hosted(params["customModelDeploymentIdentifier"], "DeleteCustomModelDeployment")
        hosted.setdefault("deleting_at", self.clock.now)
        return {}

    def bedrock__CreateProvisionedModelThroughput(self, params):
        arn = self._create_hosting(
            "provisioned_throughput",
            "CreateProvisionedModelThroughput",
            params,
            params["provisionedModelName"],
            params["modelId"],
            params["modelUnits"],
        )
        return {"provisionedModelArn": arn}

    def _pt_view(self, arn, hosted):
        status = self._hosting_status(hosted)
        return {
            "modelUnits": hosted["modelUnits"],
            "desiredModelUnits": hosted["modelUnits"],
            "provisionedModelName": hosted["name"],
            "provisionedModelArn": arn,
            "modelArn": hosted["modelArn"],
            "desiredModelArn": hosted["modelArn"],
            "foundationModelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{hosted['base']}",
            "status": "Updating" if status == "Deleting" else status,
            "creationTime": hosted["created"],
            "lastModifiedTime": hosted["created"],
        }

    def bedrock__GetProvisionedModelThroughput(self, params):
        hosted = self._hosted(params["provisionedModelId"], "GetProvisionedModelThroughput")
        arn = next(a for a, h in self.hosting.items() if h is hosted)
        return self._pt_view(arn, hosted)

    def bedrock__ListProvisionedModelThroughputs(self, params):
        found = [
            self._pt_view(a, h)
            for a, h in self.hosting.items()
            if h["kind"] == "provisioned_throughput" and self._hosting_status(h) != "gone" and params.get("nameContains", "") in h["name"]
        ]
        return {"provisionedModelSummaries": found}

    def bedrock__DeleteProvisionedModelThroughput(self, params):
        hosted = self._hosted(params["provisionedModelId"], "DeleteProvisionedModelThroughput")
        hosted.setdefault("deleting_at", self.clock.now)
        return {}

    # bedrock-agent: Knowledge Base, data source, ingestion

    def bedrock_agent__CreateKnowledgeBase(self, params):
        known = self._same_token("CreateKnowledgeBase", params["clientToken"])
        if known is None:
            known = self.new_id(10).upper()
            embed = params["knowledgeBaseConfiguration"]["vectorKnowledgeBaseConfiguration"]["embeddingModelArn"].rsplit("/", 1)[-1]
            self.kbs[known] = {"name": params["name"], "created": self.clock.now, "embed": embed, "roleArn": params["roleArn"]}
            self.tokens_seen[("CreateKnowledgeBase", params["clientToken"])] = known
        return {"knowledgeBase": self._kb_view(known)}

    def _kb_view(self, kb_id):
        kb = self.kbs[kb_id]
        ready = "knowledge_base" not in self.never_ready and self.clock.now >= kb["created"] + timedelta(seconds=KB_SECONDS)
        return {
            "knowledgeBaseId": kb_id,
            "name": kb["name"],
            "knowledgeBaseArn": f"{ARN}:knowledge-base/{kb_id}",
            "roleArn": kb["roleArn"],
            "knowledgeBaseConfiguration": {"type": "VECTOR"},
            "status": "ACTIVE" if ready else "CREATING",
            "createdAt": kb["created"],
            "updatedAt": kb["created"],
        }

    def bedrock_agent__GetKnowledgeBase(self, params):
        if params["knowledgeBaseId"] not in self.kbs:
            raise client_error("ResourceNotFoundException", "GetKnowledgeBase")
        return {"knowledgeBase": self._kb_view(params["knowledgeBaseId"])}

    def bedrock_agent__ListKnowledgeBases(self, params):
        return {
            "knowledgeBaseSummaries": [
                {"knowledgeBaseId": i, "name": kb["name"], "status": "ACTIVE", "updatedAt": kb["created"]} for i, kb in self.kbs.items()
            ]
        }

    def bedrock_agent__DeleteKnowledgeBase(self, params):
        if self.kbs.pop(params["knowledgeBaseId"], None) is None:
            raise client_error("ResourceNotFoundException", "DeleteKnowledgeBase")
        for ds_id in [i for i, ds in self.sources.items() if ds["kb"] == params["knowledgeBaseId"]]:
            del self.sources[ds_id]
        return {"knowledgeBaseId": params["knowledgeBaseId"], "status": "DELETING"}

    def bedrock_agent__CreateDataSource(self, params):
        if params["knowledgeBaseId"] not in self.kbs:
            raise client_error("ResourceNotFoundException", "CreateDataSource")
        known = self._same_token("CreateDataSource", params["clientToken"])
        if known is None:
            known = self.new_id(10).upper()
            prefixes = params["dataSourceConfiguration"]["s3Configuration"]["inclusionPrefixes"]
            self.sources[known] = {"name": params["name"], "kb": params["knowledgeBaseId"], "prefixes": prefixes, "created": self.clock.now}
            self.tokens_seen[("CreateDataSource", params["clientToken"])] = known
        ds = self.sources[known]
        view = {
            "knowledgeBaseId": ds["kb"],
            "dataSourceId": known,
            "name": ds["name"],
            "status": "AVAILABLE",
            "createdAt": ds["created"],
            "updatedAt": ds["created"],
        }
        return {"dataSource": {**view, "dataSourceConfiguration": params["dataSourceConfiguration"]}}

    def bedrock_agent__ListDataSources(self, params):
        found = [(i, ds) for i, ds in self.sources.items() if ds["kb"] == params["knowledgeBaseId"]]
        return {
            "dataSourceSummaries": [
                {"knowledgeBaseId": ds["kb"], "dataSourceId": i, "name": ds["name"], "status": "AVAILABLE", "updatedAt": ds["created"]}
                for i, ds in found
            ]
        }

    def bedrock_agent__DeleteDataSource(self, params):
        if self.sources.pop(params["dataSourceId"], None) is None:
            raise client_error("ResourceNotFoundException", "DeleteDataSource")
        return {"knowledgeBaseId": params["knowledgeBaseId"], "dataSourceId": params["dataSourceId"], "status": "DELETING"}

    def bedrock_agent__StartIngestionJob(self, params):
        if params["dataSourceId"] not in self.sources:
            raise client_error("ResourceNotFoundException", "StartIngestionJob")
        known = self._same_token("StartIngestionJob", params["clientToken"])
        if known is None:
            known = self.new_id(10).upper()
            source = self.sources[params["dataSourceId"]]
            self.ingestions[known] = {"kb": params["knowledgeBaseId"], "ds": params["dataSourceId"], "started": self.clock.now}
            self.tokens_seen[("StartIngestionJob", params["clientToken"])] = known
            embedded = sum(
                tokens(body.decode("utf-8", "ignore"))
                for (_, key), body in self.objects.items()
                if any(key.startswith(p) for p in source["prefixes"])
            )
            price, _ = self.meter.token_price(self.kbs[params["knowledgeBaseId"]]["embed"])
            self.meter.bill(f"ingestion {known}", embedded / 1000 * price)
        return {"ingestionJob": self._ingestion_view(known)}

    def _ingestion_status(self, job):
        if "ingestion_job" not in self.never_ready and self.clock.now >= job["started"] + timedelta(seconds=INGESTION_SECONDS):
            return "COMPLETE"
        return "IN_PROGRESS"

    def _ingestion_view(self, job_id):
        job = self.ingestions[job_id]
        return {
            "knowledgeBaseId": job["kb"],
            "dataSourceId": job["ds"],
            "ingestionJobId": job_id,
            "status": self._ingestion_status(job),
            "startedAt": job["started"],
            "updatedAt": job["started"],
        }

    def bedrock_agent__GetIngestionJob(self, params):
        if params["ingestionJobId"] not in self.ingestions:
            raise client_error("ResourceNotFoundException", "GetIngestionJob")
        return {"ingestionJob": self._ingestion_view(params["ingestionJobId"])}

    # the runtimes: retrieve and converse

    def bedrock_agent_runtime__Retrieve(self, params):
        kb = self.kbs.get(params["knowledgeBaseId"])
        if kb is None:
            raise client_error("ResourceNotFoundException", "Retrieve")
        price, _ = self.meter.token_price(kb["embed"])
        self.meter.bill("retrieve", tokens(params["retrievalQuery"]["text"]) / 1000 * price)
        top_k = params["retrievalConfiguration"]["vectorSearchConfiguration"]["numberOfResults"]
        sources = [ds for ds in self.sources.values() if ds["kb"] == params["knowledgeBaseId"]]
        found = [(b, k) for (b, k) in sorted(self.objects) if any(k.startswith(p) for ds in sources for p in ds["prefixes"])][:top_k]
        return {
            "retrievalResults": [
                {
                    "content": {"text": self.objects[(b, k)].decode("utf-8", "ignore")[:300]},
                    "location": {"type": "S3", "s3Location": {"uri": f"s3://{b}/{k}"}},
                    "score": 0.5,
                }
                for b, k in found
            ]
        }

    def _resolve_model(self, model_id):
        """(base model, price route id or None when paid by the hour) of a modelId."""
        hosted = self.hosting.get(model_id)
        if hosted is not None:
            status = self._hosting_status(hosted)
            if status not in ("Active", "InService"):
                raise client_error("ValidationException", "Converse", f"hosting is {status}")
            return hosted["modelArn"], (hosted["base"] if hosted["kind"] == "custom_model_deployment" else None)
        return model_id, model_id

    def bedrock_runtime__Converse(self, params):
        model_id = params["modelId"]
        config = params.get("inferenceConfig", {})
        # Claude Sonnet 4.5 refuses temperature with topP (written here from the service's error, not the tool's rule table)
        if "claude-sonnet-4-5" in model_id and "temperature" in config and "topP" in config:
            raise client_error("ValidationException", "Converse", "`temperature` and `top_p` cannot both be specified for this model")
        resolved, priced = self._resolve_model(model_id)
        texts = [b["text"] for b in params.get("system", [])] + [b["text"] for m in params["messages"] for b in m["content"]]
        judge = "anthropic" in model_id or "meta." in model_id
        key = hashlib.sha256(json.dumps([model_id, texts, config], sort_keys=True).encode()).hexdigest()
        text = json.dumps({"score": 7, "reason": "mostly right"}) if judge else f"The F4 lamp draws 36 watts ({key[:8]})."
        input_tokens, output_tokens = sum(tokens(t) for t in texts), min(config.get("maxTokens", 4096), tokens(text))
        input_tokens += self.judge_extra_input_tokens if judge else 0
        if priced is not None:
            price_in, price_out = self.meter.token_price(priced)
            self.meter.bill(f"converse {model_id}", input_tokens / 1000 * price_in + output_tokens / 1000 * price_out)
        self.clock.advance(CONVERSE_SECONDS)
        key = hashlib.sha256(json.dumps([resolved, texts, config], sort_keys=True).encode()).hexdigest()
        return {
            "_key": key,
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens},
            "metrics": {"latencyMs": 50},
        }
