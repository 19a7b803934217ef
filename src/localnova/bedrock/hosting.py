"""Hosting a custom Nova model so the ft arms can answer through it, and nothing longer.

Two ways, chosen by `bedrock.hosting`:
- `on_demand` (default): a custom model deployment (CreateCustomModelDeployment), billed per
  token at the base model's price, no hourly charge. Offered for Nova Micro/Lite/Pro models
  customized on or after 2025-07-16, in the regions of `availability.ON_DEMAND_DEPLOYMENT_REGIONS`.
- `provisioned`: provisioned throughput, as the original study did. It bills every started
  hour per model unit until deleted, so it is created only with allow_spend=True after the
  cost estimate was shown; otherwise a UserError, and nothing is created.
A choice the region or model does not offer is refused before anything is created.

The hosting is written to the state file, with its name, token and price per hour, before its
create call, so it can be found and deleted whatever happens next: a lost answer, a failed
status, a wait that never ends, Ctrl-C. `release_hosting` deletes it (and, first, finds by
name any whose create answer was lost) and waits until AWS no longer lists it; a deletion
refused or not confirmed raises HostingLeft, one line naming the resource, its cost per hour
and the cleanup command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localnova.aws.availability import check_hosting_offered
from localnova.aws.clients import AwsClients, call_with_backoff, error_code, error_message, wait_until
from localnova.aws.names import client_token, resource_name
from localnova.aws.state import INTENDED, BedrockState, Resource
from localnova.bedrock.cleanup import CleanupReport, delete_resources
from localnova.bedrock.reconcile import create_once, resolve
from localnova.config import ModelConfig, StudyConfig
from localnova.costs import prices_for
from localnova.errors import UserError

log = logging.getLogger(__name__)

# "For custom models with no commitment, a quota of one model unit is available for each
# Provisioned Throughput. You can create up to two Provisioned Throughputs per account." (read 2026-11-26)
NO_COMMITMENT_SOURCE = "docs.aws.amazon.com/bedrock/latest/userguide/prov-throughput.html"
PT_NAME_LIMIT = ("bedrock", "CreateProvisionedModelThroughput", "provisionedModelName")
DEPLOYMENT_NAME_LIMIT = ("bedrock", "CreateCustomModelDeployment", "modelDeploymentName")
HOSTING_WAIT_S = 3 * 3600.0  # hosting not ready after this long is given up (and deleted)


class HostingLeft(UserError):
    """Hosting that bills is still live after the run tried to delete it."""


def cleanup_command(study_dir: Path) -> str:
    return f"`localnova bedrock cleanup {study_dir}`"


def check_hosting(config: StudyConfig, model: ModelConfig, allow_spend: bool = False, estimate_shown: bool = False) -> str:
    """The hosting choice for this model, checked; raises a UserError before anything exists."""
    if config.bedrock is None:
        raise UserError("bedrock: the Bedrock path needs a bedrock section")
    hosting = config.bedrock.hosting
    check_hosting_offered(hosting, model.customization_model or model.model, config.bedrock.region)
    if hosting == "provisioned" and config.bedrock.provisioned_model_units != 1:
        raise UserError(
            f"bedrock.provisioned_model_units: {config.bedrock.provisioned_model_units}; no-commitment provisioned throughput "
            f"for a custom model takes exactly 1 model unit ({NO_COMMITMENT_SOURCE})"
        )
    if hosting == "provisioned" and not (allow_spend and estimate_shown):
        why = "run with --allow-spend" if not allow_spend else "show the cost estimate first"
        raise UserError(
            f"bedrock.hosting: provisioned throughput bills {config.bedrock.provisioned_model_units} model unit(s) "
            "by the hour until deleted; "
            f"{why} (or use hosting: on_demand)"
        )
    return hosting


def hourly_usd(config: StudyConfig, model: ModelConfig) -> float:
    """What this model's hosting bills per hour while it lives (0 for on-demand)."""
    assert config.bedrock is not None
    if config.bedrock.hosting != "provisioned":
        return 0.0
    rate = prices_for(config).provisioned(model.customization_model or model.model)
    return float(rate["no_commitment"]) * config.bedrock.provisioned_model_units if rate else 0.0


def hosting_request(config: StudyConfig, model: ModelConfig, custom_model_arn: str, token: str) -> tuple[str, str, dict[str, Any]]:
    """(resource type, name, create request) of one model's hosting."""
    assert config.bedrock is not None
    tags = [{"key": "localnova-study", "value": config.name}]
    if config.bedrock.hosting == "on_demand":
        name = resource_name(DEPLOYMENT_NAME_LIMIT, token, config.name, model.name)
        request = {"modelDeploymentName": name, "modelArn": custom_model_arn, "clientRequestToken": token, "tags": tags}
        return "custom_model_deployment", name, request
    name = resource_name(PT_NAME_LIMIT, token, config.name, model.name)
    request = {
        "clientRequestToken": token,
        "modelUnits": config.bedrock.provisioned_model_units,
        "provisionedModelName": name,
        "modelId": custom_model_arn,  # no commitmentDuration: hourly, deletable at any time
        "tags": tags,
    }
    return "provisioned_throughput", name, request


def host_custom_model(
    config: StudyConfig,
    model: ModelConfig,
    custom_model_arn: str,
    state: BedrockState,
    clients: AwsClients,
    allow_spend: bool = False,
    estimate_shown: bool = False,
    sleep: Callable[[float], None] | None = None,
    poll_s: float = 30.0,
) -> str:
    """Deploy (or provision) the custom model, wait until it can answer, and return the ARN
    that the ft arms pass to converse as modelId. Reuses what the state file lists. On any
    failure the hosting stays in the state file for the caller to release."""
    hosting = check_hosting(config, model, allow_spend, estimate_shown)
    assert config.bedrock is not None
    kind = "custom_model_deployment" if hosting == "on_demand" else "provisioned_throughput"
    # Hosting deleted after an earlier run's ft arms is not reused; a new one gets a new token
    # (AWS would answer the old token with the deleted resource).
    rounds = [r for r in state.all_of(kind) if r.details.get("model_arn") == custom_model_arn and not r.live]
    token = client_token(
        {
            "study": config.name,
            "model": model.name,
            "custom_model": custom_model_arn,
            "hosting": hosting,
            "units": config.bedrock.provisioned_model_units,
            "round": len(rounds),
        }
    )
    kind, name, request = hosting_request(config, model, custom_model_arn, token)
    resource = state.find(kind, client_token=token)
    if resource is None or resource.status == INTENDED:
        details = {"model_arn": custom_model_arn, "model_units": config.bedrock.provisioned_model_units}
        earlier = resource
        resource = resource or state.intend(
            Resource(
                kind,
                f"{kind}:{model.name}",
                config.bedrock.region,
                name=name,
                client_token=token,
                hourly_usd=hourly_usd(config, model),
                details=details,
            )
        )
        create = (
            clients.bedrock.create_custom_model_deployment
            if kind == "custom_model_deployment"
            else clients.bedrock.create_provisioned_model_throughput
        )
        try:
            # an entry intended by an earlier run is looked up by name first; a name already
            # taken (ValidationException) is looked up too and adopted when it is this one
            answer = create_once(state, resource, clients, lambda: call_with_backoff(create, **request), fresh=earlier is None)
        except Exception as error:
            if error_code(error) == "ValidationException":
                raise UserError(f"bedrock.hosting: Bedrock refused hosting {custom_model_arn}: {error_message(error)}") from None
            raise
        if answer is not None:
            arn = answer.get("customModelDeploymentArn") or answer["provisionedModelArn"]
            resource = state.confirm(resource, id=name, arn=arn)

    if kind == "custom_model_deployment":
        ready, what = "Active", f"deployment {name} of {model.name}"

        def status() -> str:
            return str(clients.bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=resource.arn)["status"])

    else:
        ready, what = "InService", f"provisioned throughput {name} of {model.name}"

        def status() -> str:
            return str(clients.bedrock.get_provisioned_model_throughput(provisionedModelId=resource.arn)["status"])

    try:
        wait_until(status, {ready}, {"Failed"}, what, poll_s=poll_s, timeout_s=HOSTING_WAIT_S, sleep=sleep)
    except UserError as error:
        raise UserError(f"bedrock.hosting: {error}; run the same command again to host it anew") from None
    return resource.arn


def release_hosting(
    state: BedrockState,
    clients: AwsClients,
    model_arn: str | None = None,
    sleep: Callable[[float], None] | None = None,
    poll_s: float = 15.0,
) -> CleanupReport:
    """Delete the live deployments and throughputs (of one custom model, or all), those whose
    create answer was lost included (found by name first), and wait until AWS no longer lists
    them; raises HostingLeft when any is still there."""
    pending = state.live_hosting(model_arn)
    if not pending:
        return CleanupReport()
    unresolved = resolve(state, [r for r in pending if r.status == INTENDED], clients)
    report = delete_resources(state, [r for r in state.live_hosting(model_arn) if r.status != INTENDED], clients, sleep, poll_s)
    report.left += [f"{r.label()}: its create answer was lost and it could not be looked up ({why})" for r, why in unresolved]
    if report.left:
        raise HostingLeft(hosting_left_line(state, report.left))
    return report


def hosting_left_line(state: BedrockState, why: list[str]) -> str:
    """One line: what is still live (with its cost per hour), why, and the cleanup command."""
    return f"still live and billing: {'; '.join(why)}; delete it with {cleanup_command(state.study_dir)}"
