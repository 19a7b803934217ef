"""`localnova bedrock cleanup STUDY`: delete every AWS resource the state file lists.

Order matters for the bill: provisioned throughput first (it bills by the hour), then custom
model deployments, running customization jobs (stopped), custom models (monthly storage),
the Knowledge Base's data source and the Knowledge Base, and last the S3 objects this tool
uploaded. It asks once, listing everything, before deleting anything; a resource AWS no longer
knows counts as deleted; whatever could not be deleted stays in the state file and in the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.bedrock.aws import AwsClients, call_with_backoff, error_code
from localnova.bedrock.state import BedrockState, Resource

log = logging.getLogger(__name__)

GONE_CODES = {"ResourceNotFoundException", "NoSuchKey", "NotFound", "404"}


@dataclass
class CleanupReport:
    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # "what: why"
    declined: bool = False

    def format(self) -> str:
        if self.declined:
            return "cleanup declined: nothing deleted; " + (f"{len(self.left)} resource(s) still listed" if self.left else "nothing listed")
        lines = [f"deleted: {item}" for item in self.deleted]
        lines += [f"already gone: {item}" for item in self.already_gone]
        lines += [f"LEFT (still exists or unknown): {item}" for item in self.left]
        lines.append("nothing left that this tool created" if not self.left else f"{len(self.left)} resource(s) left: see above")
        return "\n".join(lines)


def describe(resource: Resource) -> str:
    return f"{resource.type} {resource.arn or resource.id} ({resource.region})"


def _delete(resource: Resource, clients: AwsClients) -> None:
    kind = resource.type
    if kind == "provisioned_throughput":
        call_with_backoff(clients.bedrock.delete_provisioned_model_throughput, provisionedModelId=resource.arn or resource.id)
    elif kind == "custom_model_deployment":
        call_with_backoff(clients.bedrock.delete_custom_model_deployment, customModelDeploymentIdentifier=resource.arn or resource.id)
    elif kind == "customization_job":
        status = clients.bedrock.get_model_customization_job(jobIdentifier=resource.id).get("status")
        if status == "InProgress":
            call_with_backoff(clients.bedrock.stop_model_customization_job, jobIdentifier=resource.id)
    elif kind == "custom_model":
        call_with_backoff(clients.bedrock.delete_custom_model, modelIdentifier=resource.id or resource.arn)
    elif kind == "data_source":
        call_with_backoff(clients.agent.delete_data_source, knowledgeBaseId=resource.details["knowledge_base_id"], dataSourceId=resource.id)
    elif kind == "knowledge_base":
        call_with_backoff(clients.agent.delete_knowledge_base, knowledgeBaseId=resource.id)
    elif kind == "s3_object":
        call_with_backoff(clients.s3.delete_object, Bucket=resource.details["bucket"], Key=resource.details["key"])
    else:
        raise ValueError(f"unknown resource type {kind!r}")


def cleanup(
    study_dir: str | Path, confirm: Callable[[str], bool], clients: AwsClients | None = None, region: str | None = None
) -> CleanupReport:
    """Delete what the study's state file lists, after `confirm(summary)` says yes."""
    state = BedrockState.load(study_dir)
    live = state.live()
    report = CleanupReport()
    if not live:
        return report
    summary = "These AWS resources made by this study will be deleted:\n" + "\n".join(f"  {describe(r)}" for r in live)
    if not confirm(summary):
        report.declined = True
        report.left = [describe(r) for r in live]
        return report
    clients = clients or AwsClients(region or live[0].region)
    for resource in live:
        label = describe(resource)
        try:
            _delete(resource, clients)
        except Exception as error:
            code = error_code(error)
            if code in GONE_CODES:
                state.update(resource, status="deleted")
                report.already_gone.append(label)
                continue
            if not code:
                raise  # a bug, not an AWS answer: keep the traceback
            report.left.append(f"{label}: {code}")
            log.warning("could not delete %s: %s", label, code)
            continue
        if resource.type == "customization_job":
            # a job is not deleted, only stopped; it leaves nothing that bills once stopped
            state.update(resource, status="deleted")
            report.deleted.append(f"{label} (stopped if it was running)")
            continue
        state.update(resource, status="deleted")
        report.deleted.append(label)
    return report


def confirm_on_terminal(summary: str) -> bool:
    """The CLI's confirm: print the list and ask y/N on the terminal."""
    print(summary)
    try:
        return input("Delete them? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cleanup_command(study_dir: str | Path, yes: bool = False, clients: Any = None) -> int:
    """What `localnova bedrock cleanup STUDY [--yes]` runs; returns the exit code (1 if anything is left)."""
    report = cleanup(study_dir, (lambda _summary: True) if yes else confirm_on_terminal, clients=clients)
    print(report.format())
    return 1 if report.left and not report.declined else 0
