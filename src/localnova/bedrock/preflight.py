"""`localnova bedrock preflight CONFIG`: free checks of everything a paid run relies on.

Run alone, by `localnova bedrock estimate` and by `localnova run` on a Bedrock config before
the estimate, so a wrong model id, a model the account may not use or a missing permission
stops the study before the first billable call, not after the Knowledge Base, the training and
the answers were paid for. Every call here is free: reads of identities, models and whether
the account may use each (GetFoundationModelAvailability), profiles, roles, the bucket and
service quotas, and IAM's policy simulator.

Each failure is one line naming the config key to fix. What cannot be checked (an API that
the credentials may not call, or that a stand-in such as moto does not implement) is listed
as not checked, with the reason and its key, never passed off as checked, and it blocks a paid
run like a failure unless the user names that key to skip (`--skip-check KEY`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from localnova.aws.availability import check_customization_offered, check_hosting_offered
from localnova.aws.clients import AwsClients, error_code, require_credentials
from localnova.config import StudyConfig
from localnova.errors import UserError

# Prefixes of the system-defined cross-region inference profiles (us.amazon.nova-micro-v1:0).
PROFILE_PATTERN = re.compile(r"^(us|eu|apac|jp|au|ca|us-gov|global)\.")
HOSTED_ARN_PATTERN = re.compile(r":(custom-model-deployment|provisioned-model|inference-profile|application-inference-profile)/")
REFUSED_CODES = {"ResourceNotFoundException", "ValidationException", "NoSuchEntity", "NoSuchBucket", "404", "NotFound"}
DENIED_CODES = {"AccessDeniedException", "AccessDenied", "403", "UnauthorizedOperation"}
# Service Quotas names (bedrock) of what the plan needs, and how many of each it needs.
JOB_QUOTA = "concurrent model customization jobs"
PT_QUOTA = "no-commitment provisioned throughputs across custom models"


@dataclass
class PreflightReport:
    failures: list[str] = field(default_factory=list)  # "config.key: what is wrong"
    unchecked: list[tuple[str, str]] = field(default_factory=list)  # (config key, "what: why it could not be checked")
    passed: list[str] = field(default_factory=list)
    skipped: tuple[str, ...] = ()  # keys the user named to skip

    def blocking(self) -> list[str]:
        """What stops a paid run: every failure, and every check not made whose key the user
        did not name to skip."""
        return self.failures + [
            f"{key}: not checked: {text} (name it to skip: --skip-check {key})" for key, text in self.unchecked if key not in self.skipped
        ]

    def format(self) -> str:
        lines = [f"ok: {item}" for item in self.passed]
        lines += [f"not checked, skipped as asked: {key}: {text}" for key, text in self.unchecked if key in self.skipped]
        lines += self.blocking()
        blocking = self.blocking()
        verdict = f"{len(blocking)} problem(s) block a paid run" if blocking else "no problem found"
        lines.append(f"preflight: {verdict}; {len(self.passed)} checked, {len(self.unchecked)} not checked")
        return "\n".join(lines)


def _attempt(report: PreflightReport, what: str, key: str, call: Callable[[], Any]) -> Any:
    """Run one free call; an AWS refusal is a failure of `key`, anything AWS-like that is not
    an answer about the resource (denied, not implemented, unreachable) is 'not checked'."""
    try:
        return call()
    except Exception as error:
        code = error_code(error)
        if code in REFUSED_CODES:
            report.failures.append(f"{key}: {what}: {code}")
        elif code in DENIED_CODES:
            report.unchecked.append((key, f"{what}: {code} (the credentials may not read it)"))
        elif code or type(error).__module__.startswith(("botocore", "urllib3")):
            report.unchecked.append((key, f"{what}: {code or type(error).__name__}"))
        else:
            raise  # a bug, not an answer
        return None


def _model_ids(config: StudyConfig) -> list[tuple[str, str, str]]:
    """(config key, model id, use) of every Bedrock model the study calls."""
    ids = []
    for index, model in enumerate(config.models):
        if model.backend == "bedrock":
            ids.append((f"models[{index}].model", model.model, "answers"))
            if config.fine_tunes and model.customization_model:
                ids.append((f"models[{index}].customization_model", model.customization_model, "FINE_TUNING"))
    for index, judge in enumerate(config.judges):
        if judge.model is not None and judge.model.backend == "bedrock":
            ids.append((f"judges[{index}].model.model", judge.model.model, "answers"))
    kb = config.bedrock.knowledge_base if config.bedrock else {}
    if config.retrieves and not (config.retrieval.knowledge_base_id or kb.get("id")):
        embed = str(kb.get("embedding_model", "amazon.titan-embed-text-v2:0")).rsplit("/", 1)[-1]
        ids.append(("bedrock.knowledge_base.embedding_model", embed, "embeddings"))
    return ids


def _check_models(config: StudyConfig, clients: AwsClients, report: PreflightReport) -> None:
    region = config.bedrock.region if config.bedrock else "us-east-1"
    profiles: set[str] | None = None
    profiles_asked = False  # asked once: a listing that could not be made is said once, not per model
    for key, model_id, use in _model_ids(config):
        if model_id.startswith("arn:") and HOSTED_ARN_PATTERN.search(model_id):
            report.unchecked.append((key, f"{model_id} is a hosted ARN; its route is the deployment or throughput itself"))
            continue
        _check_access(key, model_id, region, clients, report)
        if PROFILE_PATTERN.match(model_id):
            if not profiles_asked:
                profiles, profiles_asked = _list_profiles(clients, report), True
            if profiles is None:
                continue
            if model_id in profiles:
                report.passed.append(f"{key}: {model_id} is an inference profile in {region}")
            else:
                report.failures.append(f"{key}: {model_id} is not an inference profile in {region}")
            continue
        details = _attempt(
            report,
            f"model {model_id} in {region}",
            key,
            lambda model_id=model_id: clients.bedrock.get_foundation_model(modelIdentifier=model_id)["modelDetails"],
        )
        if details is None:
            continue
        inference = details.get("inferenceTypesSupported", [])
        if use == "FINE_TUNING":
            if "FINE_TUNING" not in details.get("customizationsSupported", []):
                report.failures.append(f"{key}: {model_id} offers no fine-tuning in {region}")
            else:
                report.passed.append(f"{key}: {model_id} can be fine-tuned in {region}")
        elif "ON_DEMAND" not in inference:
            hint = f"; call it through an inference profile such as us.{model_id}" if "INFERENCE_PROFILE" in inference else ""
            report.failures.append(f"{key}: {model_id} cannot be called on demand in {region}{hint}")
        else:
            report.passed.append(f"{key}: {model_id} is called on demand in {region}")


def _check_access(key: str, model_id: str, region: str, clients: AwsClients, report: PreflightReport) -> None:
    """Whether this account may call the model (GetFoundationModelAvailability, free): access
    granted, entitled, offered in the region, its agreement accepted."""
    bare = PROFILE_PATTERN.sub("", model_id)
    answer = _attempt(
        report,
        f"access to {bare} in {region} (GetFoundationModelAvailability)",
        key,
        lambda: clients.bedrock.get_foundation_model_availability(modelId=bare),
    )
    if answer is None:
        return
    wanted = {
        "authorizationStatus": "AUTHORIZED",
        "entitlementAvailability": "AVAILABLE",
        "regionAvailability": "AVAILABLE",
    }
    refused = [f"{name} {answer.get(name)}" for name, value in wanted.items() if answer.get(name) != value]
    agreement = (answer.get("agreementAvailability") or {}).get("status")
    if agreement != "AVAILABLE":
        refused.append(f"agreement {agreement}")
    if refused:
        report.failures.append(
            f"{key}: this account may not use {bare} in {region} ({', '.join(refused)}); request access in the Bedrock console"
        )
    else:
        report.passed.append(f"{key}: this account may use {bare} in {region}")


def _list_profiles(clients: AwsClients, report: PreflightReport) -> set[str] | None:
    def listed() -> set[str]:
        ids = set()
        for page in clients.bedrock.get_paginator("list_inference_profiles").paginate(typeEquals="SYSTEM_DEFINED"):
            ids |= {profile["inferenceProfileId"] for profile in page.get("inferenceProfileSummaries", [])}
        return ids

    return _attempt(report, "inference profiles (ListInferenceProfiles)", "inference-profiles", listed)


def _role_arn_of(caller_arn: str) -> str:
    """The IAM role behind an assumed-role session ARN (the policy simulator wants the role)."""
    match = re.match(r"arn:(aws[\w-]*):sts::(\d{12}):assumed-role/([^/]+)/", caller_arn)
    return f"arn:{match.group(1)}:iam::{match.group(2)}:role/{match.group(3)}" if match else caller_arn


def _simulate(clients: AwsClients, report: PreflightReport, caller: str, action: str, resource: str, key: str) -> None:
    result = _attempt(
        report,
        f"{action} on {resource} (IAM policy simulator)",
        key,
        lambda: clients.get("iam").simulate_principal_policy(PolicySourceArn=caller, ActionNames=[action], ResourceArns=[resource]),
    )
    if result is None:
        return
    decisions = [row.get("EvalDecision") for row in result.get("EvaluationResults", [])]
    if decisions and all(decision == "allowed" for decision in decisions):
        report.passed.append(f"{key}: {action} allowed on {resource}")
    else:
        report.failures.append(f"{key}: your credentials may not {action} on {resource} ({', '.join(map(str, decisions)) or 'no answer'})")


def _check_role_and_bucket(config: StudyConfig, clients: AwsClients, report: PreflightReport, caller: str) -> None:
    bedrock = config.bedrock
    assert bedrock is not None
    if bedrock.role_arn:
        role_name = bedrock.role_arn.rsplit("/", 1)[-1]
        if _attempt(report, f"role {bedrock.role_arn}", "bedrock.role_arn", lambda: clients.get("iam").get_role(RoleName=role_name)):
            report.passed.append(f"bedrock.role_arn: {role_name} exists")
        _simulate(clients, report, caller, "iam:PassRole", bedrock.role_arn, "bedrock.role_arn")
    elif config.fine_tunes or config.retrieves:
        report.failures.append("bedrock.role_arn: customization jobs and a new Knowledge Base need a service role ARN")
    if not bedrock.s3_bucket:
        if config.fine_tunes or config.retrieves:
            report.failures.append("bedrock.s3_bucket: customization jobs and a new Knowledge Base need a bucket")
        return
    bucket = bedrock.s3_bucket
    if _attempt(report, f"bucket {bucket}", "bedrock.s3_bucket", lambda: clients.s3.head_bucket(Bucket=bucket)) is None:
        return
    location = _attempt(report, f"region of bucket {bucket}", "bedrock.s3_bucket", lambda: clients.s3.get_bucket_location(Bucket=bucket))
    if location is not None:
        bucket_region = location.get("LocationConstraint") or "us-east-1"
        if bucket_region != bedrock.region:
            report.failures.append(f"bedrock.s3_bucket: {bucket} is in {bucket_region}, the study runs in {bedrock.region}")
        else:
            report.passed.append(f"bedrock.s3_bucket: {bucket} is in {bedrock.region}")
    prefix = bedrock.s3_prefix.strip("/")
    _simulate(clients, report, caller, "s3:PutObject", f"arn:aws:s3:::{bucket}/{prefix}/*", "bedrock.s3_bucket")


def _check_offers(config: StudyConfig, report: PreflightReport) -> None:
    """Customization and the hosting choice, from the documented tables (availability.py)."""
    bedrock = config.bedrock
    assert bedrock is not None
    for index, model in enumerate(config.models):
        if not (config.fine_tunes and model.backend == "bedrock"):
            continue
        base = model.customization_model or model.model
        where = f"models[{index}].customization_model"
        for key, what in (("customization", "customization"), ("bedrock.hosting", bedrock.hosting)):
            try:
                if what == "customization":
                    check_customization_offered(base, bedrock.region, where)
                else:
                    check_hosting_offered(what, base, bedrock.region)
                report.passed.append(f"{key}: offered for {base} in {bedrock.region}")
            except UserError as error:
                report.failures.append(str(error))


def _check_quotas(config: StudyConfig, clients: AwsClients, report: PreflightReport) -> None:
    bedrock = config.bedrock
    assert bedrock is not None
    ft_models = sum(1 for model in config.models if model.backend == "bedrock") if config.fine_tunes else 0
    if not ft_models:
        return

    def quotas() -> dict[str, float]:
        found = {}
        for page in clients.get("service-quotas").get_paginator("list_service_quotas").paginate(ServiceCode="bedrock"):
            found |= {quota["QuotaName"].lower(): float(quota.get("Value", 0)) for quota in page.get("Quotas", [])}
        return found

    values = _attempt(report, "Bedrock service quotas (ListServiceQuotas)", "quotas", quotas)
    if values is None:
        return
    # both jobs run before any hosting, so they run at the same time; hosting is one model at a time
    needs = [(JOB_QUOTA, ft_models, "models")]
    if bedrock.hosting == "provisioned":
        needs.append((PT_QUOTA, bedrock.provisioned_model_units, "bedrock.provisioned_model_units"))
    for name, needed, key in needs:
        value = next((v for quota, v in values.items() if name in quota), None)
        if value is None:
            report.unchecked.append(("quotas", f"quota '{name}': not among the quotas the account reports"))
        elif value < needed:
            report.failures.append(f"{key}: the plan needs {needed} under the quota '{name}', the account has {value:g}")
        else:
            report.passed.append(f"quota '{name}': {value:g} (needs {needed})")


def preflight(config: StudyConfig, clients: AwsClients | None = None, skip_checks: tuple[str, ...] | list[str] = ()) -> PreflightReport:
    """Every free check of a Bedrock study; raises a UserError (one line) when there are no
    credentials at all, since nothing else can be checked then. `skip_checks` names the keys
    whose checks, if they cannot be made, the user accepts not to have."""
    if config.bedrock is None:
        raise UserError("bedrock: a Bedrock study needs a bedrock section (region, role_arn, s3_bucket, ...)")
    region = config.bedrock.region
    if clients is None:
        require_credentials(region)
        clients = AwsClients(region, check_credentials=False)
    report = PreflightReport(skipped=tuple(skip_checks))
    identity = _attempt(report, "credentials (STS GetCallerIdentity)", "credentials", lambda: clients.get("sts").get_caller_identity())
    if identity is None:
        if not report.failures:
            report.failures.append(f"credentials: could not be confirmed in {region}: {report.unchecked.pop()[1]}")
        return report
    report.passed.append(f"credentials: account {identity.get('Account')} in {region}")
    caller = _role_arn_of(str(identity.get("Arn", "")))
    _check_models(config, clients, report)
    _check_role_and_bucket(config, clients, report, caller)
    _check_offers(config, report)
    _check_quotas(config, clients, report)
    return report


def preflight_command(config: StudyConfig, skip_checks: tuple[str, ...] | list[str] = ()) -> int:
    """What `localnova bedrock preflight CONFIG` runs: the report, exit code 2 on anything
    that would block a paid run."""
    report = preflight(config, skip_checks=skip_checks)
    print(report.format())
    return 2 if report.blocking() else 0


def require_preflight(config: StudyConfig, clients: AwsClients | None, skip_checks: tuple[str, ...] | list[str] = ()) -> PreflightReport:
    """The preflight of a paid run (or estimate): a UserError listing what blocks it."""
    report = preflight(config, clients, skip_checks)
    blocking = report.blocking()
    if blocking:
        raise UserError(f"preflight found {len(blocking)} problem(s) (nothing was created):\n" + "\n".join(blocking))
    return report
