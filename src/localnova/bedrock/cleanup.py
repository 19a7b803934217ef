"""`localnova bedrock cleanup STUDY`: delete every AWS resource the study made, as the account lists it.

It asks the account first (bedrock/inventory.py: the study's tag and hash-first names, its S3
prefix), so what a lost or removed state file forgot is found too, and squares the state with
the account (bedrock/reconcile.py): a resource created behind a lost answer is found by its
name. What the account has and the state file lacks is written into the state file (found in
the account) before anything is deleted, so a cleanup cut short finds it again. STUDY is the
study folder (its name is the study's; without a state file, --region and --bucket say where
to ask) or the study's config. "Nothing left" is said only when every kind was asked. Order matters for the bill: every
provisioned throughput first (it bills by the hour), then custom model deployments; cleanup
then waits until AWS no longer lists them, because a custom model cannot be deleted while
something hosts it and an hourly charge runs until the deletion finishes. Then running
customization jobs (stopped), custom models (monthly storage), the Knowledge Base's data source
and the Knowledge Base, the S3 objects this tool uploaded, and the customization jobs' training
output in S3 (unless kept). It asks once, listing everything, before deleting anything; a
resource AWS no longer knows counts as deleted; whatever could not be deleted stays in the
state file and in the report, each with its cost per hour, and the command exits non-zero
while anything that bills is still live.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.aws.clients import AwsClients, aws_error_line, call_with_backoff, error_code, is_aws_error, pause
from localnova.aws.state import CREATED, HOSTING_TYPES, INTENDED, BedrockState, Resource, utc_now
from localnova.bedrock.inventory import Held, Inventory, Scope, ask_account, scope_of_config, scope_of_folder
from localnova.bedrock.leftovers import describe_held
from localnova.bedrock.reconcile import GONE_CODES, hosting_exists, reconcile
from localnova.config import load_config
from localnova.errors import UserError
from localnova.prices import PriceBook, load_prices

log = logging.getLogger(__name__)

DELETE_WAIT_S = 3600.0  # a hosting deletion that takes longer than this is reported, not waited for


@dataclass
class CleanupReport:
    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # "what: why"
    kept: list[str] = field(default_factory=list)  # left on purpose (--keep-training-output)
    declined: bool = False
    unasked: list[str] = field(default_factory=list)  # kinds the account could not be asked about
    found_in_account: list[str] = field(default_factory=list)  # what the state file lacked
    asked: str = ""  # where the account was asked

    def format(self) -> str:
        found = [f"found in the account, not in the state file: {item}" for item in self.found_in_account]
        if self.declined:
            return "\n".join(
                [*found, f"cleanup declined: nothing deleted; {len(self.left)} resource(s) still live: " + "; ".join(self.left)]
            )
        lines = found + [f"deleted: {item}" for item in self.deleted]
        lines += [f"already gone: {item}" for item in self.already_gone]
        lines += [f"kept as asked: {item}" for item in self.kept]
        lines += [f"LEFT (still exists or unknown): {item}" for item in self.left]
        lines += [f"NOT ASKED: {item}" for item in self.unasked]
        if self.left:
            lines.append(f"{len(self.left)} resource(s) left: see above")
        elif self.unasked:
            lines.append(
                f"nothing left of what the account answered about ({self.asked}); {len(self.unasked)} kind(s) not asked: see above"
            )
        else:
            lines.append(f"nothing left that this tool created (asked the account: {self.asked})")
        return "\n".join(lines)


def describe(resource: Resource) -> str:
    return resource.label()


def _delete(resource: Resource, clients: AwsClients) -> None:
    kind = resource.type
    if kind == "provisioned_throughput":
        call_with_backoff(clients.bedrock.delete_provisioned_model_throughput, provisionedModelId=resource.arn or resource.id)
    elif kind == "custom_model_deployment":
        call_with_backoff(clients.bedrock.delete_custom_model_deployment, customModelDeploymentIdentifier=resource.arn or resource.id)
    elif kind == "customization_job":
        status = call_with_backoff(clients.bedrock.get_model_customization_job, jobIdentifier=resource.id).get("status")
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
    elif kind == "s3_prefix":
        delete_prefix(clients, resource.details["bucket"], resource.details["prefix"], tuple(resource.details.get("keep", ())))
    else:
        raise ValueError(f"unknown resource type {kind!r}")


def delete_prefix(clients: AwsClients, bucket: str, prefix: str, keep: tuple[str, ...] = ()) -> int:
    """Delete every object under `prefix` but those under a `keep` prefix; returns how many."""
    keys = [
        item["Key"]
        for page in clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
        if not (keep and item["Key"].startswith(keep))
    ]
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        call_with_backoff(clients.s3.delete_objects, Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    return len(keys)


def wait_until_gone(
    resources: list[Resource], clients: AwsClients, sleep: Callable[[float], None] | None = None, poll_s: float = 15.0
) -> tuple[list[Resource], dict[int, str]]:
    """Poll until AWS no longer lists any of `resources`; returns those still there after
    DELETE_WAIT_S or whose state could not be read (the caller keeps them, and what they host,
    in the state file), with why for the unreadable ones."""
    pending = list(resources)
    unreadable: dict[int, str] = {}
    waited_s = 0.0
    while pending:
        still = []
        for resource in pending:
            try:
                if hosting_exists(resource, clients):
                    still.append(resource)
            except Exception as error:
                if not is_aws_error(error):
                    raise
                unreadable[id(resource)] = aws_error_line(error)
                still.append(resource)
        pending = [r for r in still if id(r) not in unreadable]
        if not pending or waited_s >= DELETE_WAIT_S:
            break
        (sleep or pause)(poll_s)
        waited_s += poll_s
    return [r for r in resources if r in pending or id(r) in unreadable], unreadable


def delete_resources(
    state: BedrockState,
    resources: list[Resource],
    clients: AwsClients,
    sleep: Callable[[float], None] | None = None,
    poll_s: float = 15.0,
) -> CleanupReport:
    """Delete `resources` (in cleanup order), marking each deleted in the state file once AWS
    confirms it; hosting is waited out before any custom model is deleted."""
    report = CleanupReport()
    hosting = [r for r in resources if r.type in HOSTING_TYPES]
    asked_to_go: list[Resource] = []
    for resource in hosting:
        if _delete_one(state, resource, clients, report, wait_for_it=True):
            asked_to_go.append(resource)
    still_there, unreadable = wait_until_gone(asked_to_go, clients, sleep, poll_s)
    for resource in asked_to_go:
        if id(resource) in unreadable:
            report.left.append(f"{describe(resource)}: deletion asked for, not confirmed ({unreadable[id(resource)]})")
        elif resource in still_there:
            report.left.append(f"{describe(resource)}: deletion asked for, still listed after {DELETE_WAIT_S / 60:.0f} min")
        else:
            state.mark_deleted(resource)
            report.deleted.append(describe(resource))
    for resource in resources:
        if resource.type in HOSTING_TYPES:
            continue
        if resource.type == "custom_model" and (still_there or any(r.type in HOSTING_TYPES for r in state.live())):
            report.left.append(f"{describe(resource)}: kept, its hosting is still live")
            continue
        _delete_one(state, resource, clients, report)
    return report


def _delete_one(state: BedrockState, resource: Resource, clients: AwsClients, report: CleanupReport, wait_for_it: bool = False) -> bool:
    """Ask AWS to delete one resource; True when asked and AWS accepted. Unless `wait_for_it`,
    an accepted deletion is marked in the state file at once."""
    label = describe(resource)
    try:
        _delete(resource, clients)
    except Exception as error:
        code = error_code(error)
        if code in GONE_CODES:
            state.mark_deleted(resource)
            report.already_gone.append(label)
            return False
        if not is_aws_error(error):
            raise  # a bug, not an AWS answer: keep the traceback
        report.left.append(f"{label}: delete refused ({aws_error_line(error)})")
        log.warning("could not delete %s: %s", label, code)
        return False
    if wait_for_it:
        return True
    state.mark_deleted(resource)
    # a job is not deleted, only stopped; it leaves nothing that bills once stopped
    report.deleted.append(f"{label} (stopped if it was running)" if resource.type == "customization_job" else label)
    return True


def _found_key(item: Held) -> str:
    return f"{item.type}:found-in-account:{item.id or item.name}"


def record_found(state: BedrockState, inventory: Inventory, keep: tuple[str, ...] = (), prices: PriceBook | None = None) -> list[str]:
    """Write into the state file (created, found in the account) what the account holds for the
    study and the state file does not name: hosting, running customization jobs, custom models,
    Knowledge Bases and data sources, and the study's S3 prefix (with `keep`: the prefixes
    under it that stay), so that cleanup deletes them. Returns a line, with its cost, for each
    the state knew nothing of (the study's prefix only when the state lists no S3 object)."""
    prices = prices or load_prices()
    named = set()
    for resource in state.resources:
        if resource.live:
            named |= {value for value in (resource.arn, resource.id, resource.name) if value}
    added, news = [], []
    for item in inventory.held:
        if item.type == "ingestion_job" or item.identifiers() & named:
            continue
        if item.type == "customization_job" and item.status not in ("InProgress", "Stopping"):
            continue  # a finished job bills nothing; what it made is listed on its own
        details = {**item.details, "found_in_account": True}
        if item.type == "s3_prefix":
            details["keep"] = list(keep)
        resource = Resource(
            item.type,
            _found_key(item),
            inventory.scope.region,
            id=item.id or item.name,
            arn=item.arn,
            name=item.name,
            client_token=_found_key(item),
            status=CREATED,
            details=details,
            created_at=item.created_at or utc_now(),
        )
        if item.type == "provisioned_throughput":
            rate = prices.provisioned(str(item.details.get("base_model", "")))
            resource.hourly_usd = float(rate["no_commitment"]) * int(item.details.get("model_units", 1)) if rate else 0.0
        added.append(state.record(resource))
        covered = item.type == "s3_prefix" and any(r.type.startswith("s3") and r.live for r in state.resources if r is not resource)
        if not covered:  # the study's prefix holds what the state lists: no news, only swept whole
            news.append(describe_held(item, prices))
    return news


def cleanup(
    study_dir: str | Path,
    confirm: Callable[[str], bool],
    clients: AwsClients | None = None,
    region: str | None = None,
    keep_training_output: bool = False,
    sleep: Callable[[float], None] | None = None,
    poll_s: float = 15.0,
    bucket: str | None = None,
    scope: Scope | None = None,
) -> CleanupReport:
    """Delete what the study made, as the account and its state file list it, after
    `confirm(summary)` says yes; with `keep_training_output` the customization jobs' output in
    S3 stays (and stays listed). `scope` (else the folder, the state file, `region`, `bucket`)
    says where to ask."""
    state = BedrockState.load(study_dir)
    report = CleanupReport()
    scope = scope or scope_of_folder(study_dir, state, region, bucket)
    report.asked = f"{scope.region}, study {scope.study!r}" + (f", s3://{scope.bucket}/{scope.study_prefix}" if scope.bucket else "")
    clients = clients or AwsClients(scope.region)
    found = reconcile(state, clients)
    report.left += found.unresolved
    inventory = ask_account(clients, scope, state)
    report.unasked = list(inventory.unasked)
    keep = (f"{scope.study_prefix}customization-output/",) if keep_training_output else ()
    report.found_in_account = record_found(state, inventory, keep)
    # the account, asked, no longer lists it: nothing to delete (hosting is checked by reconcile)
    for resource in [r for r in state.live() if r.status != INTENDED and _gone_from_account(r, inventory)]:
        state.mark_deleted(resource)
        report.already_gone.append(describe(resource))
    live = [r for r in state.live() if r.status != INTENDED]
    kept = [r for r in live if keep_training_output and r.type == "s3_prefix" and not r.details.get("found_in_account")]
    live = [r for r in live if r not in kept]
    report.kept = [describe(r) for r in kept] + [f"s3://{scope.bucket}/{prefix}" for prefix in keep if scope.bucket]
    ingesting = [f"ingestion job {item.id} (running: stopped first)" for item in inventory.of_type("ingestion_job")]
    if not live and not ingesting:
        return report
    summary = "These AWS resources made by this study will be deleted:\n" + "\n".join(
        f"  {line}" for line in [*ingesting, *(describe(r) for r in live)]
    )
    if not confirm(summary):
        report.declined = True
        report.left = [describe(r) for r in live]
        return report
    stopped, refused = stop_ingestions(inventory, clients)
    deleted = delete_resources(state, live, clients, sleep, poll_s)
    deleted.deleted = stopped + deleted.deleted
    deleted.left = refused + deleted.left
    deleted.left = report.left + deleted.left
    deleted.already_gone = report.already_gone + deleted.already_gone
    deleted.kept, deleted.unasked, deleted.found_in_account, deleted.asked = (
        report.kept,
        report.unasked,
        report.found_in_account,
        report.asked,
    )
    return deleted


def stop_ingestions(inventory: Inventory, clients: AwsClients) -> tuple[list[str], list[str]]:
    """Stop (StopIngestionJob) the ingestions the account says are running, before their data
    source goes; returns (stopped, could not be stopped) lines."""
    stopped, refused = [], []
    for item in inventory.of_type("ingestion_job"):
        what = f"ingestion job {item.id} of knowledge base {item.details['knowledge_base_id']}"
        try:
            call_with_backoff(
                clients.agent.stop_ingestion_job,
                knowledgeBaseId=item.details["knowledge_base_id"],
                dataSourceId=item.details["data_source_id"],
                ingestionJobId=item.id,
            )
        except Exception as error:
            if error_code(error) in GONE_CODES | {"ConflictException"}:  # gone, or ended meanwhile
                continue
            if not is_aws_error(error):
                raise
            refused.append(f"{what}: stop refused ({aws_error_line(error)})")
            continue
        stopped.append(f"{what} (stopped)")
    return stopped, refused


def _gone_from_account(resource: Resource, inventory: Inventory) -> bool:
    """A custom model, Knowledge Base or data source the account was asked about and no longer
    lists: marked deleted without a call (its deletion happened elsewhere)."""
    labels = {"custom_model": "custom models", "knowledge_base": "knowledge bases", "data_source": "data sources"}
    if resource.type not in labels or any(line.startswith((labels[resource.type], "knowledge bases")) for line in inventory.unasked):
        return False
    ids = {value for value in (resource.arn, resource.id, resource.name) if value}
    return not any(item.identifiers() & ids for item in inventory.of_type(resource.type))


def confirm_on_terminal(summary: str) -> bool:
    """The CLI's confirm: print the list and ask y/N on the terminal."""
    print(summary)
    try:
        return input("Delete them? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cleanup_target(target: str | Path) -> tuple[Path, Scope | None]:
    """The study folder and, when `target` is a study config, where its resources live."""
    path = Path(target)
    if path.is_file() and path.suffix in (".yaml", ".yml", ".json"):
        config = load_config(path, [])
        if config.bedrock is None:
            raise UserError(f"{path}: a study config without a bedrock section made nothing in AWS")
        return config.study_dir, scope_of_config(config)
    return path, None


def cleanup_command(
    study_dir: str | Path,
    yes: bool = False,
    clients: Any = None,
    keep_training_output: bool = False,
    region: str | None = None,
    bucket: str | None = None,
) -> int:
    """What `localnova bedrock cleanup STUDY|CONFIG [--yes] [--keep-training-output] [--region R]
    [--bucket B]` runs; returns the exit code: 1 while anything this tool made is still live
    (declined included), except what the user asked to keep, or while a kind could not be asked."""
    folder, scope = cleanup_target(study_dir)
    try:
        report = cleanup(
            folder,
            (lambda _summary: True) if yes else confirm_on_terminal,
            clients=clients,
            keep_training_output=keep_training_output,
            region=region,
            bucket=bucket,
            scope=scope,
        )
    except Exception as error:
        if not is_aws_error(error):
            raise
        raise UserError(f"{aws_error_line(error)}; nothing more was deleted; run `localnova bedrock cleanup {study_dir}` again") from None
    print(report.format())
    return 1 if report.left or report.unasked else 0
