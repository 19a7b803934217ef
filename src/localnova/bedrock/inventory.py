"""What the account holds for one study, asked of the account itself rather than of the state file.

Everything the study creates is found again without its state file: each resource whose API
takes tags carries `localnova-study: <study>`, and every name is hash-first with the study's
name right after the hash (aws/names.py). Hosting, customization jobs and custom models are
listed by the study's name (nameContains) and kept when their name has that shape; Knowledge
Bases have no name filter, so every hash-first one is a candidate. A candidate the state file
does not name is kept only when its tag says this study (one ListTagsForResource each); one the
state names is the tool's own. Data sources and their ingestion jobs are listed under the
Knowledge Bases found, S3 objects under the study's prefix (s3://bucket/<s3_prefix>/<study>/).

A kind the account would not list (access denied, an API the endpoint lacks, a network error)
is not guessed: it is named in `unasked`, and nobody may say "nothing is left" while it is.
Listing is free; nothing here creates, changes or deletes anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.aws.clients import AwsClients, aws_error_line, call_with_backoff, is_aws_error
from localnova.aws.names import clean_name, is_hash_first, names_study
from localnova.aws.state import BedrockState

log = logging.getLogger(__name__)

TAG_KEY = "localnova-study"
DEFAULT_REGION = "us-east-1"  # where Nova customization is offered (aws/availability.py)
RUNNING_JOB_STATUSES = ("InProgress", "Stopping")
RUNNING_INGESTION_STATUSES = ("STARTING", "IN_PROGRESS", "STOPPING")


@dataclass(frozen=True)
class Scope:
    """Where one study's resources live: its name (the tag's value and the names' middle), the
    region, and its S3 bucket and prefix (None: S3 cannot be asked)."""

    study: str
    region: str
    bucket: str | None
    s3_prefix: str = "localnova"

    @property
    def study_prefix(self) -> str:
        return f"{self.s3_prefix.strip('/')}/{self.study}/"


def scope_of_config(config: Any) -> Scope:
    bedrock = config.bedrock
    return Scope(config.name, bedrock.region, bedrock.s3_bucket or None, bedrock.s3_prefix)


def scope_of_folder(study_dir: str | Path, state: BedrockState, region: str | None = None, bucket: str | None = None) -> Scope:
    """A study's scope from its folder (its name is the study's) and what its state file lists,
    the arguments winning; without a state file the region defaults to us-east-1."""
    regions = [r.region for r in state.resources if r.region]
    buckets = [str(r.details["bucket"]) for r in state.resources if r.details.get("bucket")]
    study = Path(study_dir).name
    keys = [str(r.details.get("key") or r.details.get("prefix") or "") for r in state.resources if r.type.startswith("s3")]
    prefixes = [str(r.details["s3_prefix"]) for r in state.resources if r.details.get("s3_prefix")]
    prefixes += [key.split(f"/{study}/", 1)[0] for key in keys if f"/{study}/" in key]
    return Scope(
        study,
        region or (regions[-1] if regions else DEFAULT_REGION),
        bucket or (buckets[-1] if buckets else None),
        prefixes[-1] if prefixes else "localnova",
    )


@dataclass
class Held:
    """One resource the account holds for the study."""

    type: str  # a state type (aws/state.DELETE_ORDER), or "ingestion_job"
    name: str
    id: str = ""
    arn: str = ""
    status: str = ""
    created_at: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def identifiers(self) -> set[str]:
        return {value for value in (self.name, self.id, self.arn) if value}


@dataclass
class Inventory:
    scope: Scope
    held: list[Held] = field(default_factory=list)
    unasked: list[str] = field(default_factory=list)  # "what: why it could not be asked"

    @property
    def complete(self) -> bool:
        return not self.unasked

    def of_type(self, type_: str) -> list[Held]:
        return [item for item in self.held if item.type == type_]


def _pages(client: Any, operation: str, list_key: str, **params: Any) -> Iterator[dict[str, Any]]:
    if client.can_paginate(operation):
        for page in client.get_paginator(operation).paginate(**params):
            yield from page.get(list_key, [])
    else:
        yield from call_with_backoff(getattr(client, operation), **params).get(list_key, [])


def _text(value: Any) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value or "")


# type -> (list operation, list key, name, arn, status, nameContains?) on the bedrock client
BEDROCK_LISTINGS = {
    "provisioned_throughput": (
        "list_provisioned_model_throughputs",
        "provisionedModelSummaries",
        "provisionedModelName",
        "provisionedModelArn",
        "status",
    ),
    "custom_model_deployment": (
        "list_custom_model_deployments",
        "modelDeploymentSummaries",
        "customModelDeploymentName",
        "customModelDeploymentArn",
        "status",
    ),
    "customization_job": ("list_model_customization_jobs", "modelCustomizationJobSummaries", "jobName", "jobArn", "status"),
    "custom_model": ("list_custom_models", "modelSummaries", "modelName", "modelArn", "modelStatus"),
}


def _known_names(state: BedrockState | None) -> set[str]:
    known: set[str] = set()
    for resource in state.resources if state is not None else []:
        known |= {value for value in (resource.name, resource.id, resource.arn) if value}
    return known


def _tagged_for(study: str, tags: Any) -> bool:
    pairs = tags.items() if isinstance(tags, dict) else ((tag.get("key"), tag.get("value")) for tag in tags or [])
    return any(key == TAG_KEY and value == study for key, value in pairs)


class _Asker:
    """One inventory's calls; each kind asked on its own, so one refusal leaves the rest asked."""

    def __init__(self, clients: AwsClients, scope: Scope, known: set[str]):
        self.clients, self.scope, self.known = clients, scope, known
        self.inventory = Inventory(scope)

    def ask(self, what: str, listing: Callable[[], None]) -> None:
        try:
            listing()
        except Exception as error:
            if not is_aws_error(error):
                raise
            self.inventory.unasked.append(f"{what}: {aws_error_line(error)}")

    def ours(self, name: str, arn: str, tags_of: Callable[[str], Any]) -> bool:
        """A listed name is ours when the state names it, or when it has our shape and our tag."""
        if name in self.known or arn in self.known:
            return True
        return bool(arn) and _tagged_for(self.scope.study, tags_of(arn))

    def bedrock_tags(self, arn: str) -> Any:
        return call_with_backoff(self.clients.bedrock.list_tags_for_resource, resourceARN=arn).get("tags", [])

    def agent_tags(self, arn: str) -> Any:
        return call_with_backoff(self.clients.agent.list_tags_for_resource, resourceArn=arn).get("tags", {})

    def bedrock_kind(self, type_: str) -> None:
        operation, list_key, name_field, arn_field, status_field = BEDROCK_LISTINGS[type_]
        contains = clean_name(self.scope.study, 63)
        for summary in _pages(self.clients.bedrock, operation, list_key, nameContains=contains):
            name, arn = str(summary.get(name_field, "")), str(summary.get(arn_field, ""))
            if not names_study(name, self.scope.study) or not self.ours(name, arn, self.bedrock_tags):
                continue
            details: dict[str, Any] = {}
            if type_ in ("provisioned_throughput", "custom_model_deployment"):
                details["model_arn"] = str(summary.get("modelArn", ""))
            if type_ == "provisioned_throughput":
                details["model_units"] = int(summary.get("modelUnits", 1))
                details["base_model"] = str(summary.get("foundationModelArn", "")).rsplit("/", 1)[-1]
            if type_ == "custom_model":
                details["base_model"] = str(summary.get("baseModelName") or summary.get("baseModelArn", "")).rsplit("/", 1)[-1]
            if type_ == "customization_job":
                details["base_model"] = str(summary.get("baseModelArn", "")).rsplit("/", 1)[-1]
            created = summary.get("creationTime") or summary.get("createdAt")
            self.inventory.held.append(
                Held(type_, name, id=name, arn=arn, status=str(summary.get(status_field, "")), created_at=_text(created), details=details)
            )

    def knowledge_bases(self) -> None:
        for summary in _pages(self.clients.agent, "list_knowledge_bases", "knowledgeBaseSummaries"):
            name, kb_id = str(summary.get("name", "")), str(summary.get("knowledgeBaseId", ""))
            if not is_hash_first(name):
                continue
            if name in self.known or kb_id in self.known:
                arn = ""
            else:
                kb = call_with_backoff(self.clients.agent.get_knowledge_base, knowledgeBaseId=kb_id)["knowledgeBase"]
                arn = str(kb.get("knowledgeBaseArn", ""))
                if not self.ours(name, arn, self.agent_tags):
                    continue
            self.inventory.held.append(
                Held("knowledge_base", name, id=kb_id, arn=arn, status=str(summary.get("status", "")), details={"name": name})
            )

    def data_sources(self, knowledge_base_id: str) -> None:
        for summary in _pages(self.clients.agent, "list_data_sources", "dataSourceSummaries", knowledgeBaseId=knowledge_base_id):
            ds_id = str(summary.get("dataSourceId", ""))
            self.inventory.held.append(
                Held("data_source", str(summary.get("name", "")), id=ds_id, details={"knowledge_base_id": knowledge_base_id})
            )
            self.ingestions(knowledge_base_id, ds_id)  # one may run on after its run was stopped

    def ingestions(self, knowledge_base_id: str, data_source_id: str) -> None:
        for job in _pages(
            self.clients.agent,
            "list_ingestion_jobs",
            "ingestionJobSummaries",
            knowledgeBaseId=knowledge_base_id,
            dataSourceId=data_source_id,
        ):
            if job.get("status") in RUNNING_INGESTION_STATUSES:
                job_id = str(job.get("ingestionJobId", ""))
                details = {"knowledge_base_id": knowledge_base_id, "data_source_id": data_source_id}
                self.inventory.held.append(Held("ingestion_job", job_id, id=job_id, status=str(job["status"]), details=details))

    def s3_objects(self) -> None:
        bucket, prefix = self.scope.bucket, self.scope.study_prefix
        count, size = 0, 0
        for item in _pages(self.clients.s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix):
            count, size = count + 1, size + int(item.get("Size", 0))
        if count:
            name = f"s3://{bucket}/{prefix}"
            details = {"bucket": bucket, "prefix": prefix, "objects": count, "bytes": size}
            self.inventory.held.append(Held("s3_prefix", name, id=name, details=details))


def ask_account(clients: AwsClients, scope: Scope, state: BedrockState | None = None) -> Inventory:
    """Everything the account holds for `scope.study` (see the module's docstring); `state`
    names what the tool made (no tag check needed for those)."""
    asker = _Asker(clients, scope, _known_names(state))
    for type_ in BEDROCK_LISTINGS:
        asker.ask(type_.replace("_", " ") + "s", lambda type_=type_: asker.bedrock_kind(type_))
    asker.ask("knowledge bases", asker.knowledge_bases)
    for kb_id in [item.id for item in asker.inventory.of_type("knowledge_base")]:
        asker.ask(f"data sources of knowledge base {kb_id}", lambda kb_id=kb_id: asker.data_sources(kb_id))
    if scope.bucket:
        asker.ask(f"S3 objects under s3://{scope.bucket}/{scope.study_prefix}", asker.s3_objects)
    else:
        asker.inventory.unasked.append("S3 objects: no bucket known (the state file names none; give --bucket or the study's config)")
    for line in asker.inventory.unasked:
        log.warning("could not ask the account about %s", line)
    return asker.inventory
