"""Square the state file with the account, at every start: run, rerun and cleanup.

Every resource is written down (intended) before its create call, under the name it is created
with. When the answer of that call was lost, the entry stays "intended"; here each such entry
is looked up by its name in the account's own listing: found, it is adopted (its id and ARN
written in); not listed, it never came to be and is marked absent. Hosting the state calls
live but the account no longer lists is marked deleted (the hours stop there), and a finished
customization job whose custom model the state does not name yet gets its entry, so cleanup
deletes it. What cannot be looked up (a listing refused) is reported, never guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from localnova.aws.clients import AwsClients, call_with_backoff, error_code, is_aws_error
from localnova.aws.state import CREATED, HOSTING_TYPES, INTENDED, BedrockState, Resource

log = logging.getLogger(__name__)

GONE_CODES = {"ResourceNotFoundException", "NoSuchKey", "NotFound", "404"}
# What a create answers when its name is taken: ConflictException where the API has it,
# ValidationException where it has not (hosting), ResourceInUseException (moto). The name is
# then looked up: found, the resource is adopted; not found, it was a refusal after all.
NAME_TAKEN_CODES = {"ConflictException", "ResourceInUseException", "ValidationException"}


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)  # created behind a lost answer, found by name
    absent: list[str] = field(default_factory=list)  # written down, never made
    gone: list[str] = field(default_factory=list)  # hosting deleted outside this run
    unresolved: list[str] = field(default_factory=list)  # "what: why it could not be looked up"


def _pages(client: Any, operation: str, list_key: str, **params: Any) -> Iterator[dict[str, Any]]:
    if client.can_paginate(operation):
        for page in client.get_paginator(operation).paginate(**params):
            yield from page.get(list_key, [])
    else:
        yield from call_with_backoff(getattr(client, operation), **params).get(list_key, [])


# type -> (client, list operation, list key, name field, id field, arn field)
LISTINGS = {
    "provisioned_throughput": (
        "bedrock",
        "list_provisioned_model_throughputs",
        "provisionedModelSummaries",
        "provisionedModelName",
        "",
        "provisionedModelArn",
    ),
    "custom_model_deployment": (
        "bedrock",
        "list_custom_model_deployments",
        "modelDeploymentSummaries",
        "customModelDeploymentName",
        "",
        "customModelDeploymentArn",
    ),
    "customization_job": ("bedrock", "list_model_customization_jobs", "modelCustomizationJobSummaries", "jobName", "jobName", "jobArn"),
    "custom_model": ("bedrock", "list_custom_models", "modelSummaries", "modelName", "modelName", "modelArn"),
    "knowledge_base": ("bedrock-agent", "list_knowledge_bases", "knowledgeBaseSummaries", "name", "knowledgeBaseId", ""),
    "data_source": ("bedrock-agent", "list_data_sources", "dataSourceSummaries", "name", "dataSourceId", ""),
}


def locate(resource: Resource, clients: AwsClients) -> dict[str, str] | None:
    """The id and ARN the account lists under this entry's name; None when it lists none."""
    if resource.type == "s3_prefix":
        return {}  # a prefix is a place, not something made
    if resource.type == "s3_object":
        try:
            call_with_backoff(clients.s3.head_object, Bucket=resource.details["bucket"], Key=resource.details["key"])
        except Exception as error:
            if error_code(error) in GONE_CODES:
                return None
            raise
        return {"id": resource.details["key"]}
    service, operation, list_key, name_field, id_field, arn_field = LISTINGS[resource.type]
    params: dict[str, Any] = {}
    if resource.type == "data_source":
        params["knowledgeBaseId"] = resource.details["knowledge_base_id"]
    elif resource.type != "knowledge_base":
        params["nameContains"] = resource.name
    for summary in _pages(clients.get(service), operation, list_key, **params):
        if summary.get(name_field) == resource.name:
            return {"id": str(summary.get(id_field) or resource.name), "arn": str(summary.get(arn_field, "") if arn_field else "")}
    return None


def resolve(state: BedrockState, intended: list[Resource], clients: AwsClients) -> list[tuple[Resource, str]]:
    """Adopt or mark absent each intended entry; returns (entry, why) for those that could not
    be looked up (a refused listing), which stay intended."""
    unresolved = []
    for resource in intended:
        if not resource.name and resource.type != "s3_prefix":
            unresolved.append((resource, "no name to look it up by"))
            continue
        try:
            found = locate(resource, clients)
        except Exception as error:
            if not is_aws_error(error):
                raise
            unresolved.append((resource, error_code(error) or type(error).__name__))
            continue
        if found is None:
            state.mark_absent(resource)
        else:
            state.confirm(resource, **{key: value for key, value in found.items() if value})
    return unresolved


def adopt_if_made(
    state: BedrockState, entry: Resource, clients: AwsClients, lookup: Callable[[], dict[str, str] | None] | None = None
) -> bool:
    """Look the entry up in the account by the name it is created under; when the account has it,
    write its id and ARN in (created) and return True."""
    found = (lookup or (lambda: locate(entry, clients)))()
    if found is None:
        return False
    state.confirm(entry, **{key: value for key, value in found.items() if value})
    log.info("found in the account and adopted: %s", entry.label())
    return True


def create_once(
    state: BedrockState,
    entry: Resource,
    clients: AwsClients,
    create: Callable[[], dict[str, Any]],
    lookup: Callable[[], dict[str, str] | None] | None = None,
    fresh: bool = False,
) -> dict[str, Any] | None:
    """Call `create` for a resource written down (intended) before it, so that it is made once
    whatever happened to an earlier try: an entry not `fresh` (intended before this call: its
    answer lost, or the process killed between the intent and the answer) is first looked up
    by name and adopted when the account has it; a create refused because the name is taken
    (NAME_TAKEN_CODES) is looked up too and adopted. Returns the create's answer, or None when
    the entry was adopted (its id and ARN are then in it). Any other AWS refusal made nothing:
    the entry is marked absent and the error raised."""
    if not fresh and adopt_if_made(state, entry, clients, lookup):
        return None
    try:
        return create()
    except Exception as error:
        code = error_code(error)
        if code in NAME_TAKEN_CODES and adopt_if_made(state, entry, clients, lookup):
            return None
        if code:
            state.mark_absent(entry)
        raise


def hosting_exists(resource: Resource, clients: AwsClients) -> bool:
    """Whether AWS still lists a provisioned throughput or custom model deployment. Its ARN, id
    or name all identify it; the name is all an intended one that was never answered has."""
    identifier = resource.arn or resource.id or resource.name
    try:
        if resource.type == "provisioned_throughput":
            call_with_backoff(clients.bedrock.get_provisioned_model_throughput, provisionedModelId=identifier)
        else:
            call_with_backoff(clients.bedrock.get_custom_model_deployment, customModelDeploymentIdentifier=identifier)
    except Exception as error:
        if error_code(error) in GONE_CODES:
            return False
        raise
    return True


def _record_custom_model(state: BedrockState, job: Resource, clients: AwsClients) -> str | None:
    """The custom model a finished job made, written down if the state lacks it."""
    if state.find("custom_model", client_token=job.client_token) is not None or job.details.get("job_status") in ("Failed", "Stopped"):
        return None
    answer = call_with_backoff(clients.bedrock.get_model_customization_job, jobIdentifier=job.arn or job.name)
    status, model_arn = answer.get("status"), str(answer.get("outputModelArn") or "")
    if status != "Completed" or not model_arn:
        if status in ("Failed", "Stopped"):
            state.update(job, details={**job.details, "job_status": status})
        return None
    name = str(answer.get("outputModelName") or job.details.get("custom_model_name", ""))
    model = Resource(
        "custom_model",
        f"custom_model:{job.details.get('model')}",
        job.region,
        id=name,
        arn=model_arn,
        name=name,
        client_token=job.client_token,
        details={"job": job.name, "base_model": job.details.get("base_model", "")},
    )
    state.record(model)
    return model.label()


def reconcile(state: BedrockState, clients: AwsClients) -> ReconcileReport:
    """Square the state file with the account (see the module's docstring)."""
    report = ReconcileReport()
    intended = [r for r in state.live() if r.status == INTENDED]
    for resource, why in resolve(state, intended, clients):
        report.unresolved.append(f"{resource.label()}: {why}")
    report.adopted = [r.label() for r in intended if r.status == CREATED]
    report.absent = [r.label() for r in intended if r.status == "absent"]
    for resource in [r for r in state.live() if r.status == CREATED]:
        try:
            if resource.type in HOSTING_TYPES and not hosting_exists(resource, clients):
                state.mark_deleted(resource)
                report.gone.append(resource.label())
            elif resource.type == "customization_job":
                found = _record_custom_model(state, resource, clients)
                if found:
                    report.adopted.append(found)
        except Exception as error:
            if not is_aws_error(error):
                raise
            report.unresolved.append(f"{resource.label()}: {error_code(error) or type(error).__name__}")
    for line in report.adopted:
        log.info("found in the account and written down: %s", line)
    return report
