"""Hosting a custom Nova model so the ft arms can answer through it.

Two ways, chosen by `bedrock.hosting`:
- `on_demand` (default): a custom model deployment (CreateCustomModelDeployment), billed per
  token at the base model's price, no hourly charge. Offered for Nova Micro/Lite/Pro models
  customized on or after 2025-07-16, in the regions of `availability.ON_DEMAND_DEPLOYMENT_REGIONS`.
- `provisioned`: provisioned throughput, as the original study did. It bills every started
  hour per model unit until deleted, so it is created only with allow_spend=True after the
  cost estimate was shown; otherwise a UserError, and nothing is created.
A choice the region or model does not offer is refused before anything is created.

The study hosts each model only while its ft arms run: `host_custom_model` just before them,
`release_hosting` right after (it deletes the deployment or throughput and waits until AWS no
longer lists it, so the hours billed run from creation to that deletion). A changed custom
model or unit count is a new token, so a new resource beside the old one in the state file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from localnova.aws.availability import check_hosting_offered
from localnova.aws.clients import AwsClients, call_with_backoff, error_code, wait_until
from localnova.aws.names import client_token, resource_name
from localnova.aws.state import HOSTING_TYPES, BedrockState, Resource
from localnova.bedrock.cleanup import CleanupReport, delete_resources
from localnova.config import ModelConfig, StudyConfig
from localnova.errors import UserError

log = logging.getLogger(__name__)

# "For custom models with no commitment, a quota of one model unit is available for each
# Provisioned Throughput. You can create up to two Provisioned Throughputs per account." (read 2026-11-26)
NO_COMMITMENT_SOURCE = "docs.aws.amazon.com/bedrock/latest/userguide/prov-throughput.html"


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


def host_custom_model(
    config: StudyConfig,
    model: ModelConfig,
    custom_model_arn: str,
    state: BedrockState,
    clients: AwsClients,
    allow_spend: bool = False,
    estimate_shown: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 30.0,
) -> str:
    """Deploy (or provision) the custom model, wait until it can answer, and return the ARN
    that the ft arms pass to converse as modelId. Reuses what the state file lists."""
    hosting = check_hosting(config, model, allow_spend, estimate_shown)
    assert config.bedrock is not None
    region = config.bedrock.region
    kind = "custom_model_deployment" if hosting == "on_demand" else "provisioned_throughput"
    # Hosting deleted after an earlier run's ft arms is not reused; a new one gets a new token
    # (AWS would answer the old token with the deleted resource).
    deleted_before = [r for r in state.all_of(kind) if r.details.get("model_arn") == custom_model_arn and not r.live]
    token = client_token(
        {
            "study": config.name,
            "model": model.name,
            "custom_model": custom_model_arn,
            "hosting": hosting,
            "units": config.bedrock.provisioned_model_units,
            "round": len(deleted_before),
        }
    )

    if hosting == "on_demand":
        name = resource_name(("bedrock", "CreateCustomModelDeployment", "modelDeploymentName"), token, config.name, model.name)
        resource = state.find("custom_model_deployment", client_token=token)
        if resource is None:
            try:
                arn = call_with_backoff(
                    clients.bedrock.create_custom_model_deployment,
                    modelDeploymentName=name,
                    modelArn=custom_model_arn,
                    clientRequestToken=token,
                    tags=[{"key": "localnova-study", "value": config.name}],
                )["customModelDeploymentArn"]
            except Exception as error:
                if error_code(error) == "ValidationException":
                    message = getattr(error, "response", {}).get("Error", {}).get("Message", error)
                    raise UserError(f"bedrock.hosting: Bedrock refused an on-demand deployment of {custom_model_arn}: {message}") from None
                raise
            resource = state.record(
                Resource(
                    "custom_model_deployment",
                    f"custom_model_deployment:{model.name}",
                    region,
                    id=name,
                    arn=arn,
                    client_token=token,
                    details={"model_arn": custom_model_arn},
                )
            )

        def status() -> str:
            return str(clients.bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=resource.arn)["status"])

        wait_until(status, {"Active"}, {"Failed"}, f"deployment {model.name}", poll_s=poll_s, sleep=sleep)
        return resource.arn

    name = resource_name(("bedrock", "CreateProvisionedModelThroughput", "provisionedModelName"), token, config.name, model.name)
    resource = state.find("provisioned_throughput", client_token=token)
    if resource is None:
        arn = call_with_backoff(
            clients.bedrock.create_provisioned_model_throughput,
            clientRequestToken=token,
            modelUnits=config.bedrock.provisioned_model_units,
            provisionedModelName=name,
            modelId=custom_model_arn,  # no commitmentDuration: hourly, deletable at any time
            tags=[{"key": "localnova-study", "value": config.name}],
        )["provisionedModelArn"]
        resource = state.record(
            Resource(
                "provisioned_throughput",
                f"provisioned_throughput:{model.name}",
                region,
                id=name,
                arn=arn,
                client_token=token,
                details={"model_arn": custom_model_arn, "model_units": config.bedrock.provisioned_model_units},
            )
        )

    def pt_status() -> str:
        return str(clients.bedrock.get_provisioned_model_throughput(provisionedModelId=resource.arn)["status"])

    wait_until(pt_status, {"InService"}, {"Failed"}, f"provisioned throughput {model.name}", poll_s=poll_s, sleep=sleep)
    return resource.arn


def release_hosting(
    state: BedrockState,
    hosted_arn: str,
    clients: AwsClients,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 15.0,
) -> CleanupReport:
    """Delete the deployment or throughput that answers at `hosted_arn` as soon as its ft arms
    are done, and wait until AWS no longer lists it; the state file keeps it, marked deleted,
    with the time."""
    hosting = [r for r in state.live() if r.type in HOSTING_TYPES and r.arn == hosted_arn]
    return delete_resources(state, hosting, clients, sleep, poll_s)


def release_all_hosting(
    state: BedrockState, clients: AwsClients, sleep: Callable[[float], None] = time.sleep, poll_s: float = 15.0
) -> CleanupReport:
    """Delete every live deployment and throughput of the study (a run that stops early)."""
    return delete_resources(state, [r for r in state.live() if r.type in HOSTING_TYPES], clients, sleep, poll_s)
