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
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bedrock_fake_agents import AgentServices
from bedrock_fake_services import (
    BedrockServices,
    FakeClock,
    Meter,
    client_error,
)
from bedrock_fixtures import ACCOUNT, RECORDED_REQUESTS, request_problems

FAULT_KINDS = ("client_error", "interrupt_before", "interrupt_after")
WAITABLE = ("customization_job", "provisioned_throughput", "custom_model_deployment", "knowledge_base", "ingestion_job")


@dataclass
class Fault:
    call_number: int
    kind: str  # one of FAULT_KINDS


@dataclass
class FakeAccount(BedrockServices, AgentServices):
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
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # by ARN: what ListTagsForResource answers
    delivered: Counter = field(default_factory=Counter)  # converse answers that reached the caller, by request
    # the latency probe's calls that reached the caller, by request and requestMetadata (see handle)
    probe_delivered: Counter = field(default_factory=Counter)
    bucket: str = "localnova-test-bucket"
    role_name: str = "localnova-test"
    judge_extra_input_tokens: int = 0  # a judge that reads (and bills) far more than estimated
    denied: set[str] = field(default_factory=set)  # operations refused every time (AccessDeniedException)
    failing: set[str] = field(default_factory=set)  # hosting kinds that end Failed instead of ready
    forget_tokens: bool = False  # creates ignore client tokens seen before: only names say what exists

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
            # The latency probe sends an answer's own request again, on purpose, to time it. It
            # says so in Converse's requestMetadata (the field invocation logs filter on), so the
            # account tells a probe call from an answer paid twice by the request itself, as a
            # user reading the logs would; the probe's calls are then held to their own count
            # (each probe tag once, and each in the study's store: Harness.check_promises). A
            # cross-check of requests against the store alone could not tell a probe call from
            # an answer sent again by mistake: both carry the answer's text.
            with self.lock:
                key, tags = answer.pop("_key"), answer.pop("_tags")
                if tags.get("localnova-call", "").startswith("latency-probe"):
                    self.probe_delivered[(key, tuple(sorted(tags.items())))] += 1
                else:
                    self.delivered[key] += 1
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
            live += [f"ingestion {i}" for i, job in self.ingestions.items() if self._ingestion_status(job) not in ("COMPLETE", "STOPPED")]
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
