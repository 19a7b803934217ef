"""The Bedrock control plane of the fake account (bedrock_fake_account.py): its clock and meter,
and the handlers of the `bedrock` service (models, customization jobs, custom models, hosting),
as a mixin of FakeAccount; bedrock_fake_agents.py holds the Knowledge Base and runtimes. Each
handler takes a request botocore's model accepted and answers as the service would, with the
account's lock held.
"""

from __future__ import annotations

import json
import math
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bedrock_fixtures import ACCOUNT

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


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += timedelta(seconds=seconds)


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


class BedrockServices:
    """Handlers of the Bedrock services; FakeAccount holds the state they read and write."""

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
        """The resource an earlier create with this token made (AWS's idempotency); none when the
        account forgets tokens (as one does once a token's time is up, and as moto does)."""
        return None if self.forget_tokens else self.tokens_seen.get((operation, token))

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
            "model_tags": {t["key"]: t["value"] for t in params.get("customModelTags", [])},
        }
        self.jobs[params["jobName"]] = job
        self.tags[job["jobArn"]] = {t["key"]: t["value"] for t in params.get("jobTags", [])}
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
                self.tags[job["outputModelArn"]] = dict(job["model_tags"])
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
        return {k: v for k, v in job.items() if k not in ("base", "model_tags")}

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

    def bedrock__ListTagsForResource(self, params):
        if params["resourceARN"] not in self.tags:
            raise client_error("ResourceNotFoundException", "ListTagsForResource")
        return {"tags": [{"key": key, "value": value} for key, value in self.tags[params["resourceARN"]].items()]}

    # bedrock: hosting

    def _create_hosting(self, kind, operation, params, name, model_arn, units):
        known = self._same_token(operation, params["clientRequestToken"])
        if known is not None:
            return known
        model = next((m for m in self.models.values() if m["arn"] == model_arn), None)
        if model is None:
            raise client_error("ValidationException", operation, "no such custom model")
        if any(h["name"] == name and not h.get("gone_at") for h in self.hosting.values()):
            raise client_error("ValidationException", operation, f"{name} is in use")
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
        self.tags[arn] = {t["key"]: t["value"] for t in params.get("tags", [])}
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
